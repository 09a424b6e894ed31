"""What runs one cell, in whichever process a launcher chose: lock, train (resuming), release, record a failure.

`CellJob` is the submitit callable. It is checkpointable: on preemption or timeout submitit calls `checkpoint()`,
which resubmits the same cell with resume on; the run continues from its last epoch checkpoint
(`run_experiment` resumes from `<work_dir>/checkpoint.pt`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import traceback

import submitit

from . import locks

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
    from ..engine.results import read_result
    from ..engine.run import paths_for

    resolved = resolve_config(cfg)
    ident, paths = resolved["identity"], paths_for(resolved)
    wd, result_file = paths["work_dir"], paths["result"]
    label = f"{ident['task']} {ident['method']} seed {ident['seed']}"
    lock, owner = locks.acquire(wd)
    if lock is None:
        log.info("%s: running elsewhere (%s); skipped", label, locks.describe_owner(owner))
        return dict(status="running elsewhere", owner=owner, cell=label)
    replaced = result_file.with_name(result_file.name + REPLACED_SUFFIX)
    try:
        if result_file.is_file():
            prev = read_result(result_file)
            same = prev.get("identity") == ident
            if same and not force and stale_backbone(prev) is None:
                return dict(status="finished", cell=label, acc_last=prev["acc_last"],
                            acc_max_over_epochs=prev["acc_max_over_epochs"])
            if (force or (same and stale_backbone(prev) is not None)) and not resumed:
                os.replace(result_file, replaced)  # kept until the new result is written
                paths["checkpoint"].unlink(missing_ok=True)  # a fresh start, as --force
        if resumed:
            cfg = dataclasses.replace(cfg, resume=True)
        result = run_experiment(cfg, force=False, on_step=on_step)
        locks.clear(wd, locks.FAILED_NAME)
        locks.clear(wd, locks.QUEUED_NAME)
        replaced.unlink(missing_ok=True)
        return dict(status="done", cell=label, acc_last=result["acc_last"],
                    acc_max_over_epochs=result["acc_max_over_epochs"],
                    resumed_from_epoch=result.get("resumed_from_epoch"))
    except Exception as e:
        locks.record_failure(wd, e, traceback.format_exc())
        if replaced.is_file() and not result_file.exists():
            os.replace(replaced, result_file)
        raise
    finally:
        lock.release()


class CellJob(submitit.helpers.Checkpointable):
    """submitit callable for one cell: `CellJob()(cfg, force)`; requeued with resume after preemption/timeout."""

    def __call__(self, cfg, force: bool = False, resumed: bool = False) -> dict:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        return run_cell(cfg, force=force, resumed=resumed)

    def checkpoint(self, cfg, force: bool = False, resumed: bool = False) -> submitit.helpers.DelayedSubmission:
        # The epoch checkpoint is already on disk (written after every epoch): continue from it.
        return submitit.helpers.DelayedSubmission(CellJob(), cfg, False, True)
