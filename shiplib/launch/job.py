"""What runs one cell, in whichever process a launcher chose: lock, train (resuming), release, record a failure.
`run_locked` is the only place a run is trained under its lock, for `python -m shiplib run` and for every sweep cell
(`run_cell`): a second process asking for a cell that is being trained is refused instead of training it twice.

`CellJob` is the submitit callable. It is checkpointable: on preemption or timeout submitit calls `checkpoint()`,
which resubmits the same cell with resume on; the run continues from its last epoch checkpoint
(`run_experiment` resumes from `<work_dir>/checkpoint.pt`). submitit finds `checkpoint()` by name, so this module
imports submitit only there: importing submitit reconfigures logging (it closes every existing handler), which
`run` and the inline sweep do not need.
"""
from __future__ import annotations

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
#: The statuses a sweep cell's run ends with (`run_cell`): trained now, finished before, or skipped.
TRAINED, FINISHED, ELSEWHERE = "done", "finished", "running elsewhere"


def run_locked(run, force: bool = False, on_step=None, *, sweep: bool = False, resumed: bool = False) -> dict:
    """Train `run` (a RunConfig or ResolvedRun) under its cell's lock: the one way a run is trained, by
    `python -m shiplib run` and by every sweep cell (`run_cell`).

    Returns the result dict. Another process training the same cell is a `StateError` naming it (nothing is trained
    twice); a refused run leaves no empty folders behind. `sweep`: as a cell of a sweep, returns
    {"status": "done"|"finished"|"running elsewhere", "cell", accuracies}: a cell trained elsewhere is skipped, a
    finished result kept; a result made with other backbone weights (stale), or any result with `force`, is moved
    aside to `<result>.replaced` and the run starts fresh (restored if the run fails); a failure is recorded in
    failed.json for `status`. `resumed`: the continuation of a preempted job (resume from the checkpoint).
    """
    from ..engine.config import as_resolved
    from ..engine.resources import check_device
    from ..engine.validate import check_writable_folder

    run = as_resolved(run)
    wd, runs_dir = run.paths.work_dir, run.runtime.runs_dir
    check_device(run.runtime.device)  # here, on the machine that trains (a SLURM login node may have no GPU)
    check_writable_folder(wd, "runs folder", runs_dir, "--runs")  # the lock is written there
    created = _missing_folders(wd, stop=Path(runs_dir))
    lock, owner = locks.acquire(wd)
    if lock is None and sweep:
        log.info("%s: running elsewhere (%s); skipped", _label(run), locks.describe_owner(owner))
        return dict(status=ELSEWHERE, owner=owner, cell=_label(run))
    if lock is None:
        raise StateError(f"{wd} is being trained by {locks.describe_owner(owner)} right now (its lock is "
                         f"{wd / locks.LOCK_NAME}); wait until it ends (`python -m shiplib status …` shows it), or "
                         "stop that process: a lock whose process is gone is taken over by the next run.")
    try:
        remove_stale_temporaries(wd)  # under the cell's lock: left by a run of this cell that was killed
        if sweep:
            return _train_cell(run, force, on_step, resumed)
        from ..engine.run import run_experiment

        result = run_experiment(run, force=force, on_step=on_step)  # moves an unreadable result aside itself
        _clear_records(wd)
        return result
    finally:
        lock.release()
        for folder in created:  # a run refused before any work leaves no empty folders behind
            try:
                folder.rmdir()
            except OSError:
                break


def _clear_records(wd: Path) -> None:
    """A finished run is neither failed nor queued any more."""
    locks.clear(wd, locks.FAILED_NAME)
    locks.clear(wd, locks.QUEUED_NAME)


def _train_cell(run, force: bool, on_step, resumed: bool) -> dict:
    """What a sweep cell does under its lock (see `run_locked`)."""
    from ..engine.results import RunState, check_result
    from ..engine.run import run_experiment

    paths = run.paths
    replaced = paths.result.with_name(paths.result.name + REPLACED_SUFFIX)
    try:
        check = check_result(paths.result, run.identity(), move_unreadable=True)  # unreadable: moved aside, run again
        if check.state is RunState.DONE and not force:
            return _outcome(run, FINISHED, check.result)
        if ((force and check.result is not None) or check.state is RunState.STALE) and not resumed:
            os.replace(paths.result, replaced)  # kept until the new result is written
            for checkpoint in (paths.checkpoint, paths.previous_checkpoint):  # a fresh start, as --force
                checkpoint.unlink(missing_ok=True)
        if resumed:
            run = run.with_runtime(resume=True)
        result = run_experiment(run, force=False, on_step=on_step)
        _clear_records(paths.work_dir)
        replaced.unlink(missing_ok=True)
        return _outcome(run, TRAINED, result)
    except BaseException as e:  # an interrupted run (Ctrl-C, SIGTERM) gives the replaced result back as well
        if isinstance(e, Exception):
            locks.record_failure(paths.work_dir, e, traceback.format_exc())
        if replaced.is_file() and not paths.result.exists():
            os.replace(replaced, paths.result)
        raise


def _label(run) -> str:
    from ..engine.results import run_name

    return f"{run.task.name} {run_name(run.method, run.tag)} seed {run.seed}"


def _outcome(run, status: str, result: dict) -> dict:
    return dict(status=status, cell=_label(run), acc_last=result["acc_last"],
                acc_max_over_epochs=result["acc_max_over_epochs"], resumed_from_epoch=result.get("resumed_from_epoch"))


def run_cell(run, force: bool = False, resumed: bool = False, on_step=None) -> dict:
    """Train one sweep cell (a RunConfig or ResolvedRun): `run_locked(run, force, on_step, sweep=True, resumed=…)`.
    Returns {"status": "done"|"finished"|"running elsewhere", "cell", and the accuracies of a result}."""
    return run_locked(run, force, on_step, sweep=True, resumed=resumed)


def _missing_folders(folder: Path, stop: Path) -> list[Path]:
    """`folder` and its parents up to `stop` (included) that do not exist yet, deepest first."""
    out, stop, folder = [], stop.resolve(), folder.resolve()
    while not folder.exists() and (folder == stop or stop in folder.parents):
        out.append(folder)
        folder = folder.parent
    return out


class CellJob:
    """submitit callable for one cell: `CellJob()(run, force)` (`run`: its ResolvedRun); requeued with resume after
    preemption/timeout (submitit's `Checkpointable` protocol: a callable with a `checkpoint` method)."""

    def __call__(self, run, force: bool = False, resumed: bool = False) -> dict:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        if os.environ.get("SUBMITIT_EXECUTOR") != "local":  # SLURM: submitit's own handlers (requeue on preemption)
            return run_cell(run, force=force, resumed=resumed)
        with stop_on_signals(interruptible=True):  # a local sweep that stops cancels its runs: they must stop
            return run_cell(run, force=force, resumed=resumed)

    def checkpoint(self, run, force: bool = False, resumed: bool = False) -> DelayedSubmission:
        from submitit.helpers import DelayedSubmission

        # The epoch checkpoint is already on disk (written after every epoch): continue from it.
        return DelayedSubmission(CellJob(), run, False, True)
