"""scripts/run_mini_benchmark.sh: a stage whose runs are all committed finishes cleanly and starts nothing."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_scaled_stage_says_it_is_settled_once_ship_and_vpt_deep_and_the_ablations_are_done(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, TUNE_METHODS="ship vpt_deep")
    done = subprocess.run(["bash", "scripts/run_mini_benchmark.sh", "scaled", str(REPO / "results"),
                           str(tmp_path / "runs")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "scaled: every method and task settled"
    assert not (tmp_path / "runs").exists()  # nothing was run
