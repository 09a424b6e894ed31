"""`ResolvedRun`: one run with every default filled in and checked, typed and frozen.

`resolve_config` (in `config.py`) makes it from a `RunConfig`; every stage of `run_experiment` reads it.
`identity()` is what makes two results the same run (it is stored in every result file and checkpoint);
`as_record()` adds the runtime settings, as the result's `config`.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar, Any, Mapping

import numpy as np

from ..data.tasks import TaskSpec
from ..utils.paths import portable_path
from .precision import DEFAULT_PRECISION
from .results import result_path, run_name, work_dir

CHECKPOINT_NAME = "checkpoint.pt"
#: The checkpoint before the newest one, kept so that a bad newest file costs at most one epoch.
PREVIOUS_CHECKPOINT_NAME = "checkpoint.prev.pt"
LOG_NAME = "log.jsonl"


@dataclass(frozen=True)
class Training:
    """Optimisation and evaluation schedule, and the numeric precision of the passes."""

    epochs: int
    lr: float
    weight_decay: float
    warmup_epochs: int
    warmup_lr: float
    min_lr: float
    lr_schedule: str
    batch_size: int
    eval_batch_size: int
    eval_every: int
    eval_epochs: tuple[int, ...]
    precision: str  # shiplib.engine.precision.PRECISIONS


@dataclass(frozen=True)
class ModelChoice:
    """Which backbone, and how images are fed to it."""

    backbone: str
    backbone_arch: Any  # None, a timm name or VisionTransformer arguments (what the weights file does not say)
    pretrained: bool
    img_size: int
    preset: str


@dataclass(frozen=True)
class Runtime:
    """Where and how the run executes; not part of its identity."""

    data_root: str | None
    results_dir: str
    runs_dir: str
    device: str
    threads: int | None
    num_workers: int
    cache_images: bool
    compile: str | None
    progress: bool
    resume: bool

    #: Settings newer than the committed results, recorded only when set, so other runs keep their records' form.
    RECORDED_WHEN_SET: ClassVar[tuple[str, ...]] = ("compile",)


@dataclass(frozen=True)
class RunPaths:
    """The files of one run."""

    result: Path
    work_dir: Path
    checkpoint: Path
    previous_checkpoint: Path
    log: Path


@dataclass(frozen=True)
class ResolvedRun:
    """A complete, validated run description (see the module docstring)."""

    task: TaskSpec
    method: str
    seed: int
    protocol: str
    tag: str | None
    train_split: str
    eval_split: str
    training: Training
    model: ModelChoice
    options: Mapping[str, Any]  # the method's options, every one filled in (values as given: arrays stay arrays)
    runtime: Runtime
    sources: Mapping[str, str]  # where each setting came from ("user", a defaults table, a class default)
    overrides: Mapping[str, Any]  # what the user set

    def __post_init__(self) -> None:
        for name in ("options", "sources", "overrides"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def __reduce__(self):
        # read-only mappings do not pickle; rebuild from plain dicts (for launchers that send runs to processes)
        values = (getattr(self, f.name) for f in dataclasses.fields(self))
        return type(self), tuple(dict(v) if isinstance(v, MappingProxyType) else v for v in values)

    @property
    def benchmark(self) -> str:
        return self.task.benchmark

    @property
    def label(self) -> str:
        return f"{self.task.name}/{run_name(self.method, self.tag)}/seed{self.seed}"

    def identity(self) -> dict:
        """What makes two results the same run, as a result file stores it (JSON types, arrays described)."""
        t, m = self.training, self.model
        ident = dict(task=self.task.name, benchmark=self.benchmark, method=self.method, seed=self.seed,
                     protocol=self.protocol, epochs=t.epochs, lr=t.lr, weight_decay=t.weight_decay,
                     warmup_epochs=t.warmup_epochs, warmup_lr=t.warmup_lr, min_lr=t.min_lr,
                     lr_schedule=t.lr_schedule, batch_size=t.batch_size, eval_batch_size=t.eval_batch_size,
                     eval_every=t.eval_every, backbone=m.backbone, pretrained=m.pretrained, img_size=m.img_size,
                     preset=m.preset, tag=self.tag, options=dict(self.options), train_split=self.train_split,
                     eval_split=self.eval_split, eval_epochs=list(t.eval_epochs))
        if t.precision != DEFAULT_PRECISION:  # fp32 is left out: results made before precisions existed are fp32
            ident["precision"] = t.precision
        if m.backbone_arch is not None:  # only when given (RunConfig.IDENTITY_WHEN_SET)
            ident["backbone_arch"] = m.backbone_arch
        return json.loads(json.dumps(ident, default=describe_value))

    def as_record(self, data_root: str | os.PathLike | None = None) -> dict:
        """The result's `config`: the identity plus the runtime settings, paths relative to the repository.

        `data_root`: the folder the data was actually read from (recorded instead of the requested one)."""
        runtime = dataclasses.asdict(self.runtime)
        if data_root is not None:
            runtime["data_root"] = data_root
        for key in ("data_root", "results_dir", "runs_dir"):
            if runtime[key] is not None:
                runtime[key] = portable_path(runtime[key])
        for key in Runtime.RECORDED_WHEN_SET:
            if runtime[key] is None:
                del runtime[key]
        return {**self.identity(), **runtime}

    @functools.cached_property
    def method_config(self):
        """The method's typed config (a `MethodConfig`) built from `options`, once; a bad value is a ConfigError
        naming the option."""
        from .validate import method_config  # the registry is imported when a config is needed, not with this module

        return method_config(self.method, self.options)

    def with_runtime(self, **changes) -> "ResolvedRun":
        """The same run with runtime settings changed (threads, progress, resume: not part of its identity)."""
        return dataclasses.replace(self, runtime=dataclasses.replace(self.runtime, **changes))

    @property
    def paths(self) -> RunPaths:
        key = (self.benchmark, self.task.name, run_name(self.method, self.tag), self.seed, self.protocol)
        wd = work_dir(self.runtime.runs_dir, *key)
        return RunPaths(result=result_path(self.runtime.results_dir, *key), work_dir=wd,
                        checkpoint=wd / CHECKPOINT_NAME, previous_checkpoint=wd / PREVIOUS_CHECKPOINT_NAME,
                        log=wd / LOG_NAME)


def paths_for(run: ResolvedRun) -> RunPaths:
    """The result file, work folder, checkpoints and log of a run."""
    return run.paths


def describe_value(value: Any) -> str:
    """JSON stand-in for an array-valued option (e.g. a prototype bank passed in Python): shape + content hash."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16]
        return f"<array {value.dtype} {tuple(value.shape)} sha256:{digest}>"
    return str(value)


def identity_diff(a: Mapping, b: Mapping) -> str:
    """The settings two identities differ in, as `key: old -> new; …` (at most 8)."""
    keys = sorted(set(a) | set(b))
    diffs = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
    return "; ".join(diffs[:8]) + (" …" if len(diffs) > 8 else "")
