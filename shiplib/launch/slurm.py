"""Small wrappers around the SLURM command line: is it there, which partitions, which jobs are alive."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

from ..errors import ShiplibError

#: squeue states of a job that will still run (or is running).
ALIVE_STATES = {"PENDING", "RUNNING", "SUSPENDED", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "PREEMPTED", "RESV_DEL_HOLD"}
_CACHE: dict = {}
_CACHE_SECONDS = 2.0


class SlurmError(ShiplibError, RuntimeError):
    """SLURM is absent or refuses a request; the message says what to do."""

    exit_code = 2  # the sweep cannot be launched as asked: change --launcher or its options


def available() -> bool:
    return shutil.which("sbatch") is not None and shutil.which("squeue") is not None


def require() -> None:
    if not available():
        raise SlurmError("SLURM not found: `sbatch`/`squeue` are not on PATH; use --launcher local or start "
                         "scripts/slurm_local.sh (then export SLURM_CONF=…)")


def _run(cmd: list[str], timeout: float = 30) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise SlurmError(f"`{' '.join(cmd)}` failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}")
    return out.stdout


def partitions() -> list[str]:
    """Partition names `sinfo` lists (without the '*' of the default one)."""
    return sorted({p.strip().rstrip("*") for p in _run(["sinfo", "-h", "-o", "%P"]).split() if p.strip()})


def check_partition(name: str | None) -> None:
    if name is None:
        return
    names = partitions()
    if name not in names:
        raise SlurmError(f"unknown SLURM partition {name!r}; sinfo lists: {', '.join(names) or '(none)'}")


def job_states(fresh: bool = False) -> dict[str, str] | None:
    """{job id: state} of every job squeue knows (array tasks under both "A_T" and their own id);
    None when squeue cannot be asked (then nobody can tell whether a SLURM job is alive)."""
    now = time.monotonic()
    if not fresh and _CACHE.get("t", -1e9) > now - _CACHE_SECONDS:
        return _CACHE["states"]
    if shutil.which("squeue") is None:
        states = None
    else:
        try:
            text = _run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%A|%T"])
            states = {}
            for line in text.splitlines():
                parts = line.strip().split("|")
                if len(parts) == 3:
                    states[parts[0]] = states[parts[1]] = parts[2]
        except (SlurmError, subprocess.TimeoutExpired, OSError):
            states = None
    _CACHE.update(t=now, states=states)
    return states


def job_alive(job_id: str) -> bool | None:
    """True/False whether a SLURM job (raw or "A_T" id) is pending or running; None when unknown."""
    states = job_states()
    if states is None:
        return None
    return states.get(str(job_id)) in ALIVE_STATES


def current_job() -> dict | None:
    """The SLURM job this process runs in: {"job_id": "A_T" or id, "raw_id": id}, or None outside SLURM."""
    raw = os.environ.get("SLURM_JOB_ID")
    if not raw:
        return None
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return dict(job_id=f"{array}_{task}" if array and task else raw, raw_id=raw)
