"""A run's epoch checkpoints: the newest and the one before it, so that a bad newest file costs one epoch.

A checkpoint holds the trainable parameters, the optimiser state and the history (the frozen backbone is rebuilt,
not stored), plus the run's identity and backbone fingerprint, so that a run never resumes another's state.
Saving moves the newest checkpoint to `checkpoint.prev.pt`, then writes the new one atomically. Loading takes the
newest readable one; a file that cannot be read (truncated, not a torch file, missing entries) is named in a
warning, moved aside to `<name>.corrupt`, and the one before it is tried.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, ResourceError, setting_fix
from ..utils.io import atomic_torch_save, move_aside
from .resolved import identity_diff

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
#: Entries every checkpoint has; one without them is unusable.
REQUIRED_KEYS = ("format", "identity", "backbone_fingerprint", "epoch", "trainable", "optimizer", "history",
                 "elapsed")


@dataclass
class CheckpointStore:
    """The checkpoint files of one work folder."""

    newest: Path
    previous: Path

    def load(self, identity: dict, fingerprint: str) -> tuple[dict, Path] | None:
        """The newest usable checkpoint of this run and its file, or None (nothing usable: start from scratch).

        Unreadable files are moved aside; a readable checkpoint of another configuration is an error (the work
        folder belongs to another run: start over with --fresh, or use another --runs folder)."""
        for path in (self.newest, self.previous):
            if not path.is_file():
                continue
            state = _read(path)
            if state is None:
                continue
            if state["identity"] != identity or state["backbone_fingerprint"] != fingerprint:
                diff = identity_diff(state["identity"], identity) or "the backbone weights changed"
                raise ConfigError(f"checkpoint {path} belongs to another configuration ({diff}). "
                                  f"Delete its folder, or start over: {setting_fix('resume', False, '--fresh')}.")
            return state, path
        return None

    def save(self, state: dict) -> Path:
        """Keep the newest checkpoint as the previous one, then write `state` as the newest (atomically)."""
        if self.newest.is_file():
            os.replace(self.newest, self.previous)
        try:
            return atomic_torch_save(state, self.newest)
        except (OSError, RuntimeError) as e:  # torch reports a full disk as "RuntimeError: … iostream error"
            raise ResourceError(f"could not write the checkpoint {self.newest}: {e}. {_disk_hint(self.newest)}"
                                "The run can resume from the checkpoint before it once there is room.") from e

    def discard(self) -> None:
        """Remove both files (a fresh start must not later fall back to an older run's checkpoint)."""
        for path in (self.newest, self.previous):
            path.unlink(missing_ok=True)


def _read(path: Path) -> dict | None:
    """A checkpoint's content, or None after moving an unreadable file aside."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, a pickle with code in it: all unreadable
        move_aside(path, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}")
        return None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        move_aside(path, f"not a shiplib checkpoint: no {', '.join(missing)}")
        return None
    return state


def _disk_hint(path: Path) -> str:
    try:
        free = shutil.disk_usage(next(p for p in (path, *path.parents) if p.exists())).free
    except (OSError, StopIteration):
        return ""
    return f"{free / 2**20:.0f} MB are free on its disk. " if free < 2**30 else ""


def checkpoint_state(training: dict[str, dict[str, Any]], *, identity: dict, fingerprint: str, epoch: int,
                     history: list[dict], elapsed: float) -> dict:
    """What a checkpoint stores (plain tensors, numbers, strings, lists and dicts: loadable with weights_only).

    `training`: the states that resume training, `trainable` (parameters) and `optimizer`, plus `scaler` (the
    fp16 gradient scaler's), stored only when there is one."""
    unknown = set(training) - {"trainable", "optimizer", "scaler"}
    if unknown or not {"trainable", "optimizer"} <= set(training):
        raise ValueError(f"training must hold 'trainable', 'optimizer' and optionally 'scaler', got {sorted(training)}")
    state = dict(format=CHECKPOINT_FORMAT, identity=identity, backbone_fingerprint=fingerprint, epoch=epoch,
                 trainable=training["trainable"], optimizer=training["optimizer"], history=history, elapsed=elapsed)
    scaler = training.get("scaler")
    return {**state, "scaler": scaler} if scaler else state
