"""`RunConfig` (what a user asks for) and its resolution into a complete, recorded run description."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..data.tasks import get_task
from .defaults import resolve_defaults
from .results import PROTOCOLS, check_tag
from .schedule import SCHEDULE_MODES

#: Train and evaluation split of each protocol.
PROTOCOL_SPLITS = {"final": ("train800val200", "test"), "tune": ("train800", "val200")}
#: Short names accepted by `--set` (and by `RunConfig.with_overrides`); K is the prompt length, named
#: `prompt_length` in SHIP and `num_prompts` in VPT/SPT/SEP.
KEY_ALIASES = {"K": ("prompt_length", "num_prompts"), "alpha": ("threshold",), "wd": ("weight_decay",)}
_ALIAS_TEXT = ", ".join(f"{a}={'/'.join(b)}" for a, b in KEY_ALIASES.items())


class ConfigError(ValueError):
    """A run configuration that cannot work; the message says what to change."""


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
    lr_schedule: str = "epoch"  # "epoch" (official: lr changes once per epoch) or "step"
    batch_size: int = 64  # drop_last=True
    eval_batch_size: int = 128
    eval_every: int = 10  # evaluate at epochs 0, N, 2N, ... and the last one; 0: only the last
    # --- model and data ---
    backbone: str | None = None  # None: the benchmark's default backbone
    pretrained: bool = True
    img_size: int | None = None
    preset: str = "ship"
    options: dict = field(default_factory=dict)  # method options (shiplib.method_options(method))
    tag: str | None = None  # names a variant: results go to <method>+<tag>
    # --- where and how to run (not part of the run's identity) ---
    data_root: str | None = None
    results_dir: str = "results"
    runs_dir: str = "runs"
    device: str = "auto"
    threads: int | None = None
    num_workers: int = 0
    cache_images: bool | None = None  # None: cache decoded images for the mini benchmark only
    progress: bool = True
    resume: bool = True

    RUNTIME_FIELDS: ClassVar[tuple[str, ...]] = ("data_root", "results_dir", "runs_dir", "device", "threads", "num_workers", "cache_images",
                      "progress", "resume")
    FIXED_FIELDS: ClassVar[tuple[str, ...]] = ("task", "method", "seed", "options")

    @classmethod
    def settable_fields(cls) -> list[str]:
        """Fields a `--set key=value` may change (task/method/seed have their own flags)."""
        return [f.name for f in dataclasses.fields(cls) if f.name not in cls.FIXED_FIELDS]

    def with_overrides(self, overrides: dict[str, Any]) -> "RunConfig":
        """A copy with `key=value` overrides applied: run fields by name, anything else as a method option.

        Unknown keys fail listing the valid ones.
        """
        from ..methods import method_options

        option_names = list(_lookup("method", method_options, self.method))
        run_fields = {f.name: f for f in dataclasses.fields(self)}
        changes, options = {}, dict(self.options)
        for raw_key, value in overrides.items():
            targets = KEY_ALIASES.get(raw_key, (raw_key,))
            key = next((t for t in targets if t in option_names or t in run_fields), targets[0])
            if key in self.settable_fields():
                changes[key] = _coerce_field(key, value, run_fields[key])
            elif key in option_names:
                options[key] = value
            else:
                raise ConfigError(
                    f"unknown setting {raw_key!r} for method {self.method!r}. Valid run settings: "
                    f"{', '.join(self.settable_fields())}. Valid {self.method} options: {', '.join(option_names)}. "
                    f"Aliases: {_ALIAS_TEXT}.")
        return dataclasses.replace(self, **changes, options=options)


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


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`["lr=1e-3", "K=50"]` -> {"lr": 0.001, "K": 50}; malformed items fail clearly."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = parse_value(value)
    return out


def _check_positive_int(name: str, value, allow_zero: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ConfigError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} integer, got {value!r}")


def _describe(value: Any) -> str:
    """JSON stand-in for an array-valued option (e.g. a prototype bank passed in Python): shape + content hash."""
    import hashlib

    import numpy as np

    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16]
        return f"<array {value.dtype} {tuple(value.shape)} sha256:{digest}>"
    return str(value)


def eval_epochs(epochs: int, eval_every: int) -> list[int]:
    """Epochs after which the model is evaluated: 0, N, 2N, … and always the last (official: N=10)."""
    marks = set(range(0, epochs, eval_every)) if eval_every > 0 else set()
    return sorted(marks | {epochs - 1})


def resolve_config(cfg: RunConfig) -> dict:
    """Fill every default and validate; returns the complete run description.

    Keys: everything a result needs to be reproduced (`identity`), plus `sources` (where each default
    came from), `overrides` (what the user set) and the runtime settings.
    """
    from ..methods import get_method, method_options

    spec = _lookup("task", get_task, cfg.task)
    _lookup("method", get_method, cfg.method)  # unknown method: fails with the list of valid ones
    if cfg.protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {PROTOCOLS}, got {cfg.protocol!r}")
    if cfg.lr_schedule not in SCHEDULE_MODES:
        raise ConfigError(f"lr_schedule must be one of {SCHEDULE_MODES}, got {cfg.lr_schedule!r}")
    check_tag(cfg.tag)
    _check_positive_int("seed", cfg.seed, allow_zero=True)
    option_defaults = method_options(cfg.method)
    unknown = sorted(set(cfg.options) - set(option_defaults))
    if unknown:
        raise ConfigError(f"method {cfg.method!r} has no option(s) {', '.join(map(repr, unknown))}. "
                          f"Valid options: {', '.join(option_defaults)}")
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
    options = {k: v for k, v in option_defaults.items()}
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
    train_split, eval_split = PROTOCOL_SPLITS[cfg.protocol]
    identity = dict(task=spec.name, benchmark=spec.benchmark, method=cfg.method, seed=cfg.seed, **run,
                    options=options, train_split=train_split, eval_split=eval_split,
                    eval_epochs=eval_epochs(run["epochs"], run["eval_every"]))
    identity = json.loads(json.dumps(identity, default=_describe))  # exactly what a result file will hold
    runtime = {name: getattr(cfg, name) for name in RunConfig.RUNTIME_FIELDS}
    if runtime["cache_images"] is None:
        runtime["cache_images"] = spec.benchmark == "mini"
    return dict(identity=identity, task_spec=spec, sources=sources, overrides=overrides, runtime=runtime)
