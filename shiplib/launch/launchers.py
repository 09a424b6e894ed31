"""Where cells run: `inline` (this process, one after another), `local` (N processes on this machine, submitit's
LocalExecutor) or `slurm` (one submitit job array, one task per cell). All three run `job.run_cell`, so the
numbers, locks and failure records are the same whichever is used."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import time
from pathlib import Path

from ..errors import ConfigError, reported_errors
from ..errors import message as error_message
from . import locks, slurm
from .cells import TO_RUN, Cell, cell_state
from .job import CellJob, run_cell

#: How long a LocalExecutor job may run (submitit's default is 2 minutes).
LOCAL_TIMEOUT_MIN = 60 * 24 * 30
LOCAL_MAX_RETRIES = 3


class LaunchError(ConfigError):
    """Bad launcher options; the message says what to change."""


def _say(text: str) -> None:
    print(text, flush=True)


def plan(cells: list[Cell], force: bool = False) -> list[tuple[Cell, dict, str]]:
    """(cell, state, action) per cell; action: "run", "skip" (done/running/queued) or "conflict"."""
    out = []
    for cell in cells:
        st = cell_state(cell)
        if st["state"] in ("running", "queued"):
            action = "skip"
        elif force:
            action = "run"
        elif st["state"] in TO_RUN:
            action = "run"
        elif st["state"] == "conflict":
            action = "conflict"
        else:
            action = "skip"
        out.append((cell, st, action))
    return out


def describe(st: dict, action: str) -> str:
    s = st["state"]
    if s in ("running", "queued"):
        return f"running elsewhere ({st['detail']})"
    if action == "conflict":
        return f"not run: {st['detail']}"
    if s == "done":
        return "to run (--force)" if action == "run" else "finished"
    if s == "stale":
        return f"stale, to run ({st['detail']})"
    if s == "corrupt":
        return f"to run ({st['detail']})"
    if s == "failed":
        return f"to run (failed before: {str(st['detail']).splitlines()[0] if st['detail'] else '?'})"
    return "to run"


def dry_run(cells: list[Cell], force: bool = False) -> int:
    from collections import Counter

    rows = plan(cells, force)
    for i, (cell, st, action) in enumerate(rows, 1):
        _say(f"[{i}/{len(rows)}] {cell.label}: {describe(st, action)}")
    c = Counter("running elsewhere" if st["state"] in ("running", "queued") else action if action != "skip"
                else "finished" for _, st, action in rows)
    _say(f"dry run: {c.get('run', 0)} to run, {c.get('finished', 0)} finished, "
         f"{c.get('running elsewhere', 0)} running elsewhere, {c.get('conflict', 0)} conflicting; nothing submitted")
    return 0


def _report(out: dict) -> str:
    if out.get("status") == "running elsewhere":
        return f"skipped, running elsewhere ({locks.describe_owner(out.get('owner') or {})})"
    if "acc_last" in out:
        return (f"{out['status']}: acc_last {out['acc_last']:.2f}%  acc_max_over_epochs "
                f"{out['acc_max_over_epochs']:.2f}%")
    return str(out.get("status"))


# ----- inline -----
def launch_inline(cells: list[Cell], force: bool = False, keep_going: bool = False) -> int:
    rows = plan(cells, force)
    done = skipped = 0
    failed = []
    for i, (cell, st, action) in enumerate(rows, 1):
        label = f"[{i}/{len(rows)}] {cell.label}"
        if action != "run":
            _say(f"{label}: skip ({describe(st, action)})")
            skipped += 1
            continue
        _say(f"{label}: run")
        try:
            out = run_cell(cell.cfg, force=force)
        except reported_errors() as e:  # the message says what to fix; the other cells go on
            failed.append(cell.label)
            print(f"{label}: FAILED: {error_message(e)}", file=sys.stderr, flush=True)
            continue
        except Exception as e:  # noqa: BLE001 (a bug: recorded in failed.json; re-raised unless keep_going)
            if not keep_going:
                raise
            failed.append(cell.label)
            print(f"{label}: FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            continue
        _say(f"{label}: {_report(out)}")
        done += out.get("status") == "done"
        skipped += out.get("status") != "done"
    _say(f"sweep: {done} run, {skipped} skipped, {len(failed)} failed")
    return 1 if failed else 0


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
    if jobs is not None and jobs < 1:
        raise LaunchError(f"--jobs must be at least 1, got {jobs}")
    if gpus_per_run is not None and gpus_per_run < 0:
        raise LaunchError(f"--gpus-per-run must be 0 or more, got {gpus_per_run}")
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


def launch_local(cells: list[Cell], jobs: int | None = None, threads: int | None = None,
                 gpus_per_run: int | None = None, force: bool = False, folder=None, poll_s: float = 0.5) -> int:
    import submitit

    device = cells[0].cfg.device if cells else "auto"
    slots = local_slots(jobs, gpus_per_run, device)
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // len(slots))
    folder = Path(folder or Path(cells[0].cfg.runs_dir if cells else "runs") / "local" / "%j")
    executor = submitit.LocalExecutor(folder=folder)
    free = list(range(len(slots)))
    queue = [(cell, 0) for cell in cells]
    running: dict = {}
    counts = dict(done=0, skipped=0, failed=0)
    n = len(cells)
    index = {id(c): i for i, c in enumerate(cells, 1)}
    _say(f"local: up to {len(slots)} runs at once, {threads} thread(s) each"
         + (f", GPUs {slots}" if any(slots) else "") + f"; logs under {folder.parent}/")
    try:
        while queue or running:
            for job_id, (job, cell, slot, tries) in list(running.items()):
                if not job.done():
                    continue
                del running[job_id]
                free.append(slot)
                label = f"[{index[id(cell)]}/{n}] {cell.label}"
                try:
                    out = job.result()
                    _say(f"{label}: {_report(out)}")
                    counts["done" if out.get("status") == "done" else "skipped"] += 1
                except Exception as e:  # noqa: BLE001 (a failed cell does not stop the others)
                    st = cell_state(cell)
                    if st["state"] in ("pending",) and tries + 1 < LOCAL_MAX_RETRIES:  # interrupted, not failed
                        _say(f"{label}: interrupted (job {job.job_id}); requeued")
                        queue.append((cell, tries + 1))
                        continue
                    first = str(e).strip().splitlines()
                    why = st["detail"].splitlines()[0] if st["detail"] else (first[-1] if first else type(e).__name__)
                    _say(f"{label}: FAILED (job {job.job_id}, log {job.paths.stderr}): {why}")
                    counts["failed"] += 1
            while queue and free:
                cell, tries = queue.pop(0)
                label = f"[{index[id(cell)]}/{n}] {cell.label}"
                st = cell_state(cell)  # checked just before starting: another sweep may have taken or finished it
                action = plan([cell], force and tries == 0)[0][2] if tries == 0 else "run"
                if action != "run":
                    _say(f"{label}: skip ({describe(st, action)})")
                    counts["skipped"] += 1
                    continue
                slot = free.pop(0)
                gpus = slots[slot]
                executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=len(gpus), visible_gpus=gpus)
                cfg = dataclasses.replace(cell.cfg, threads=threads if cell.cfg.threads is None else cell.cfg.threads)
                job = executor.submit(CellJob(), cfg, force and tries == 0, tries > 0)
                running[job.job_id] = (job, cell, slot, tries)
                _say(f"{label}: started (pid {job.job_id}{', GPU ' + ','.join(map(str, gpus)) if gpus else ''})")
            if queue or running:
                time.sleep(poll_s)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: no run may go on training without the sweep
        stop_local_jobs(running.values())
        raise
    _say(f"sweep: {counts['done']} run, {counts['skipped']} skipped, {counts['failed']} failed")
    return 1 if counts["failed"] else 0


def stop_local_jobs(running, wait_s: float = 30.0) -> None:
    """Stop the running cells and wait for them to end. A run whose lock names its process is sent SIGTERM (it
    stops cleanly: files being written removed, lock released; its submitit controller then ends by itself);
    the others, and any still running after `wait_s`, are cancelled through submitit (SIGINT, then SIGKILL). A lock
    a killed run could not release is removed."""
    running = list(running)
    for job, cell, *_ in running:
        pid = _local_run_pid(cell)
        if pid is None:
            job.cancel()
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    for grace in (wait_s, 5.0):
        deadline = time.time() + grace
        while any(not job.done() for job, *_ in running) and time.time() < deadline:
            time.sleep(0.1)
        for job, *_ in running:
            if not job.done():
                job.cancel()
    for job, cell, *_ in running:
        owner, _ = locks.read_lock(cell.work_dir)
        if owner and not locks.owner_alive(owner):
            locks.clear(cell.work_dir, locks.LOCK_NAME)
    if running:
        _say(f"stopped {len(running)} running cell(s): " + ", ".join(cell.label for _, cell, *_ in running))


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
def parse_slurm_params(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LaunchError(f"--slurm expects KEY=VALUE (an sbatch option without '--'), got {item!r}")
        out[key.strip().lstrip("-").replace("-", "_")] = value
    return out


def slurm_executor(folder, partition=None, time_min=24 * 60, cpus_per_run=1, gpus_per_run=0, mem=None,
                   array_parallelism=None, setup=(), extra=None, job_name="shiplib"):
    import submitit

    executor = submitit.SlurmExecutor(folder=folder, python=sys.executable)
    params = dict(time=int(time_min), cpus_per_task=int(cpus_per_run), job_name=job_name,
                  setup=list(setup or []), additional_parameters=dict(chdir=os.getcwd(), **(extra or {})))
    if partition:
        params["partition"] = partition
    if gpus_per_run:
        params["gpus_per_node"] = int(gpus_per_run)
    if mem:
        params["mem"] = str(mem)
    if array_parallelism:
        params["array_parallelism"] = int(array_parallelism)
    executor.update_parameters(**params)
    return executor


def check_slurm_options(partition=None, time_min=None, cpus_per_run=None, gpus_per_run=None,
                        array_parallelism=None) -> None:
    slurm.require()
    for name, value, least in (("--time", time_min, 1), ("--cpus-per-run", cpus_per_run, 1),
                               ("--gpus-per-run", gpus_per_run, 0), ("--array-parallelism", array_parallelism, 1)):
        if value is not None and value < least:
            raise LaunchError(f"{name} must be at least {least}, got {value}")
    slurm.check_partition(partition)


def launch_slurm(cells: list[Cell], force: bool = False, folder=None, threads=None, wait: bool = False,
                 wait_timeout_s: float | None = None, **options) -> int:
    check_slurm_options(options.get("partition"), options.get("time_min"), options.get("cpus_per_run"),
                        options.get("gpus_per_run"), options.get("array_parallelism"))
    rows = plan(cells, force)
    todo = [cell for cell, _, action in rows if action == "run"]
    for i, (cell, st, action) in enumerate(rows, 1):
        if action != "run":
            _say(f"[{i}/{len(rows)}] {cell.label}: skip ({describe(st, action)})")
    if not todo:
        _say("slurm: nothing to submit")
        return 0
    cpus = options.get("cpus_per_run") or threads or 1
    folder = Path(folder or Path(cells[0].cfg.runs_dir) / "slurm" / "%j")
    executor = slurm_executor(folder, **{**options, "cpus_per_run": cpus})
    cfgs = [dataclasses.replace(c.cfg, threads=threads or c.cfg.threads or cpus, progress=False) for c in todo]
    jobs = executor.map_array(CellJob(), cfgs, [force] * len(cfgs), [False] * len(cfgs))
    from ..utils.io import atomic_write_json

    for cell, job in zip(todo, jobs):
        atomic_write_json(cell.work_dir / locks.QUEUED_NAME, dict(job_id=job.job_id, log_dir=str(folder),
                                                                  submitted_at=locks._now()))
        _say(f"{cell.label}: submitted as SLURM job {job.job_id}")
    array_id = jobs[0].job_id.split("_")[0]
    _say(f"slurm: submitted {len(jobs)} cell(s) as job array {array_id}; "
         f"logs in {str(folder).replace('%j', array_id + '_<i>')}")
    if wait:
        return wait_for(todo, timeout_s=wait_timeout_s)
    return 0


def wait_for(cells: list[Cell], timeout_s: float | None = None, poll_s: float = 3.0) -> int:
    """Block until no cell is queued or running; print the final status. 1 if any cell is not done."""
    from .status import format_status, status_frame

    start = time.time()
    time.sleep(min(poll_s, 1.0))
    while True:
        slurm.job_states(fresh=True)
        states = [cell_state(c)["state"] for c in cells]
        if not any(s in ("queued", "running") for s in states):
            break
        if timeout_s is not None and time.time() - start > timeout_s:
            _say(f"wait: gave up after {timeout_s:.0f} s")
            break
        time.sleep(poll_s)
    frame = status_frame(cells)
    _say(format_status(frame))
    return 0 if (frame["state"] == "done").all() else 1
