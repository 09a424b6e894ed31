"""`sweep --launcher slurm` on a real one-node SLURM started by scripts/slurm_local.sh: the same numbers as inline,
and a preempted job is requeued and resumes from its epoch checkpoint to the uninterrupted result."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _launch_grid import epochs_logged, grid_args, inline_reference, metrics

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm_local.sh"
#: The one result of the preemption test's one-cell grid, under each grid's root.
RESULT = "results/mini/mini_dsprites_loc/linear/seed1.json"


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    if proc.returncode == 3:  # apt-get could not install slurm-wlm/munge (no root, no repository)
        pytest.skip(f"SLURM cannot be installed here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    # the script says where its cluster lives (its last line: `export SLURM_CONF=<dir>/slurm.conf`)
    conf = proc.stdout.strip().splitlines()[-1].removeprefix("export SLURM_CONF=")
    assert conf.endswith("slurm.conf"), proc.stdout
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    try:
        yield os.environ["SLURM_CONF"]
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def _shiplib(*argv, timeout=400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shiplib", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_slurm_grid_matches_inline(slurm_cluster, tmp_path):
    ref = inline_reference()
    proc = _shiplib("sweep", *grid_args(tmp_path), "--launcher", "slurm", "--cpus-per-run", "1",
                    "--array-parallelism", "2", "--time", "30", "--wait")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "as job array" in proc.stdout and "4 cells: 4 done" in proc.stdout
    assert metrics(tmp_path) == ref
    logs = list((tmp_path / "runs" / "slurm").glob("*_*/*_0_log.out"))
    assert len(logs) == 4  # runs/slurm/<array>_<i>/
    # nothing left to submit
    again = _shiplib("sweep", *grid_args(tmp_path), "--launcher", "slurm", "--cpus-per-run", "1")
    assert again.returncode == 0 and "nothing to submit" in again.stdout


def _squeue(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


def _diagnosis(job: str, root: Path) -> str:
    """What SLURM and the job's own logs say, for a failure message."""
    def run(*argv):
        out = subprocess.run(list(argv), capture_output=True, text=True)
        return out.stdout + out.stderr
    parts = [run("scontrol", "show", "job", job), run("sinfo", "-R")]
    state = Path(os.environ["SLURM_CONF"]).parent  # the cluster's folder: slurm.conf, state and logs
    for log in [state / "log" / "slurmctld.log", state / "log" / "slurmd.log",
                *sorted((root / "runs" / "slurm").glob("*/*_log.*"))]:
        if log.is_file():
            parts.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:]))
    return "\n".join(parts)


def test_preempted_job_resumes_from_checkpoint(slurm_cluster, tmp_path):
    roots = dict(preempted=tmp_path / "a", reference=tmp_path / "b")
    args = dict((k, grid_args(r, tasks=["mini_dsprites_loc"], methods=["linear"], epochs=3)) for k, r in roots.items())
    jobs = {}
    for name, a in args.items():
        proc = _shiplib("sweep", *a, "--launcher", "slurm", "--cpus-per-run", "1", "--time", "30")
        assert proc.returncode == 0, proc.stderr
        jobs[name] = proc.stdout.split("submitted as SLURM job ")[1].split()[0]
    wd = roots["preempted"] / "runs/mini/mini_dsprites_loc/linear/seed1"
    deadline = time.time() + 240
    while not (wd / "checkpoint.pt").is_file():
        assert time.time() < deadline, "no checkpoint after 240 s"
        time.sleep(1)
    job = jobs["preempted"]
    # the signal SLURM sends before a preemption/time limit (submitit: USR2, --signal=USR2@90)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    deadline = time.time() + 60
    while (state := _squeue(job)) != "PENDING":  # submitit checkpoints and requeues the job
        assert time.time() < deadline, f"job {job} not requeued: {state!r}\n{_diagnosis(job, roots['preempted'])}"
        time.sleep(0.5)
    # SLURM holds a requeued job for ~2 minutes (BeginTime); start it sooner to keep the test short, but not within
    # the second its old credential was revoked: slurmd refuses a credential created in that second ("Job credential
    # revoked") and the job is killed instead of resumed.
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now+2"], check=True)
    done = _shiplib("sweep", *args["preempted"], "--status")
    for name, root in roots.items():
        deadline = time.time() + 300
        jid, result = jobs[name], root / RESULT
        while not result.is_file():
            ended = not _squeue(jid)  # a job writes its result before it ends
            assert not ended or result.is_file(), f"{name}: ended without a result\n{_diagnosis(jid, root)}"
            assert time.time() < deadline, f"{name}: no result after 300 s\n{_diagnosis(jid, root)}"
            time.sleep(2)
    a, b = (json.loads((roots[name] / RESULT).read_text()) for name in ("preempted", "reference"))
    assert a["resumed_from_epoch"] is not None and b["resumed_from_epoch"] is None
    assert (a["acc_last"], a["acc_max_over_epochs"]) == (b["acc_last"], b["acc_max_over_epochs"])
    strip = lambda h: [{k: v for k, v in e.items() if "seconds" not in k} for e in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    assert epochs_logged(wd / "log.jsonl") == [0, 1, 2]
    err = next((roots["preempted"] / "runs/slurm").glob("*/*_0_log.err")).read_text()
    assert "Caught signal SIGUSR2" in err and "resuming" in err
    assert done.returncode == 0
