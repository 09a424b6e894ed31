"""What runs one cell, in whichever process a launcher chose: lock, train (resuming), release, record a failure.
`run_locked` is the same for `python -m shiplib run`: a second process asking for a cell that is being trained is
refused instead of training it twice.

`CellJob` is the submitit callable. It is checkpointable: on preemption or timeout submitit calls `checkpoint()`,
which resubmits the same cell with resume on; the run continues from its last epoch checkpoint
(`run_experiment` resumes from `<work_dir>/checkpoint.pt`). submitit finds `checkpoint()` by name, so this module
imports submitit only there: importing submitit reconfigures logging (it closes every existing handler), which
`run` and the inline sweep do not need.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StateError
from ..utils.io import remove_stale_temporaries
from ..utils.signals import stop_on_signals
from . import locks

if TYPE_CHECKING:
    from submitit.helpers import DelayedSubmission

log = logging.getLogger(__name__)
REPLACED_SUFFIX = ".replaced"


def run_cell(cfg, force: bool = False, resumed: bool = False, on_step=None) -> dict:
    """Train one cell under its lock. Returns {"status": "done"|"finished"|"running elsewhere", …}.

    A result of the same settings made with other backbone weights (stale), or any result with `force`, is moved
    aside to `<result>.replaced` and the run starts fresh (restored if the run fails). `resumed`: this is the
    continuation of a preempted job (resume from the checkpoint, never start over).
    """
    from ..engine import resolve_config, run_experiment
    from ..engine.prepare import stale_backbone
    from ..engine.resources import check_device
    from ..engine.results import existing_result
    from ..engine.run import paths_for

    resolved = resolve_config(cfg)
    ident, paths = resolved.identity(), paths_for(resolved)
    wd, result_file = paths.work_dir, paths.result
    label = f"{ident['task']} {ident['method']} seed {ident['seed']}"
    check_device(cfg.device)  # here, on the machine that trains (a SLURM login node may have no GPU)
    lock, owner = locks.acquire(wd)
    if lock is None:
        log.info("%s: running elsewhere (%s); skipped", label, locks.describe_owner(owner))
        return dict(status="running elsewhere", owner=owner, cell=label)
    replaced = result_file.with_name(result_file.name + REPLACED_SUFFIX)
    try:
        remove_stale_temporaries(wd)  # under the cell's lock: left by a run of this cell that was killed
        prev = existing_result(result_file)  # an unreadable file is moved aside: the cell runs again
        if prev is not None:
            same = prev.get("identity") == ident
            if same and not force and stale_backbone(prev) is None:
                return dict(status="finished", cell=label, acc_last=prev["acc_last"],
                            acc_max_over_epochs=prev["acc_max_over_epochs"])
            if (force or (same and stale_backbone(prev) is not None)) and not resumed:
                os.replace(result_file, replaced)  # kept until the new result is written
                for checkpoint in (paths.checkpoint, paths.previous_checkpoint):  # a fresh start, as --force
                    checkpoint.unlink(missing_ok=True)
        if resumed:
            cfg = dataclasses.replace(cfg, resume=True)
        result = run_experiment(cfg, force=False, on_step=on_step)
        locks.clear(wd, locks.FAILED_NAME)
        locks.clear(wd, locks.QUEUED_NAME)
        replaced.unlink(missing_ok=True)
        return dict(status="done", cell=label, acc_last=result["acc_last"],
                    acc_max_over_epochs=result["acc_max_over_epochs"],
                    resumed_from_epoch=result.get("resumed_from_epoch"))
    except BaseException as e:  # an interrupted run (Ctrl-C, SIGTERM) gives the replaced result back as well
        if isinstance(e, Exception):
            locks.record_failure(wd, e, traceback.format_exc())
        if replaced.is_file() and not result_file.exists():
            os.replace(replaced, result_file)
        raise
    finally:
        lock.release()


def run_locked(cfg, force: bool = False, on_step=None) -> dict:
    """`run_experiment(cfg, force)` under the cell's lock, as `python -m shiplib run` does it.

    Another process training the same cell is a `StateError` naming it (nothing is trained twice); a refused run
    leaves no empty folders behind. Returns the result dict.
    """
    from ..engine import resolve_config, run_experiment
    from ..engine.resources import check_device
    from ..engine.run import paths_for
    from ..engine.validate import check_writable_folder

    wd = paths_for(resolve_config(cfg)).work_dir
    check_device(cfg.device)
    check_writable_folder(wd, "runs folder", cfg.runs_dir, "--runs")  # the lock is written there
    created = _missing_folders(wd, stop=Path(cfg.runs_dir))
    lock, owner = locks.acquire(wd)
    if lock is None:
        raise StateError(f"{wd} is being trained by {locks.describe_owner(owner)} right now (its lock is "
                         f"{wd / locks.LOCK_NAME}); wait until it ends (`python -m shiplib status …` shows it), or "
                         "stop that process: a lock whose process is gone is taken over by the next run.")
    try:
        remove_stale_temporaries(wd)  # under the cell's lock: left by a run of this cell that was killed
        result = run_experiment(cfg, force=force, on_step=on_step)  # moves an unreadable result aside itself
        locks.clear(wd, locks.FAILED_NAME)
        return result
    finally:
        lock.release()
        for folder in created:  # a run refused before any work leaves no empty folders behind
            try:
                folder.rmdir()
            except OSError:
                break


def _missing_folders(folder: Path, stop: Path) -> list[Path]:
    """`folder` and its parents up to `stop` (included) that do not exist yet, deepest first."""
    out, stop, folder = [], stop.resolve(), folder.resolve()
    while not folder.exists() and (folder == stop or stop in folder.parents):
        out.append(folder)
        folder = folder.parent
    return out


class CellJob:
    """submitit callable for one cell: `CellJob()(cfg, force)`; requeued with resume after preemption/timeout
    (submitit's `Checkpointable` protocol: a callable with a `checkpoint` method)."""

    def __call__(self, cfg, force: bool = False, resumed: bool = False) -> dict:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        if os.environ.get("SUBMITIT_EXECUTOR") != "local":  # SLURM: submitit's own handlers (requeue on preemption)
            return run_cell(cfg, force=force, resumed=resumed)
        with stop_on_signals(interruptible=True):  # a local sweep that stops cancels its runs: they must stop
            return run_cell(cfg, force=force, resumed=resumed)

    def checkpoint(self, cfg, force: bool = False, resumed: bool = False) -> DelayedSubmission:
        from submitit.helpers import DelayedSubmission

        # The epoch checkpoint is already on disk (written after every epoch): continue from it.
        return DelayedSubmission(CellJob(), cfg, False, True)
