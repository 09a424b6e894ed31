"""Atomic writes, so that a crash never leaves a half-written result or checkpoint, and moving bad files aside."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors.torch import save_file

from ..errors import ResourceError
from .units import format_bytes

log = logging.getLogger(__name__)

#: Suffix of a file that could not be read and was moved aside (`checkpoint.pt` -> `checkpoint.pt.corrupt`).
CORRUPT_SUFFIX = ".corrupt"
#: Temporary files of `atomic_write` are `.<name>.<random><TMP_SUFFIX>` next to the file they become.
TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Write `path` so that a reader sees the old file or the complete new one, never a partial file.

    Yields a temporary path next to `path` (same folder, so the final rename stays on one file system); write the
    content there. On a clean exit the temporary file is flushed to disk and renamed over `path`; on an exception
    it is removed and `path` is left as it was. Parent folders are created. A full disk is a `ResourceError` naming
    `path`, the free space and about how much is needed.

        with atomic_write("results/x.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, a=a)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; written files should be readable like any other
        os.replace(tmp, path)
    except BaseException as e:
        written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            previous = path.stat().st_size if path.is_file() else 0
            raise disk_full_error(e, path, max(written, previous)) from e
        raise


def disk_full_error(error: OSError, path: str | os.PathLike, needed: int) -> OSError | ResourceError:
    """The error to raise for `error` met while writing `path`: for a full disk, a `ResourceError` naming the file,
    the free space there and at least how much is needed (`needed` bytes: what was written, or the previous file's
    size); any other error as it is."""
    if error.errno != errno.ENOSPC:
        return error
    path = Path(path)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    have = "an unknown amount" if free is None else format_bytes(free)
    need = f"at least {format_bytes(needed)}" if needed else "more"
    return ResourceError(f"cannot write {path}: No space left on device ({have} free there, {need} needed). Free "
                         "space there, or point --runs/--results to another disk.")


def remove_stale_temporaries(folder: str | os.PathLike, name: str = "*") -> list[Path]:
    """Remove the temporary files `atomic_write` left in `folder` for `name` when a process was killed (SIGKILL,
    power loss) in the middle of a write. Call it only while no one else can be writing there (under a lock)."""
    removed = []
    for tmp in sorted(Path(folder).glob(f".{name}.*{TMP_SUFFIX}")):
        try:
            size = tmp.stat().st_size
            tmp.unlink()
        except FileNotFoundError:
            continue
        log.info("removed %s (%s), left by a write that was killed", tmp, format_bytes(size))
        removed.append(tmp)
    return removed


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, records: list[dict]) -> Path:
    """A whole JSON-lines file at once (a log rewritten from its source of truth never holds a line twice)."""
    return atomic_write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in records))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def atomic_save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def atomic_save_npy(path: str | os.PathLike, array) -> Path:
    """np.save without a half-written file (through a handle, so numpy does not append '.npy' to the temp name)."""
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(array))
    return Path(path)


def atomic_save_npz(path: str | os.PathLike, **arrays) -> Path:
    """np.savez without a half-written file (through a handle, so numpy does not append '.npz' to the temp name)."""
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and flush it to disk (a log, so append is the right granularity)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def aside_path(path: str | os.PathLike, suffix: str = CORRUPT_SUFFIX) -> Path:
    """`<name><suffix>`, or `<name><suffix>.1`, `.2`, … when that exists: files set aside earlier are kept."""
    path = Path(path)
    candidate, n = path.with_name(path.name + suffix), 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}{suffix}.{n}")
    return candidate


def move_aside(path: str | os.PathLike, reason: str, suffix: str = CORRUPT_SUFFIX) -> Path:
    """Rename an unreadable file to `aside_path(path, suffix)` (never over a file set aside before), log a warning
    naming both, and return the new path. The file is kept for inspection; the caller carries on as if it were
    absent."""
    path = Path(path)
    aside = aside_path(path, suffix)
    os.replace(path, aside)
    log.warning("%s cannot be read (%s); moved it aside to %s", path, reason, aside.name)
    return aside


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
