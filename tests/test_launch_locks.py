"""Per-cell locks, failure records, cell states, dry run and launcher option errors: no training (fast)."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shiplib.__main__ import main
from shiplib.launch import cell_state, grid_status, locks, make_cells, slurm
from shiplib.launch.cells import Cell

REPO = Path(__file__).resolve().parents[1]
HOST = socket.gethostname().split(".")[0]


def _write_lock(wd: Path, **owner) -> None:
    wd.mkdir(parents=True, exist_ok=True)
    base = dict(job_id="local", slurm_raw_id=None, host=HOST, pid=os.getpid(), started_at="x", token="t0")
    (wd / locks.LOCK_NAME).write_text(json.dumps({**base, **owner}))


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_is_exclusive_and_released(tmp_path):
    lock, owner = locks.acquire(tmp_path)
    assert lock is not None and owner is None
    data = json.loads((tmp_path / "lock.json").read_text())
    assert {"job_id", "host", "pid", "started_at"} <= set(data) and data["pid"] == os.getpid()
    again, holder = locks.acquire(tmp_path)  # our own pid is alive: the lock holds
    assert again is None and holder["token"] == data["token"]
    lock.release()
    assert not (tmp_path / "lock.json").exists()
    lock2, _ = locks.acquire(tmp_path)
    assert lock2 is not None
    lock.release()  # releasing an old handle does not remove somebody else's lock
    assert (tmp_path / "lock.json").exists()
    lock2.release()


def test_live_pid_holds_dead_pid_is_taken_over(tmp_path, sleeper):
    _write_lock(tmp_path, pid=sleeper.pid)
    lock, owner = locks.acquire(tmp_path)
    assert lock is None and owner["pid"] == sleeper.pid
    assert locks.live_owner(tmp_path)["pid"] == sleeper.pid
    _write_lock(tmp_path, pid=_dead_pid())
    assert locks.live_owner(tmp_path) is None
    lock, owner = locks.acquire(tmp_path)
    assert lock is not None and json.loads((tmp_path / "lock.json").read_text())["pid"] == os.getpid()
    lock.release()


def test_other_host_is_assumed_alive(tmp_path):
    _write_lock(tmp_path, host="elsewhere-node", pid=_dead_pid())
    lock, owner = locks.acquire(tmp_path)
    assert lock is None and owner["host"] == "elsewhere-node"


def test_slurm_owner_judged_by_squeue(tmp_path, monkeypatch):
    _write_lock(tmp_path, job_id="77_3", slurm_raw_id="81", host="node9", pid=1234)
    monkeypatch.setattr(slurm, "job_states", lambda fresh=False: {"77_3": "RUNNING", "81": "RUNNING"})
    assert locks.acquire(tmp_path)[0] is None
    monkeypatch.setattr(slurm, "job_states", lambda fresh=False: {"77_3": "PENDING", "81": "PENDING"})  # requeued
    assert locks.acquire(tmp_path)[0] is None
    monkeypatch.setattr(slurm, "job_states", lambda fresh=False: {})  # squeue no longer lists it
    lock, _ = locks.acquire(tmp_path)
    assert lock is not None
    lock.release()
    # the lock of *this* SLURM job (left before a requeue) is taken over by its new incarnation
    _write_lock(tmp_path, job_id="77_3", slurm_raw_id="81", host="node9", pid=1234)
    monkeypatch.setattr(slurm, "job_states", lambda fresh=False: {"77_3": "RUNNING", "81": "RUNNING"})
    monkeypatch.setenv("SLURM_JOB_ID", "81")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    lock, _ = locks.acquire(tmp_path)
    assert lock is not None and json.loads((tmp_path / "lock.json").read_text())["job_id"] == "77_3"
    lock.release()


def _contend(args):
    wd, hold = args
    lock, _ = locks.acquire(wd)
    if lock is None:
        return 0
    time.sleep(hold)
    lock.release()
    return 1


@pytest.mark.parametrize("stale_first", [False, True])
def test_exactly_one_of_many_processes_wins(tmp_path, stale_first):
    if stale_first:  # all race to take over the same dead owner's lock
        _write_lock(tmp_path, pid=_dead_pid())
    with mp.get_context("fork").Pool(8) as pool:
        wins = pool.map(_contend, [(str(tmp_path), 1.5)] * 8)
    assert sum(wins) == 1
    assert not (tmp_path / "lock.json").exists()


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    return make_cells(["mini_mnist", "mini_dsprites_loc"], ["linear"], [1, 2], epochs=1,
                      results=root / "results", runs=root / "runs")


def _fake_result(cell: Cell, sha: str) -> None:
    from shiplib.engine.results import write_result

    write_result(cell.result, dict(identity=cell.identity, acc_last=50.0, acc_max_over_epochs=60.0,
                                   backbone=dict(sha256=sha)))


def test_cell_states_status_table_and_dry_run(cells, capsys, sleeper):
    from shiplib.backbones.fingerprint import current_fingerprint

    done, stale, running, failed = cells
    _fake_result(done, current_fingerprint("mini", True))
    _fake_result(stale, "0" * 64)
    _write_lock(running.work_dir, pid=sleeper.pid)
    try:
        raise ValueError("loss exploded\nat step 3")
    except ValueError as e:
        import traceback

        locks.record_failure(failed.work_dir, e, traceback.format_exc())
    states = [cell_state(c).state for c in cells]
    assert states == ["done", "stale", "running", "failed"]
    frame = grid_status(["mini_mnist", "mini_dsprites_loc"], ["linear"], [1, 2], epochs=1,
                       results=done.run.runtime.results_dir, runs=done.run.runtime.runs_dir)
    assert list(frame["state"]) == states
    assert frame.loc[0, "acc_last"] == 50.0 and frame.loc[2, "job"] == f"{sleeper.pid}@{HOST}"
    assert "ValueError: loss exploded" in frame.loc[3, "detail"]
    grid = ["--tasks", "mini_mnist", "mini_dsprites_loc", "--methods", "linear", "--seeds", "1-2", "--epochs", "1",
            "--results", done.run.runtime.results_dir, "--runs", done.run.runtime.runs_dir]
    assert main(["status", *grid]) == 0
    out = capsys.readouterr().out
    assert f"running (pid {sleeper.pid}@{HOST})" in out and "failed: ValueError: loss exploded" in out
    assert "4 cells: 1 done, 1 running, 1 failed, 1 stale" in out
    assert main(["sweep", *grid, "--dry-run", "--launcher", "local", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "[1/4] mini_mnist linear seed 1: finished" in out and "seed 2: stale, to run (it was made with other" in out
    assert "running elsewhere (pid" in out and "to run (failed before: ValueError: loss exploded)" in out
    assert ("dry run: 2 to run, 1 finished, 1 running elsewhere" in out
            and not (Path(done.run.runtime.runs_dir) / "local").exists())
    # a queued SLURM job counts as running elsewhere; once squeue forgets it without a result: failed
    (failed.work_dir / "failed.json").unlink()
    (failed.work_dir / "queued.json").write_text(json.dumps(dict(job_id="5_1", log_dir=str(failed.work_dir / "%j"))))
    (failed.work_dir / "5_1").mkdir()
    (failed.work_dir / "5_1" / "5_1_0_log.err").write_text("srun: error: node died\nKilled\n")
    slurm._CACHE.update(t=time.monotonic() + 1e6, states={"5_1": "PENDING"})
    try:
        assert cell_state(failed).state == "queued"
        slurm._CACHE.update(states={})
        st = cell_state(failed)
        assert st.state == "failed" and "ended without a result" in st.detail and "Killed" in st.detail
    finally:
        slurm._CACHE.clear()


def _cli(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "shiplib", *argv], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=120)


GRID = ["sweep", "--tasks", "mini_mnist", "--methods", "linear", "--epochs", "1"]


@pytest.mark.parametrize("extra, message", [
    (["--launcher", "local", "--jobs", "0"], "error: --jobs must be at least 1, got 0"),
    (["--jobs", "2"], "error: --jobs needs --launcher local (got --launcher inline)"),
    (["--launcher", "local", "--partition", "gpu"], "error: --partition needs --launcher slurm"),
])
def test_bad_launcher_options_fail_in_one_line(extra, message, capsys, tmp_path):
    assert main([*GRID, "--results", str(tmp_path / "r"), "--runs", str(tmp_path / "w"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.strip() == message or err.strip().startswith(message), err
    assert len(err.strip().splitlines()) == 1


def test_slurm_missing_is_a_clear_error(tmp_path):
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + ":/nonexistent")
    proc = _cli(*GRID, "--launcher", "slurm", "--results", str(tmp_path / "r"), "--runs", str(tmp_path / "w"),
                env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: SLURM not found: `sbatch`/`squeue` are not on PATH; use --launcher local or start "
        "scripts/slurm_local.sh (then export SLURM_CONF=…)"]


def test_unknown_partition_asks_sinfo(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(slurm, "available", lambda: True)
    monkeypatch.setattr(slurm, "partitions", lambda: ["debug", "gpu"])
    assert main([*GRID, "--launcher", "slurm", "--partition", "nope", "--results", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown SLURM partition 'nope'; sinfo lists: debug, gpu"
    assert not (tmp_path / "r").exists()
