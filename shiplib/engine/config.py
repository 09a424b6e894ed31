"""`RunConfig` (what a user asks for) and its resolution into a complete, recorded run description."""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..data.tasks import get_task
from ..errors import ConfigError  # re-exported here for older imports
from ..data.transforms import DEFAULT_PRESET
from ..methods import get_method, method_options
from ..utils.checks import choice, positive_int
from .compiled import check_compile_backend
from .defaults import resolve_defaults
from .precision import DEFAULT_PRECISION, check_precision_name
from .resources import warn_threads
from .resolved import ModelChoice, ResolvedRun, Runtime, Training
from .results import PROTOCOLS, check_tag
from .schedule import SCHEDULE_MODES

#: Train and evaluation split of each protocol.
PROTOCOL_SPLITS = {"final": ("train800val200", "test"), "tune": ("train800", "val200")}
#: Short names accepted by `--set` (and by `RunConfig.with_overrides`); K is the prompt length, named
#: `prompt_length` in SHIP and `num_prompts` in VPT/SPT/SEP.
KEY_ALIASES = {"K": ("prompt_length", "num_prompts"), "alpha": ("threshold",), "wd": ("weight_decay",)}
_ALIAS_TEXT = ", ".join(f"{a}={'/'.join(b)}" for a, b in KEY_ALIASES.items())


@dataclass
class RunConfig:
    """One training run. `None` means "the per-task default" (see `shiplib.engine.defaults`)."""

    task: str
    method: str
    seed: int = 1  # the official runs use seed 1
    protocol: str = "final"  # final: train800val200 -> test; tune: train800 -> val200
    # --- optimisation (None: per-task default) ---
    epochs: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    warmup_epochs: int | None = None
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    lr_schedule: str = "epoch"  # "epoch" (official: once per epoch), "step" or "scaled" (the official shape)
    batch_size: int = 64  # drop_last=True
    eval_batch_size: int = 128
    eval_every: int = 10  # evaluate at epochs 0, N, 2N, ... and the last one; 0: only the last
    precision: str = DEFAULT_PRECISION  # fp32 | tf32 | bf16 | fp16 (shiplib.engine.precision)
    # --- model and data ---
    backbone: str | None = None  # None: the benchmark's default backbone
    backbone_arch: dict | str | None = None  # what a .safetensors/.pth file does not say (e.g. {"num_heads": 3})
    pretrained: bool = True
    img_size: int | None = None
    preset: str = DEFAULT_PRESET
    options: dict = field(default_factory=dict)  # method options (shiplib.method_options(method))
    tag: str | None = None  # names a variant: results go to <method>+<tag>
    # --- where and how to run (not part of the run's identity) ---
    data_root: str | None = None
    results_dir: str = "results"
    runs_dir: str = "runs"
    device: str = "auto"
    threads: int | None = None
    num_workers: int = 0
    cache_images: bool = True  # decode each split once (in memory, or memory-mapped under runs_dir/_cache/images)
    compile: str | None = None  # a torch.compile backend ("inductor"); None: eager (compiled = eager within 1e-5)
    progress: bool = True
    resume: bool = True

    RUNTIME_FIELDS: ClassVar[tuple[str, ...]] = ("data_root", "results_dir", "runs_dir", "device", "threads",
                                                 "num_workers", "cache_images", "compile", "progress", "resume")
    FIXED_FIELDS: ClassVar[tuple[str, ...]] = ("task", "method", "seed", "options")
    #: Settings in a run's identity only when set, so that the identities of earlier results stay what they were.
    IDENTITY_WHEN_SET: ClassVar[tuple[str, ...]] = ("backbone_arch",)

    @classmethod
    def settable_fields(cls) -> list[str]:
        """Fields a `--set key=value` may change (task/method/seed have their own flags)."""
        return [f.name for f in dataclasses.fields(cls) if f.name not in cls.FIXED_FIELDS]

    def with_overrides(self, overrides: Any) -> "RunConfig":
        """A copy with `key=value` overrides applied: run fields by name, anything else as a method option.

        `overrides`: a dict, a JSON object string or `key=value` text (see `parse_overrides`). Unknown keys fail
        listing the valid ones.
        """
        overrides = parse_overrides(overrides)
        option_names = list(_lookup("method", method_options, self.method))
        run_fields = {f.name: f for f in dataclasses.fields(self)}
        changes, options = {}, dict(self.options)
        for raw_key, value in overrides.items():
            key = _setting_key(raw_key, option_names, run_fields)
            if key in self.settable_fields():
                changes[key] = _coerce_field(key, value, run_fields[key])
            elif key in option_names:
                options[key] = value
            else:
                raise _unknown_setting(raw_key, self.method, option_names, self.settable_fields())
        return dataclasses.replace(self, **changes, options=options)


def method_option_overrides(method: str, overrides: Any) -> dict[str, Any]:
    """Method options given in any form `parse_overrides` accepts (a dict, `key=value` text, `--set` items),
    with the aliases of `--set` (e.g. K); a key that is not an option of `method` fails listing the valid ones,
    as in `RunConfig.with_overrides`. For commands that take method options but no run settings (`bench`)."""
    option_names = list(_lookup("method", method_options, method))
    out = {}
    for raw_key, value in parse_overrides(overrides).items():
        key = _setting_key(raw_key, option_names)
        if key not in option_names:
            raise _unknown_setting(raw_key, method, option_names)
        out[key] = value
    return out


def _setting_key(raw_key: str, option_names, run_fields=()) -> str:
    """The name a `--set` key stands for: itself, or the first target of its alias that exists."""
    targets = KEY_ALIASES.get(raw_key, (raw_key,))
    return next((t for t in targets if t in option_names or t in run_fields), targets[0])


def _unknown_setting(raw_key: str, method: str, option_names, run_fields=()) -> ConfigError:
    settings = f"Valid run settings: {', '.join(run_fields)}. " if run_fields else ""
    kind = "setting" if run_fields else "option"
    return ConfigError(f"unknown {kind} {raw_key!r} for method {method!r}. {settings}Valid {method} options: "
                       f"{', '.join(option_names)}. Aliases: {_ALIAS_TEXT}.")


def _lookup(kind: str, fn, name: str):
    """get_task/get_method with their KeyError (which lists the valid names) turned into a ConfigError."""
    try:
        return fn(name)
    except KeyError as e:
        raise ConfigError(e.args[0] if e.args else f"unknown {kind} {name!r}") from None


def _coerce_field(key: str, value: Any, f: dataclasses.Field) -> Any:
    """Check a run field's type ('int | None' etc.); ints are accepted where floats are expected."""
    if value is None:
        if "None" not in str(f.type):
            raise ConfigError(f"{key} cannot be None")
        return None
    kinds = str(f.type).replace(" ", "").split("|")
    if "dict" in kinds and isinstance(value, dict):
        return value
    if "bool" in kinds:
        if isinstance(value, bool):
            return value
    elif "int" in kinds and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif "float" in kinds and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif "str" in kinds and isinstance(value, str):
        return value
    raise ConfigError(f"{key} must be {' or '.join(k for k in kinds if k != 'None')}, got {value!r}")


def parse_value(text: str) -> Any:
    """A `--set` value: none/null, true/false, int, float, a JSON list/dict, or else the string itself."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if text.strip()[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"cannot parse {text!r} as JSON: {e}") from None
    return text


_OVERRIDE_FORMS = ("a dict, a JSON object such as '{\"lr\": 0.005, \"K\": 20}', or key=value pairs separated by "
                   "commas or newlines such as 'lr=0.005, K=20'")


_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _split_pairs(text: str) -> list[str]:
    """'lr=1e-3, levels=[0,4,8]' -> ['lr=1e-3', 'levels=[0,4,8]']: split at newlines and at commas outside brackets
    and quotes."""
    items, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif depth <= 0 and ch in ",\n;":
            items.append("".join(current))
            current = []
            continue
        current.append(ch)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def parse_overrides(overrides: Any) -> dict[str, Any]:
    """Run settings and method options given as a dict, a JSON object string, `key=value` text (pairs separated by
    commas or newlines) or a list of `key=value` items (`--set`, one pair each).

    `["lr=1e-3", "K=50"]`, `"lr=1e-3, K=50"` and `'{"lr": 1e-3, "K": 50}'` all give {"lr": 0.001, "K": 50}.
    Malformed input fails with a ConfigError that shows it and the accepted forms.
    """
    if overrides is None:
        return {}
    if isinstance(overrides, dict):
        bad = [k for k in overrides if not isinstance(k, str) or not k.strip()]
        if bad:
            raise ConfigError(f"override keys must be setting names (non-empty strings), got {bad[0]!r}")
        return dict(overrides)
    if isinstance(overrides, str):
        text = overrides.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise ConfigError(f"overrides {overrides!r} is not valid JSON ({e.msg} at character {e.pos}); "
                                  f"give {_OVERRIDE_FORMS}") from None
            return parse_overrides(value)
        if text.startswith("["):
            raise ConfigError(f"overrides {overrides!r} is a list; give {_OVERRIDE_FORMS}")
        items, where = _split_pairs(text), "overrides"
    elif isinstance(overrides, (list, tuple)):
        items, where = list(overrides), "--set"
    else:
        raise ConfigError(f"overrides must be {_OVERRIDE_FORMS}; got a {type(overrides).__name__}: {overrides!r}")
    out = {}
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{where} expects key=value text, got {item!r}")
        key, sep, value = item.partition("=")
        if not sep or not _SETTING_NAME.match(key.strip()):
            hint = "" if where == "--set" else f"; give {_OVERRIDE_FORMS}"
            raise ConfigError(f"{where} expects key=value with a setting name as key, got {item!r}{hint}")
        out[key.strip()] = parse_value(value)
    return out


def _check_positive_int(name: str, value, allow_zero: bool = False) -> None:
    positive_int(name, value, allow_zero=allow_zero)


#: Devices a run accepts (whether a GPU is present is checked when the run starts, on the machine that runs it).
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def check_device_name(device: Any) -> None:
    """A device name a run or a benchmark accepts (whether the machine has it is checked where it starts)."""
    if not isinstance(device, str) or not _DEVICE.match(device.strip()):
        raise ConfigError(f"device {device!r} is not supported; valid: cpu, cuda, cuda:N, auto "
                          "(auto: CUDA when present, else CPU), e.g. --device cpu")


def _validate_runtime(cfg: "RunConfig") -> None:
    """Runtime settings (not part of a run's identity) that would otherwise fail only once work has started."""
    check_device_name(cfg.device)
    if cfg.threads is not None:
        _check_positive_int("threads", cfg.threads)
        warn_threads(cfg.threads)
    _check_positive_int("num_workers (--workers)", cfg.num_workers, allow_zero=True)
    check_compile_backend(cfg.compile)


def _fit_warmup(run: dict, defaults: dict, sources: dict) -> None:
    """A schedule that can reach its lr: a default warm-up as long as a shorter run is scaled down with the run
    (the default's warm-up fraction), one set by the user is refused, and so is a floor above the lr."""
    epochs, warmup = run["epochs"], run["warmup_epochs"]
    for name in ("min_lr", "warmup_lr"):
        if run[name] > run["lr"]:
            raise ConfigError(f"{name}={run[name]:g} is above lr={run['lr']:g}, so the rate would climb instead of "
                              f"decaying; set {name} below lr (e.g. {name}={min(run[name], run['lr'] / 10):g})")
    if warmup < epochs:
        return
    if sources.get("warmup_epochs") == "user":
        raise ConfigError(f"warmup_epochs={warmup} is not shorter than epochs={epochs}: the lr would never leave the "
                          f"warm-up; set warmup_epochs below {epochs} (e.g. warmup_epochs={epochs // 5})")
    scaled = int(epochs * defaults.get("warmup_epochs", warmup) / max(1, defaults.get("epochs", epochs)))
    run["warmup_epochs"] = min(scaled, epochs - 1)
    sources["warmup_epochs"] = (f"scaled to {run['warmup_epochs']} for epochs={epochs} (default: "
                                f"{warmup} of {defaults.get('epochs')}, from {sources.get('warmup_epochs')})")


def eval_epochs(epochs: int, eval_every: int) -> list[int]:
    """Epochs after which the model is evaluated: 0, N, 2N, … and always the last (official: N=10)."""
    marks = set(range(0, epochs, eval_every)) if eval_every > 0 else set()
    return sorted(marks | {epochs - 1})


def resolve_config(cfg: RunConfig) -> ResolvedRun:
    """Fill every default and check every run setting. The method's option values are checked by
    `validate.validate_before_work`, before any work; `run.sources` says where each value came from and
    `run.overrides` what the user set."""
    spec = _lookup("task", get_task, cfg.task)
    _lookup("method", get_method, cfg.method)  # unknown method: fails with the list of valid ones
    choice("protocol", cfg.protocol, PROTOCOLS)
    choice("lr_schedule", cfg.lr_schedule, SCHEDULE_MODES)
    check_tag(cfg.tag)
    check_precision_name(cfg.precision)
    _validate_runtime(cfg)
    _check_positive_int("seed", cfg.seed, allow_zero=True)
    option_defaults = method_options(cfg.method)
    get_method(cfg.method).config_class.check_option_names(cfg.method, cfg.options, error=ConfigError)
    defaults, sources = resolve_defaults(spec.benchmark, spec.name, cfg.method, option_defaults)

    run, overrides = {}, {}
    base = RunConfig(task=cfg.task, method=cfg.method)
    for f in dataclasses.fields(RunConfig):
        if f.name in RunConfig.FIXED_FIELDS or f.name in RunConfig.RUNTIME_FIELDS:
            continue
        value = getattr(cfg, f.name)
        if value is None and f.name in defaults:
            value = defaults[f.name]
        elif value != getattr(base, f.name):
            overrides[f.name] = value
            sources[f.name] = "user"
        else:
            sources.setdefault(f.name, "shiplib.engine.config.RunConfig default")
        run[f.name] = value
    options = dict(option_defaults)
    for key in option_defaults:
        sources.setdefault(key, f"{cfg.method} method default")
        if key in defaults:
            options[key] = defaults[key]
        if key in cfg.options:
            options[key] = cfg.options[key]
            overrides[key] = cfg.options[key]
            sources[key] = "user"

    for name in ("epochs", "batch_size", "eval_batch_size", "img_size"):
        _check_positive_int(name, run[name])
    for name in ("warmup_epochs", "eval_every"):
        _check_positive_int(name, run[name], allow_zero=True)
    for name in ("lr", "weight_decay", "warmup_lr", "min_lr"):
        v = run[name]
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (name == "lr" and v == 0):
            raise ConfigError(f"{name} must be a finite {'positive' if name == 'lr' else 'non-negative'} number, "
                              f"got {v!r}")
    _fit_warmup(run, defaults, sources)
    train_split, eval_split = PROTOCOL_SPLITS[cfg.protocol]
    training = Training(**{f.name: run[f.name] for f in dataclasses.fields(Training) if f.name != "eval_epochs"},
                        eval_epochs=tuple(eval_epochs(run["epochs"], run["eval_every"])))
    model = ModelChoice(**{f.name: run[f.name] for f in dataclasses.fields(ModelChoice)})
    runtime = {name: getattr(cfg, name) for name in RunConfig.RUNTIME_FIELDS}
    return ResolvedRun(task=spec, method=cfg.method, seed=cfg.seed, protocol=cfg.protocol, tag=run["tag"],
                       train_split=train_split, eval_split=eval_split, training=training, model=model,
                       options=options, runtime=Runtime(**runtime), sources=sources, overrides=overrides)


def as_resolved(run: RunConfig | ResolvedRun) -> ResolvedRun:
    """A ResolvedRun as it is, a RunConfig resolved (each run is resolved once, wherever it starts)."""
    return run if isinstance(run, ResolvedRun) else resolve_config(run)
