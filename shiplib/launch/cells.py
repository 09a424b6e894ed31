"""The cells of a sweep grid (one per task × method × seed under the same settings) and the state of each.

The state (`shiplib.engine.results.RunState`) is what the result file says (`check_result`: done, stale, conflict,
corrupt, missing), unless a lock or a job says more: running (a live lock), queued (a SLURM job that will run it is
pending), failed (failed.json, a job that ended without a result, or a lock whose owner died). A corrupt result is
moved aside to `<file>.corrupt` when the cell runs.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.results import RunState, check_result, run_name
from . import locks, slurm


class Action(str, enum.Enum):
    """What a sweep does with a cell."""

    RUN = "run"
    SKIP = "skip"  # done, or another process or job is on it
    CONFLICT = "conflict"  # a result of other settings: only with force


@dataclass(frozen=True)
class Cell:
    """One run of a grid, resolved once: its `ResolvedRun` says its identity and files."""

    run: Any  # shiplib.engine.ResolvedRun

    @property
    def identity(self) -> dict:
        return self.run.identity()

    @property
    def result(self) -> Path:
        return self.run.paths.result

    @property
    def work_dir(self) -> Path:
        return self.run.paths.work_dir

    @property
    def label(self) -> str:
        r = self.run
        return f"{r.task.name} {run_name(r.method, r.tag)} seed {r.seed}"

    def key(self) -> dict:
        r = self.run
        return dict(task=r.task.name, method=r.method, tag=r.tag, seed=r.seed, protocol=r.protocol)


@dataclass
class CellState:
    """A cell and what stands for it now (no training, no locking)."""

    cell: Cell
    state: RunState
    detail: str = ""
    job: str | None = None  # a SLURM job id or pid@host
    acc_last: float | None = None
    acc_max_over_epochs: float | None = None

    @property
    def label(self) -> str:
        return self.cell.label

    def action(self, force: bool = False) -> Action:
        if self.state.elsewhere:
            return Action.SKIP
        if force or self.state.to_run:
            return Action.RUN
        return Action.CONFLICT if self.state is RunState.CONFLICT else Action.SKIP


def cell_of(cfg) -> Cell:
    """The cell of a RunConfig (resolved here, once)."""
    from ..engine.config import resolve_config

    return Cell(resolve_config(cfg))


@dataclass(frozen=True)
class GridSettings:
    """The settings every cell of a grid shares, as the options of `python -m shiplib sweep`."""

    epochs: int | None = None
    overrides: Any = None  # `--set` items, key=value text or a dict
    protocol: str = "final"
    tag: str | None = None
    results: str = "results"
    runs: str = "runs"
    data_root: str | None = None
    device: str = "auto"
    threads: int | None = None
    num_workers: int = 0
    progress: bool = False
    extra: dict = field(default_factory=dict)  # any other RunConfig field by name

    def config(self, task: str, method: str, seed: int):
        from ..engine import RunConfig
        from ..engine.config import parse_overrides

        ov = parse_overrides(list(self.overrides) if isinstance(self.overrides, tuple) else self.overrides)
        if self.epochs is not None:
            ov["epochs"] = self.epochs
        cfg = RunConfig(task=task, method=method, seed=int(seed), protocol=self.protocol, tag=self.tag,
                        results_dir=str(self.results), runs_dir=str(self.runs), data_root=self.data_root,
                        device=self.device, threads=self.threads, num_workers=self.num_workers,
                        progress=self.progress, **self.extra)
        return cfg.with_overrides(ov)


def make_cells(tasks, methods, seeds=(1,), settings: GridSettings | None = None, **given) -> list[Cell]:
    """Cells of tasks × methods × seeds ('mini'/'vtab1k' expand to their tasks), as `python -m shiplib sweep`.
    `settings`, or its fields by name (epochs, overrides, protocol, tag, results, runs, …)."""
    settings = settings or GridSettings(**given)
    expanded = expand_tasks([tasks] if isinstance(tasks, str) else list(tasks))
    methods = [methods] if isinstance(methods, str) else list(methods)
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    return [cell_of(settings.config(task, method, seed)) for task in expanded for method in methods
            for seed in seeds]


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


def cell_state(cell: Cell) -> CellState:
    """The state of one cell: its result file's (`check_result`), unless a lock or a job says more."""
    check = check_result(cell.result, cell.identity)
    st = CellState(cell, check.state, check.detail)
    if check.result is not None and check.state is not RunState.CONFLICT:
        st.acc_last, st.acc_max_over_epochs = check.result.get("acc_last"), check.result.get("acc_max_over_epochs")
    if check.state is RunState.DONE:
        return st
    owner = locks.live_owner(cell.work_dir)
    if owner is not None:
        job = owner.get("job_id") if owner.get("job_id") != "local" else f"{owner.get('pid')}@{owner.get('host')}"
        return _set(st, RunState.RUNNING, locks.describe_owner(owner), job)
    if check.state is not RunState.MISSING:  # stale, conflict, corrupt: what the result says
        return st
    return _job_state(st)


def _set(st: CellState, state: RunState, detail: str, job=None) -> CellState:
    st.state, st.detail, st.job = state, detail, job
    return st


def _job_state(st: CellState) -> CellState:
    """Queued or failed, from the records a job leaves in the work folder, or still missing."""
    wd = st.cell.work_dir
    queued = locks.read_json(wd / locks.QUEUED_NAME)
    alive = slurm.job_alive(queued["job_id"]) if queued and queued.get("job_id") else None
    if alive:
        return _set(st, RunState.QUEUED, f"SLURM job {queued['job_id']}", queued["job_id"])
    failed = locks.read_json(wd / locks.FAILED_NAME)
    if failed:
        return _set(st, RunState.FAILED, failed.get("error", "") + "\n" + "\n".join(failed.get("tail", [])[-6:]),
                    failed.get("job_id"))
    if alive is False:
        tail = submitit_log_tail(queued)
        return _set(st, RunState.FAILED, f"SLURM job {queued['job_id']} ended without a result"
                    + ("; log:\n" + "\n".join(tail) if tail else ""), queued["job_id"])
    stale_lock, _ = locks.read_lock(wd)
    if stale_lock and stale_lock.get(locks.NOT_A_LOCK) is not None:
        return _set(st, RunState.FAILED, f"its lock file holds {stale_lock[locks.NOT_A_LOCK]}, not a lock "
                                         "(stale: the next run takes it over)")
    if stale_lock:
        return _set(st, RunState.FAILED, f"interrupted: {locks.describe_owner(stale_lock)} is gone (its lock is stale)",
                    stale_lock.get("job_id"))
    return st
