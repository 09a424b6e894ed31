"""The first stage of a run: everything that can be checked before loading data or building the model.

`validate_before_work(run)` checks the method's options (by building its config), the preprocessing preset, the
device and the precision it can run, the memory limit setting, a backbone file (present, header readable), that the
results and runs folders can be created and written, and that the task's folder and the split lists the run reads
are sound (`shiplib.data.checks.check_split`: every line parses, labels are in range, images exist and are not
empty, no line twice; images are decoded only when read), that the evaluation split holds no training image
(`check_no_leakage`) and that the training split holds at least one batch. Each problem is a clear error naming the
setting or path, the value and how to fix it.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from ..backbones.loading import check_backbone_file
from ..data.checks import check_no_leakage, checked_samples
from ..data.folder import TaskLocation, locate_task
from ..data.transforms import check_preset
from ..errors import ConfigError, setting_fix
from ..methods import MethodConfig, get_method
from ..utils.io import disk_full_error
from ..utils.seed import auto_device
from .precision import check_precision
from .resolved import ResolvedRun
from .resources import check_device, memory_limit


def validate_before_work(run: ResolvedRun) -> TaskLocation:
    """Check `run` before any work; returns where its data is (the build stage reads exactly that folder)."""
    check_method_options(run)
    check_preset(run.model.preset, run.model.img_size)
    check_device(run.runtime.device)
    check_precision(run.training.precision, auto_device(run.runtime.device))
    memory_limit()  # a garbled $SHIPLIB_MEMORY_LIMIT fails now, not after the model is built
    check_backbone_file(run.model.backbone, run.model.backbone_arch)
    paths = run.paths
    check_writable_folder(paths.result.parent, "results folder", run.runtime.results_dir, "--results")
    check_writable_folder(paths.work_dir, "runs folder", run.runtime.runs_dir, "--runs")
    return check_data(run)


def check_method_options(run: ResolvedRun) -> MethodConfig:
    """Build the method's config from the run's options: a bad value fails here, naming the option."""
    return run.method_config


def method_config(method: str, options: dict) -> MethodConfig:
    """The method's config from `options`: a bad value fails with a ConfigError naming it and the fix."""
    cls = get_method(method)
    try:
        return cls.config_class.from_options(method, dict(options))
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid option for method {method!r}: {e}. Change it with --set <option>=<value> "
                          f"(options: {', '.join(cls.config_class.option_names())}).") from e


#: Bytes the writability probe writes: one file-system block, enough for a lock or a small result.
_PROBE_BYTES = 4096


def check_writable_folder(folder: Path, what: str, setting: str, flag: str) -> None:
    """`folder` exists or can be created, and a file can be written in it (tried, not guessed from permissions:
    root ignores them, a read-only mount does not; real bytes are written and flushed, since a full disk still
    lets a file be created)."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ConfigError(f"the {what} {setting!r} cannot be used: {blocker} is a file, not a folder. "
                          f"Choose another folder with {flag}.")
    probe_in = existing if existing is not None else Path.cwd()
    try:
        with tempfile.TemporaryFile(dir=probe_in) as f:
            f.write(bytes(_PROBE_BYTES))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise disk_full_error(e, probe_in / "<probe file>", _PROBE_BYTES) from None
        raise ConfigError(f"the {what} {setting!r} is not writable ({folder} would be created in {probe_in}: "
                          f"{e.strerror or e}). Choose a writable folder with {flag}.") from None


def check_data(run: ResolvedRun) -> TaskLocation:
    """The task's folder, with the list files of the run's two splits sound (labels in range, images present,
    no line twice), no training image in the evaluation split, and the training split holding at least one batch
    (training drops the last, incomplete batch)."""
    location = locate_task(run.task.name, run.runtime.data_root)
    train, evaluated = (checked_samples(location.task_dir, split, num_classes=run.task.num_classes)
                        for split in (run.train_split, run.eval_split))
    check_no_leakage(location.task_dir, run.train_split, run.eval_split, train, evaluated)
    batch, size = run.training.batch_size, len(train)
    if batch > size:
        raise ConfigError(f"batch_size {batch} is larger than the training split {run.task.name}/{run.train_split} "
                          f"({size} images), so no batch would train. Lower it to at most {size}: "
                          f"{setting_fix('batch_size', size)}.")
    return location

