"""One lock file per cell, so that no (task, method, seed, settings) cell is trained twice at the same time.

`<work_dir>/lock.json` is created with O_CREAT|O_EXCL (exactly one process succeeds) and records its owner:
job id (the SLURM job, "A_T" for an array task, or "local"), host, pid, start time and a random token.
A lock whose owner is gone is stale and is taken over: same host and the pid is dead, or a SLURM job that squeue
no longer lists (a lock of *this* SLURM job, left by its run before a requeue, is also taken over). The take-over
itself is serialised by a second O_EXCL file (`lock.json.takeover`), so two processes never both remove a lock.
`release()` removes the lock only if it still holds our token.
A failed run leaves `<work_dir>/failed.json` (error and the last lines of its traceback) for `status`.
"""
from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import socket
import time
import uuid
from pathlib import Path

from . import slurm

LOCK_NAME = "lock.json"
FAILED_NAME = "failed.json"
QUEUED_NAME = "queued.json"
#: An empty/unreadable lock younger than this is being written, not stale.
_WRITING_GRACE_S = 30.0
#: A take-over guard older than this was left by a process that died during the (millisecond) take-over.
_TAKEOVER_GRACE_S = 60.0


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def owner_info() -> dict:
    """Who we are, as recorded in a lock."""
    job = slurm.current_job()
    return dict(job_id=job["job_id"] if job else "local", slurm_raw_id=job["raw_id"] if job else None,
                host=socket.gethostname().split(".")[0], pid=os.getpid(), started_at=_now(), token=uuid.uuid4().hex)


def describe_owner(owner: dict) -> str:
    if owner.get("job_id") and owner["job_id"] != "local":
        return f"SLURM job {owner['job_id']} on {owner.get('host')}"
    return f"pid {owner.get('pid')}@{owner.get('host')}"


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (TypeError, ValueError):
        return False
    return True


def owner_alive(owner: dict) -> bool:
    """Whether the process or job that holds a lock may still be working on it."""
    me = owner_info()
    same_host = owner.get("host") == me["host"]
    job = owner.get("job_id")
    if job and job != "local":
        if job == me["job_id"]:
            return False  # left by this SLURM job before it was requeued: we are its new incarnation
        alive = slurm.job_alive(owner.get("slurm_raw_id") or job)
        if alive is None:  # squeue cannot be asked: judge by the pid where we can
            return _pid_alive(owner.get("pid")) if same_host else True
        return alive  # a requeued (pending) job counts as alive: it comes back for this cell
    return _pid_alive(owner.get("pid")) if same_host else True


def read_lock(work_dir) -> tuple[dict | None, float | None]:
    """(owner dict or {} when unreadable, age in seconds) of `<work_dir>/lock.json`, or (None, None)."""
    path = Path(work_dir) / LOCK_NAME
    try:
        text = path.read_text(encoding="utf-8")
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None, None
    try:
        return json.loads(text), age
    except json.JSONDecodeError:
        return {}, age


def live_owner(work_dir) -> dict | None:
    """The owner of a live lock on this cell, or None (no lock, or a stale one)."""
    owner, age = read_lock(work_dir)
    if owner is None:
        return None
    if not owner:
        return {"job_id": "?", "host": "?", "pid": None} if age < _WRITING_GRACE_S else None
    return owner if owner_alive(owner) else None


class CellLock:
    """A held lock; use as a context manager or call release()."""

    def __init__(self, path: Path, owner: dict):
        self.path, self.owner = path, owner

    def release(self) -> None:
        try:
            current = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return
        if current.get("token") == self.owner["token"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "CellLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _create(path: Path, owner: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(owner, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return True


def _take_over(path: Path, seen: dict) -> None:
    """Remove the stale lock `seen`, unless someone else changed it meanwhile."""
    guard = path.with_name(path.name + ".takeover")
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            if time.time() - guard.stat().st_mtime > _TAKEOVER_GRACE_S:
                guard.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        time.sleep(0.05)
        return
    os.close(fd)
    try:
        try:
            current = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except json.JSONDecodeError:
            current = {}
        if current == seen:
            path.unlink(missing_ok=True)
    finally:
        guard.unlink(missing_ok=True)


def acquire(work_dir, attempts: int = 20) -> tuple[CellLock | None, dict | None]:
    """Take the cell's lock: (lock, None), or (None, owner) when a live owner holds it."""
    wd = Path(work_dir)
    wd.mkdir(parents=True, exist_ok=True)
    path = wd / LOCK_NAME
    owner = owner_info()
    for _ in range(attempts):
        if _create(path, owner):
            return CellLock(path, owner), None
        seen, age = read_lock(wd)
        if seen is None:
            continue  # released meanwhile
        if not seen:
            if age < _WRITING_GRACE_S:
                return None, {"job_id": "?", "host": "?", "pid": None, "note": "lock being written"}
        elif owner_alive(seen):
            return None, seen
        _take_over(path, seen)
    return None, read_lock(wd)[0] or {"job_id": "?", "note": "lock contended"}


# ----- failure and queue records -----
def record_failure(work_dir, error: BaseException, tb_text: str, lines: int = 15) -> Path:
    from ..utils.io import atomic_write_json

    tail = [line for line in tb_text.rstrip().splitlines() if line.strip()][-lines:]
    info = dict(error=f"{type(error).__name__}: {error}", tail=tail, failed_at=_now(), **{
        k: v for k, v in owner_info().items() if k in ("job_id", "host", "pid")})
    return atomic_write_json(Path(work_dir) / FAILED_NAME, info)


def read_json(path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def clear(work_dir, name: str) -> None:
    try:
        (Path(work_dir) / name).unlink()
    except FileNotFoundError:
        pass
    except OSError as e:  # pragma: no cover
        if e.errno != errno.ENOENT:
            raise
