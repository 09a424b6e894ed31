"""Where cells run. One loop, `launch`: per cell, its state now -> skip it, or hand it to an executor -> report ->
count. The executors: `Inline` (this process, one run after another), `Local` (N processes on this machine through
submitit's LocalExecutor) and `Slurm` (one submitit job array, one task per cell). All run `job.run_cell`, so the
numbers, locks and failure records are the same whichever is used. `LaunchOptions.check` checks every option."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.results import RunState
from ..errors import ConfigError, reported_errors
from ..errors import message as error_message
from . import locks, slurm
from .cells import Action, Cell, CellState, cell_state
from .job import ELSEWHERE, TRAINED, CellJob, run_cell

#: How long a LocalExecutor job may run (submitit's default is 2 minutes).
LOCAL_TIMEOUT_MIN = 60 * 24 * 30
LOCAL_MAX_RETRIES = 3
LAUNCHERS = ("inline", "local", "slurm")


class LaunchError(ConfigError):
    """Bad launcher options; the message says what to change."""


def _say(text: str) -> None:
    print(text, flush=True)


# ----- options -----
@dataclass
class SlurmOptions:
    """What `--launcher slurm` asks sbatch for (each is a `sweep` option)."""

    partition: str | None = None
    time_min: int = 24 * 60
    cpus_per_run: int | None = None
    mem: str | None = None
    array_parallelism: int | None = None
    setup: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # more sbatch options (--slurm KEY=VALUE)
    wait: bool = False
    wait_timeout_s: float | None = None
    job_name: str = "shiplib"

    def given(self) -> list[str]:
        """The options set, by their command-line names."""
        named = dict(partition=self.partition, cpus_per_run=self.cpus_per_run, mem=self.mem,
                     array_parallelism=self.array_parallelism, setup=self.setup, slurm=self.extra, wait=self.wait)
        return [f"--{k.replace('_', '-')}" for k, v in named.items() if v]


@dataclass
class LaunchOptions:
    """How a sweep runs its cells (the `sweep` options of the launcher group, and --force, --threads)."""

    launcher: str = "inline"
    force: bool = False
    keep_going: bool = False  # inline: go on after an unexpected exception too
    jobs: int | None = None  # local: runs at once
    threads: int | None = None
    gpus_per_run: int | None = None  # local, slurm
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    folder: str | None = None  # submitit's job folder (default: <runs>/local/%j or <runs>/slurm/%j)
    poll_s: float = 0.5

    def check(self) -> None:
        """Every check of the launcher options, before any cell is resolved or run."""
        if self.launcher not in LAUNCHERS:
            raise LaunchError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")
        if self.launcher != "local" and self.jobs is not None:
            raise LaunchError(f"--jobs needs --launcher local (got --launcher {self.launcher}); with slurm use "
                              "--array-parallelism")
        _at_least(("--jobs", self.jobs, 1), ("--threads", self.threads, 1))
        given = self.slurm.given()
        if self.launcher != "slurm" and given:
            raise LaunchError(f"{given[0]} needs --launcher slurm")
        if self.launcher == "inline" and self.gpus_per_run is not None:
            raise LaunchError("--gpus-per-run needs --launcher local or slurm (inline uses --device)")
        _at_least(("--gpus-per-run", self.gpus_per_run, 0))
        if self.launcher == "slurm":
            slurm.require()
            s = self.slurm
            _at_least(("--time", s.time_min, 1), ("--cpus-per-run", s.cpus_per_run, 1),
                      ("--array-parallelism", s.array_parallelism, 1))
            slurm.check_partition(s.partition)


def _at_least(*checks) -> None:
    for name, value, least in checks:
        if value is not None and value < least:
            raise LaunchError(f"{name} must be at least {least}, got {value}")


def parse_slurm_params(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LaunchError(f"--slurm expects KEY=VALUE (an sbatch option without '--'), got {item!r}")
        out[key.strip().lstrip("-").replace("-", "_")] = value
    return out


# ----- the loop -----
def describe(st: CellState, action: Action) -> str:
    s = st.state
    if s.elsewhere:
        return f"running elsewhere ({st.detail})"
    if action is Action.CONFLICT:
        return f"not run: {st.detail}"
    if s is RunState.DONE:
        return "to run (--force)" if action is Action.RUN else "finished"
    if s is RunState.STALE:
        return f"stale, to run ({st.detail})"
    if s is RunState.CORRUPT:
        return f"to run ({st.detail})"
    if s is RunState.FAILED:
        return f"to run (failed before: {str(st.detail).splitlines()[0] if st.detail else '?'})"
    return "to run"


def dry_run(cells: list[Cell], force: bool = False) -> int:
    """Per cell what a sweep would do; submits nothing."""
    rows = [(st, st.action(force)) for st in map(cell_state, cells)]
    for i, (st, action) in enumerate(rows, 1):
        _say(f"[{i}/{len(rows)}] {st.label}: {describe(st, action)}")
    c = Counter("running elsewhere" if st.state.elsewhere else "finished" if action is Action.SKIP
                else action.value for st, action in rows)
    _say(f"dry run: {c.get('run', 0)} to run, {c.get('finished', 0)} finished, "
         f"{c.get('running elsewhere', 0)} running elsewhere, {c.get('conflict', 0)} conflicting; nothing submitted")
    return 0


class Tally:
    """Reports each cell as `[i/n] <cell>: …` and counts run, skipped and failed cells."""

    def __init__(self, n: int):
        self.n, self.counts = n, Counter()

    def label(self, i: int, cell: Cell) -> str:
        return f"[{i}/{self.n}] {cell.label}"

    def skip(self, i: int, st: CellState, action: Action) -> None:
        _say(f"{self.label(i, st.cell)}: skip ({describe(st, action)})")
        self.counts["skipped"] += 1

    def ended(self, i: int, cell: Cell, out: dict) -> None:
        """A `run_cell` outcome: trained ("done"), or finished or running elsewhere by then (skipped)."""
        if out.get("status") == ELSEWHERE:
            text = f"skipped, running elsewhere ({locks.describe_owner(out.get('owner') or {})})"
        elif "acc_last" in out:
            text = f"{out['status']}: acc_last {out['acc_last']:.2f}%  acc_max_over_epochs " \
                   f"{out['acc_max_over_epochs']:.2f}%"
        else:
            text = str(out.get("status"))
        _say(f"{self.label(i, cell)}: {text}")
        self.counts["done" if out.get("status") == TRAINED else "skipped"] += 1

    def failed(self, text: str, stream=None) -> None:
        print(text, file=stream or sys.stdout, flush=True)
        self.counts["failed"] += 1

    def summary(self) -> int:
        c = self.counts
        _say(f"sweep: {c['done']} run, {c['skipped']} skipped, {c['failed']} failed")
        return 1 if c["failed"] else 0


def launch(cells: list[Cell], options: LaunchOptions) -> int:
    """Run a sweep's cells: each cell's state is read just before it would start (another sweep may have taken or
    finished it meanwhile), then it is skipped or handed to the executor `options.launcher` names. Exit code: 1 when
    a cell failed."""
    options.check()
    executor = EXECUTORS[options.launcher](cells, options)
    tally = Tally(len(cells))
    try:
        for i, cell in enumerate(cells, 1):
            executor.wait_for_slot(tally)
            st = cell_state(cell)
            action = st.action(options.force)
            if action is Action.RUN:
                executor.submit(i, cell, tally)
            else:
                tally.skip(i, st, action)
        executor.drain(tally)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: no run may go on training without the sweep
        executor.stop()
        raise
    return executor.finish(tally)


class Inline:
    """Each cell in this process, one after another."""

    def __init__(self, cells: list[Cell], options: LaunchOptions):
        self.options = options

    def wait_for_slot(self, tally: Tally) -> None:
        pass

    def submit(self, i: int, cell: Cell, tally: Tally) -> None:
        label = tally.label(i, cell)
        _say(f"{label}: run")
        try:
            tally.ended(i, cell, run_cell(cell.run, force=self.options.force))
        except reported_errors() as e:  # the message says what to fix; the other cells go on
            tally.failed(f"{label}: FAILED: {error_message(e)}", sys.stderr)
        except Exception as e:  # noqa: BLE001 (a bug: recorded in failed.json; re-raised unless keep_going)
            if not self.options.keep_going:
                raise
            tally.failed(f"{label}: FAILED: {type(e).__name__}: {e}", sys.stderr)

    def drain(self, tally: Tally) -> None:
        pass

    def stop(self) -> None:
        pass

    def finish(self, tally: Tally) -> int:
        return tally.summary()


# ----- local -----
def visible_gpus() -> list[int]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        import torch

        n = torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        n = 0
    if env is not None and env.strip() and all(x.strip().isdigit() for x in env.split(",")):
        return [int(x) for x in env.split(",")][:n] if n else []
    return list(range(n))


def local_slots(jobs: int | None, gpus_per_run: int | None, device: str) -> list[list[int]]:
    """One entry per concurrent run: the GPU indices it gets (empty on CPU)."""
    _at_least(("--jobs", jobs, 1), ("--gpus-per-run", gpus_per_run, 0))
    gpus = visible_gpus() if device != "cpu" else []
    per = (1 if gpus else 0) if gpus_per_run is None else gpus_per_run
    if per and len(gpus) < per:
        raise LaunchError(f"--gpus-per-run {per} but this machine shows {len(gpus)} GPU(s)")
    if per:
        groups = [gpus[i:i + per] for i in range(0, len(gpus) - per + 1, per)]
        if jobs is not None and jobs > len(groups):
            raise LaunchError(f"--jobs {jobs} with --gpus-per-run {per} needs {jobs * per} GPUs; "
                              f"{len(gpus)} are visible")
        return groups[:jobs] if jobs else groups
    return [[] for _ in range(jobs or 1)]


class Local(Inline):
    """N processes on this machine, each started through submitit's LocalExecutor. The slots (how many runs at once,
    which GPUs each gets) and the retry of an interrupted run are scheduled here: LocalExecutor starts every job it is
    given at once, with no queue, no limit and no GPU pool."""

    def __init__(self, cells: list[Cell], options: LaunchOptions):
        import submitit

        super().__init__(cells, options)
        runtime = cells[0].run.runtime if cells else None
        self.slots = local_slots(options.jobs, options.gpus_per_run, runtime.device if runtime else "auto")
        self.threads = options.threads or max(1, (os.cpu_count() or 1) // len(self.slots))
        self.folder = Path(options.folder or Path(runtime.runs_dir if runtime else "runs") / "local" / "%j")
        self.executor = submitit.LocalExecutor(folder=self.folder)
        self.free = list(range(len(self.slots)))
        self.running: dict = {}  # job id -> (job, index, cell, slot, tries)
        _say(f"local: up to {len(self.slots)} runs at once, {self.threads} thread(s) each"
             + (f", GPUs {self.slots}" if any(self.slots) else "") + f"; logs under {self.folder.parent}/")

    def submit(self, i: int, cell: Cell, tally: Tally, tries: int = 0) -> None:
        slot = self.free.pop(0)
        gpus = self.slots[slot]
        self.executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=len(gpus), visible_gpus=gpus)
        run = cell.run.with_runtime(threads=cell.run.runtime.threads or self.threads)
        job = self.executor.submit(CellJob(), run, self.options.force and tries == 0, tries > 0)
        self.running[job.job_id] = (job, i, cell, slot, tries)
        _say(f"{tally.label(i, cell)}: started (pid {job.job_id}{', GPU ' + ','.join(map(str, gpus)) if gpus else ''})")

    def wait_for_slot(self, tally: Tally) -> None:
        while not self._collect(tally):
            time.sleep(self.options.poll_s)

    def drain(self, tally: Tally) -> None:
        while self.running:
            time.sleep(self.options.poll_s)
            self._collect(tally)

    def _collect(self, tally: Tally) -> bool:
        """Report the runs that ended (an interrupted one starts again, resuming); whether a slot is free."""
        for job_id, (job, i, cell, slot, tries) in list(self.running.items()):
            if not job.done():
                continue
            del self.running[job_id]
            self.free.append(slot)
            try:
                tally.ended(i, cell, job.result())
            except Exception as e:  # noqa: BLE001 (a failed cell does not stop the others)
                st = cell_state(cell)
                if st.state is RunState.MISSING and tries + 1 < LOCAL_MAX_RETRIES:  # interrupted, not failed
                    _say(f"{tally.label(i, cell)}: interrupted (job {job.job_id}); requeued")
                    self.submit(i, cell, tally, tries + 1)
                    continue
                first = str(e).strip().splitlines()
                why = st.detail.splitlines()[0] if st.detail else (first[-1] if first else type(e).__name__)
                tally.failed(f"{tally.label(i, cell)}: FAILED (job {job.job_id}, log {job.paths.stderr}): {why}")
        return bool(self.free)

    def stop(self) -> None:
        stop_local_jobs(self.running.values())


def stop_local_jobs(running, wait_s: float = 30.0) -> None:
    """Stop the running cells (`running`: (job, index, cell, …) tuples) and wait for them to end. A run whose lock
    names its process is sent SIGTERM (it stops cleanly: files being written removed, lock released; its submitit
    controller then ends by itself); the others, and any still running after `wait_s`, are cancelled through
    submitit (SIGINT, then SIGKILL). A lock a killed run could not release is removed."""
    running = [(job, cell) for job, _, cell, *_ in running]
    for job, cell in running:
        pid = _local_run_pid(cell)
        if pid is None:
            job.cancel()
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    for grace in (wait_s, 5.0):
        deadline = time.time() + grace
        while any(not job.done() for job, _ in running) and time.time() < deadline:
            time.sleep(0.1)
        for job, _ in running:
            if not job.done():
                job.cancel()
    for _, cell in running:
        owner, _ = locks.read_lock(cell.work_dir)
        if owner and not locks.owner_alive(owner):
            locks.clear(cell.work_dir, locks.LOCK_NAME)
    if running:
        _say(f"stopped {len(running)} running cell(s): " + ", ".join(cell.label for _, cell in running))


def _local_run_pid(cell: Cell) -> int | None:
    """The pid of the process training `cell` on this machine, from its lock."""
    owner, _ = locks.read_lock(cell.work_dir)
    if not owner or owner.get("job_id") != "local" or owner.get("host") != locks.owner_info()["host"]:
        return None
    try:
        return int(owner["pid"])
    except (KeyError, TypeError, ValueError):
        return None


# ----- slurm -----
def slurm_executor(folder, options: SlurmOptions, cpus_per_run: int = 1, gpus_per_run: int | None = None):
    import submitit

    executor = submitit.SlurmExecutor(folder=folder, python=sys.executable)
    params = dict(time=int(options.time_min), cpus_per_task=int(cpus_per_run), job_name=options.job_name,
                  setup=list(options.setup or []),
                  additional_parameters=dict(chdir=os.getcwd(), **(options.extra or {})))
    for key, value in (("partition", options.partition), ("gpus_per_node", gpus_per_run), ("mem", options.mem),
                       ("array_parallelism", options.array_parallelism)):
        if value:
            params[key] = value if key in ("partition", "mem") else int(value)
    executor.update_parameters(**params)
    return executor


class Slurm(Inline):
    """One submitit job array, one task per cell to run, submitted once every cell has been looked at."""

    def __init__(self, cells: list[Cell], options: LaunchOptions):
        super().__init__(cells, options)
        self.cells, self.todo = cells, []

    def submit(self, i: int, cell: Cell, tally: Tally) -> None:
        self.todo.append(cell)

    def drain(self, tally: Tally) -> None:
        if not self.todo:
            _say("slurm: nothing to submit")
            return
        o = self.options
        cpus = o.slurm.cpus_per_run or o.threads or 1
        folder = Path(o.folder or Path(self.cells[0].run.runtime.runs_dir) / "slurm" / "%j")
        executor = slurm_executor(folder, o.slurm, cpus, o.gpus_per_run)
        runs = [c.run.with_runtime(threads=o.threads or c.run.runtime.threads or cpus, progress=False)
                for c in self.todo]
        jobs = executor.map_array(CellJob(), runs, [o.force] * len(runs), [False] * len(runs))
        from ..utils.io import atomic_write_json

        for cell, job in zip(self.todo, jobs):
            atomic_write_json(cell.work_dir / locks.QUEUED_NAME, dict(job_id=job.job_id, log_dir=str(folder),
                                                                      submitted_at=locks._now()))
            _say(f"{cell.label}: submitted as SLURM job {job.job_id}")
        array_id = jobs[0].job_id.split("_")[0]
        _say(f"slurm: submitted {len(jobs)} cell(s) as job array {array_id}; "
             f"logs in {str(folder).replace('%j', array_id + '_<i>')}")

    def finish(self, tally: Tally) -> int:
        if self.options.slurm.wait and self.todo:
            return wait_for(self.todo, timeout_s=self.options.slurm.wait_timeout_s)
        return 0


EXECUTORS = dict(inline=Inline, local=Local, slurm=Slurm)


def wait_for(cells: list[Cell], timeout_s: float | None = None, poll_s: float = 3.0) -> int:
    """Block until no cell is queued or running; print the final status. 1 if any cell is not done."""
    from .status import format_status, status_frame

    start = time.time()
    time.sleep(min(poll_s, 1.0))
    while True:
        slurm.job_states(fresh=True)
        if not any(cell_state(c).state.elsewhere for c in cells):
            break
        if timeout_s is not None and time.time() - start > timeout_s:
            _say(f"wait: gave up after {timeout_s:.0f} s")
            break
        time.sleep(poll_s)
    frame = status_frame(cells)
    _say(format_status(frame))
    return 0 if (frame["state"] == RunState.DONE.value).all() else 1
