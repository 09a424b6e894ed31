"""`sweep --launcher local`: the same numbers as inline; concurrent sweeps run each cell once; failures are
recorded and do not stop the other cells; a re-run submits only what is missing or failed."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from _launch_grid import epochs_logged, grid_args, inline_reference, metrics

from shiplib.__main__ import main
from shiplib.engine.checkpoints import CheckpointStore, checkpoint_state

REPO = Path(__file__).resolve().parents[1]


def _sweep(*argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "shiplib", "sweep", *argv], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_local_jobs_2_matches_inline(tmp_path):
    ref = inline_reference()
    proc = _sweep(*grid_args(tmp_path), "--launcher", "local", "--jobs", "2")
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    assert "up to 2 runs at once, 1 thread(s) each" in out and "sweep: 4 run, 0 skipped, 0 failed" in out
    assert metrics(tmp_path) == ref
    assert list((tmp_path / "runs" / "local").iterdir())  # submitit's job folders (logs)


def test_concurrent_local_sweeps_run_each_cell_once(tmp_path, capsys):
    args = grid_args(tmp_path, tasks=["mini_mnist"], methods=["linear"], epochs=2, seeds="1-2")
    # seed 2 fails: its work dir holds the checkpoint of another configuration (an unreadable one would be moved
    # aside and the run restarted)
    bad = tmp_path / "runs/mini/mini_mnist/linear/seed2"
    CheckpointStore(bad / "checkpoint.pt", bad / "checkpoint.prev.pt").save(checkpoint_state(
        dict(trainable={}, optimizer={}), identity={"lr": -1.0}, fingerprint="other", epoch=0, history=[],
        elapsed=0.0))
    procs = [_sweep(*args, "--launcher", "local", "--jobs", "2") for _ in range(2)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [1, 1] or sorted(p.returncode for p in procs) == [0, 1], outs
    trained = sum(int(re.search(r"sweep: (\d+) run", o).group(1)) for o in outs)
    assert trained == 1, outs  # seed 1, by exactly one of the two sweeps
    for seed in (1,):
        wd = tmp_path / f"runs/mini/mini_mnist/linear/seed{seed}"
        assert epochs_logged(wd / "log.jsonl") == [0, 1]
        assert (tmp_path / f"results/mini/mini_mnist/linear/seed{seed}.json").is_file()
        assert not (wd / "lock.json").exists()
    assert (bad / "failed.json").is_file() and not (bad / "lock.json").exists()
    assert main(["status", *args]) == 0
    out = capsys.readouterr().out
    assert "seed 2: failed: " in out and "2 cells: 1 done, 1 failed" in out
    # the same sweep again runs only the failed cell (the other configuration's checkpoint removed)
    (bad / "checkpoint.pt").unlink()
    assert main(["sweep", *args, "--launcher", "local", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("skip (finished)") == 1 and "sweep: 1 run, 1 skipped, 0 failed" in out
    assert not (bad / "failed.json").exists() and epochs_logged(bad / "log.jsonl") == [0, 1]
