"""One lock file per cell, so that no (task, method, seed, settings) cell is trained twice at the same time.

`<work_dir>/lock.json` is created with O_CREAT|O_EXCL (exactly one process succeeds) and records its owner:
job id (the SLURM job, "A_T" for an array task, or "local"), host, pid, start time and a random token.
A lock whose owner is gone is stale and is taken over: same host and the pid is dead, or a SLURM job that squeue
no longer lists (a lock of *this* SLURM job, left by its run before a requeue, is also taken over). The take-over
itself is serialised by a second O_EXCL file (`lock.json.takeover`), so two processes never both remove a lock.
A lock file that holds valid JSON but no lock object (`null`, a list, a number, an object without a token) was not
written by a lock: it is stale at once, named in a warning and taken over. A lock whose content could not be written
(a full disk) is removed again: no lock is left empty. `release()` removes the lock only if it still holds our token.
`hold(folder, name)` is the same lock as a context manager that waits for a live owner (short critical sections).
A failed run leaves `<work_dir>/failed.json` (error and the last lines of its traceback) for `status`.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Iterator

from ..errors import StateError
from . import slurm

log = logging.getLogger(__name__)

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


#: Key of the stand-in owner of a lock file whose content is not a lock object (what it held, shortened).
NOT_A_LOCK = "not_a_lock"


def describe_owner(owner: dict) -> str:
    if owner.get(NOT_A_LOCK) is not None:
        return f"no one (the lock file holds {owner[NOT_A_LOCK]}, not a lock)"
    if owner.get("note") == "lock being written":
        return "another process that is writing its lock right now"
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
    if owner.get(NOT_A_LOCK) is not None:
        return False
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


def _is_lock_object(value) -> bool:
    return isinstance(value, dict) and bool(value.get("token")) and (value.get("pid") is not None
                                                                       or bool(value.get("job_id")))


def read_lock(work_dir, name: str = LOCK_NAME) -> tuple[dict | None, float | None]:
    """(owner, age in seconds) of `<work_dir>/<name>`, or (None, None) when there is none. The owner is {} while
    the content is empty or partial (being written), `{NOT_A_LOCK: <content>}` when it is JSON but no lock."""
    path = Path(work_dir) / name
    try:
        raw = path.read_bytes()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None, None
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}, age
    if not _is_lock_object(value):
        text = json.dumps(value)
        return {NOT_A_LOCK: text if len(text) <= 40 else text[:37] + "..."}, age
    return value, age


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
        current, _ = read_lock(self.path.parent, self.path.name)
        if current and current.get("token") == self.owner["token"]:
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
    data = (json.dumps(owner, indent=1) + "\n").encode()
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:  # never leave an empty lock behind: it would block the cell
        path.unlink(missing_ok=True)
        from ..utils.io import disk_full_error

        raise disk_full_error(e, path, len(data)) from e
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
        current, _ = read_lock(path.parent, path.name)
        if current is not None and current == seen:
            path.unlink(missing_ok=True)
    finally:
        guard.unlink(missing_ok=True)


def acquire(work_dir, attempts: int = 20, name: str = LOCK_NAME) -> tuple[CellLock | None, dict | None]:
    """Take the cell's lock: (lock, None), or (None, owner) when a live owner holds it."""
    wd = Path(work_dir)
    wd.mkdir(parents=True, exist_ok=True)
    path = wd / name
    owner = owner_info()
    for _ in range(attempts):
        if _create(path, owner):
            return CellLock(path, owner), None
        seen, age = read_lock(wd, name)
        if seen is None:
            continue  # released meanwhile
        if not seen:
            if age < _WRITING_GRACE_S:
                return None, {"job_id": "?", "host": "?", "pid": None, "note": "lock being written"}
        elif seen.get(NOT_A_LOCK) is not None:
            log.warning("%s holds %s, not a lock: taken over as stale", path, seen[NOT_A_LOCK])
        elif owner_alive(seen):
            return None, seen
        _take_over(path, seen)
    return None, read_lock(wd, name)[0] or {"job_id": "?", "note": "lock contended"}


@contextlib.contextmanager
def hold(folder, name: str, wait_s: float = 60.0, poll_s: float = 0.05) -> Iterator[CellLock]:
    """Hold the lock `<folder>/<name>` for a short critical section, waiting up to `wait_s` for a live owner;
    `StateError` naming the owner when it is still held then."""
    deadline = time.monotonic() + wait_s
    while True:
        lock, owner = acquire(folder, name=name)
        if lock is not None:
            break
        if time.monotonic() > deadline:
            raise StateError(f"{Path(folder) / name} is held by {describe_owner(owner)} for more than {wait_s:.0f} s; "
                             "if that process is gone, delete the file and run again")
        time.sleep(poll_s)
    try:
        yield lock
    finally:
        lock.release()


# ----- failure and queue records -----
def record_failure(work_dir, error: BaseException, tb_text: str, lines: int = 15) -> Path:
    from ..utils.io import atomic_write_json

    tail = [line for line in tb_text.rstrip().splitlines() if line.strip()][-lines:]
    info = dict(error=f"{type(error).__name__}: {error}", tail=tail, failed_at=_now(), **{
        k: v for k, v in owner_info().items() if k in ("job_id", "host", "pid")})
    return atomic_write_json(Path(work_dir) / FAILED_NAME, info)


def read_json(path) -> dict | None:
    """A record's content; None when it is missing, unreadable or not a JSON object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def clear(work_dir, name: str) -> None:
    try:
        (Path(work_dir) / name).unlink()
    except FileNotFoundError:
        pass
    except OSError as e:  # pragma: no cover
        if e.errno != errno.ENOENT:
            raise
