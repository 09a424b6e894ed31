"""The cells of a sweep grid (one per task × method × seed under the same settings) and the state of each.

States: done (a current result), stale (a result made with other backbone weights: re-run), conflict (a result
of other settings at the same path: needs --force or --tag), corrupt (a result file that cannot be read: running
the cell moves it aside to `<file>.corrupt` and runs again), running (a live lock), queued (a SLURM job that
will run it is pending), failed (failed.json, a job that ended without a result, or a lock whose owner died),
pending (nothing yet).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ShiplibError
from . import locks, slurm

STATES = ("done", "running", "queued", "failed", "pending", "stale", "conflict", "corrupt")
#: States a sweep (re)submits; "conflict" only with --force, "done" only with --force.
TO_RUN = ("pending", "failed", "stale", "corrupt")


@dataclass
class Cell:
    cfg: object  # RunConfig
    identity: dict
    result: Path
    work_dir: Path

    @property
    def label(self) -> str:
        from ..engine.results import run_name

        i = self.identity
        return f"{i['task']} {run_name(i['method'], i.get('tag') or None)} seed {i['seed']}"

    def key(self) -> dict:
        i = self.identity
        return dict(task=i["task"], method=i["method"], tag=i.get("tag"), seed=i["seed"], protocol=i["protocol"])


def cell_of(cfg) -> Cell:
    from ..engine import resolve_config
    from ..engine.run import paths_for

    resolved = resolve_config(cfg)
    paths = paths_for(resolved)
    return Cell(cfg=cfg, identity=resolved.identity(), result=paths.result, work_dir=paths.work_dir)


def make_cells(tasks, methods, seeds=(1,), *, epochs=None, overrides=None, protocol="final", tag=None,
               results="results", runs="runs", data_root=None, device="auto", threads=None, num_workers=0,
               progress=False) -> list[Cell]:
    """Cells of tasks × methods × seeds ('mini'/'vtab1k' expand to their tasks), as `python -m shiplib sweep`."""
    from ..engine import RunConfig
    from ..engine.config import parse_overrides

    expanded = expand_tasks([tasks] if isinstance(tasks, str) else list(tasks))
    methods = [methods] if isinstance(methods, str) else list(methods)
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    ov = parse_overrides(overrides) if isinstance(overrides, (list, tuple)) else dict(overrides or {})
    if epochs is not None:
        ov["epochs"] = epochs
    cells = []
    for task in expanded:
        for method in methods:
            for seed in seeds:
                cfg = RunConfig(task=task, method=method, seed=int(seed), protocol=protocol, tag=tag,
                                results_dir=str(results), runs_dir=str(runs), data_root=data_root, device=device,
                                threads=threads, num_workers=num_workers, progress=progress)
                cells.append(cell_of(cfg.with_overrides(ov)))
    return cells


def expand_tasks(names: list[str]) -> list[str]:
    from ..data.tasks import get_task, list_tasks

    out = []
    for name in names:
        expanded = list_tasks(benchmark=name) if name in ("vtab1k", "mini") else [get_task(name).name]
        out += [t for t in expanded if t not in out]
    return out


def _tail(path: Path, lines: int = 8) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.rstrip().splitlines() if line.strip()][-lines:]


def submitit_log_tail(queued: dict, lines: int = 8) -> list[str]:
    """Last lines of the submitit stderr log of the job in a queued.json record."""
    folder = queued.get("log_dir")
    if not folder:
        return []
    job = str(queued.get("job_id"))
    return _tail(Path(folder.replace("%j", job)) / f"{job}_0_log.err", lines)


def cell_state(cell: Cell) -> dict:
    """{"state", "detail", "acc_last", "acc_max_over_epochs", "job"} of one cell (no training, no locking)."""
    from ..engine.prepare import stale_backbone
    from ..engine.results import UnreadableResultError, read_result
    from ..engine.run import identity_diff
    from ..utils.io import aside_path

    out = dict(state="pending", detail="", job=None, acc_last=None, acc_max_over_epochs=None)
    prev = None
    if cell.result.is_file():
        try:
            prev = read_result(cell.result)
        except UnreadableResultError as e:
            out.update(state="corrupt", detail=f"unreadable result: {e.reason}; running the cell moves it to "
                                               f"{aside_path(cell.result).name} and runs it again")
        except OSError as e:
            out.update(state="corrupt", detail=f"result file cannot be opened: {e}")
    if prev is not None:
        if prev.get("identity") == cell.identity:
            try:
                reason = stale_backbone(prev)
            except (ShiplibError, OSError) as e:  # e.g. the backbone weights file is unreadable now
                reason = f"cannot compare with the current backbone weights: {e}"
            out.update(acc_last=prev.get("acc_last"), acc_max_over_epochs=prev.get("acc_max_over_epochs"))
            if reason is None:
                out.update(state="done", detail=str(cell.result))
                return out
            out.update(state="stale", detail=reason)
        else:
            out.update(state="conflict", detail="a result of other settings: "
                       f"{identity_diff(prev.get('identity', {}), cell.identity)} (use --tag, or --force)")
    owner = locks.live_owner(cell.work_dir)
    if owner is not None:
        out.update(state="running", job=owner.get("job_id") if owner.get("job_id") != "local"
                   else f"{owner.get('pid')}@{owner.get('host')}", detail=locks.describe_owner(owner))
        return out
    if out["state"] in ("stale", "conflict", "corrupt"):
        return out
    queued = locks.read_json(cell.work_dir / locks.QUEUED_NAME)
    if queued and queued.get("job_id"):
        alive = slurm.job_alive(queued["job_id"])
        if alive:
            out.update(state="queued", job=queued["job_id"], detail=f"SLURM job {queued['job_id']}")
            return out
    failed = locks.read_json(cell.work_dir / locks.FAILED_NAME)
    if failed:
        out.update(state="failed", job=failed.get("job_id"),
                   detail=failed.get("error", "") + "\n" + "\n".join(failed.get("tail", [])[-6:]))
        return out
    if queued and queued.get("job_id") and alive is False:
        tail = submitit_log_tail(queued)
        out.update(state="failed", job=queued["job_id"],
                   detail=f"SLURM job {queued['job_id']} ended without a result" + ("; log:\n" + "\n".join(tail)
                                                                                     if tail else ""))
        return out
    stale_lock, _ = locks.read_lock(cell.work_dir)
    if stale_lock and stale_lock.get(locks.NOT_A_LOCK) is not None:
        out.update(state="failed", detail=f"its lock file holds {stale_lock[locks.NOT_A_LOCK]}, not a lock "
                                          "(stale: the next run takes it over)")
    elif stale_lock:
        out.update(state="failed", job=stale_lock.get("job_id"),
                   detail=f"interrupted: {locks.describe_owner(stale_lock)} is gone (its lock is stale)")
    return out
