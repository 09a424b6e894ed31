"""The resumable epoch loop both backbone recipes run, on the engine's optimiser groups and `set_lr`.

Each finished epoch is recorded in two places, in this order: the state (`last.pt`: weights, optimiser, history,
written atomically), then the log (`log.jsonl`, rewritten from the state's history). A crash between the two
leaves the log one epoch short, and the next write completes it; an epoch is never recorded twice.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from ..errors import ConfigError, StateError
from ..engine.optim import create_optimizer
from ..engine.schedule import set_lr
from ..utils.checks import positive_int
from ..utils.io import atomic_torch_save, atomic_write_jsonl
from ..utils.progress import progress_bar

#: Changes when the state's layout changes, so an older state is refused instead of loaded wrongly.
STATE_FORMAT = 2


@dataclass(frozen=True)
class StepWarmupCosine:
    """The recipes' per-step rate: linear warm-up reaching `lr` at its last step, then cosine to `min_lr`.

    Called like the engine's `LRSchedule.lr_at`. It is a different curve from `LRSchedule`, which (as the official
    code) starts its cosine at step 0 rather than after the warm-up and runs one epoch behind; the committed
    backbones were trained with this one.
    """

    lr: float
    min_lr: float
    epochs: int
    warmup_epochs: float

    def lr_at(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        s, total, warmup = epoch * steps_per_epoch + step, self.epochs * steps_per_epoch, \
            int(self.warmup_epochs * steps_per_epoch)
        if s < warmup:
            return self.lr * (s + 1) / warmup
        t = (s - warmup) / max(1, total - warmup)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * t))


class RecipeModules(nn.ModuleDict):
    """The modules a recipe trains, saved together; each part's `no_weight_decay` names keep their prefix."""

    def no_weight_decay(self) -> set[str]:
        return {f"{name}.{n}" for name, m in self.items() if hasattr(m, "no_weight_decay")
                for n in m.no_weight_decay()}

    def optimizer(self, lr: float, weight_decay: float) -> torch.optim.AdamW:
        """The engine's AdamW: no decay on 1-D parameters, biases and the modules' `no_weight_decay` names."""
        return create_optimizer(self, lr, weight_decay)


def load_state(path: str | Path) -> dict:
    """A recipe state (`last.pt`), loaded safely (`weights_only=True`); an unreadable file fails naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or a pickle with code in it
        raise StateError(f"cannot read the pretraining state {path} ({type(e).__name__}: {e}). Delete it (or its "
                         "folder) to pretrain from scratch.") from e


@dataclass(frozen=True)
class RecipeTraining:
    """What a recipe trains and how: its modules, their optimiser and the per-step schedule (which sets the
    number of epochs)."""

    modules: RecipeModules
    optimizer: torch.optim.Optimizer
    schedule: StepWarmupCosine


def train_steps(training: RecipeTraining, epoch: int, order: torch.Tensor, batch_size: int, batch_loss: Callable,
                desc: str) -> dict[str, float]:
    """One epoch over the item indices `order` (a permutation) in full batches; returns the sums of `batch_loss`'s
    statistics.

    `batch_loss(indices)` returns `(loss, stats)`: the loss to step on and numbers to sum over the epoch.
    """
    optimizer, schedule = training.optimizer, training.schedule
    steps = len(order) // batch_size
    sums: dict[str, float] = {}
    running = 0.0
    bar = progress_bar(range(steps), desc=desc, leave=False)
    for it in bar:
        set_lr(optimizer, schedule.lr_at(epoch, it, steps))
        loss, stats = batch_loss(order[it * batch_size: (it + 1) * batch_size])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + v
        running += loss.item()
        if it % 20 == 0:
            bar.set_postfix(loss=f"{running / (it + 1):.3f}")
    return sums


def run_epochs(work_dir: str | Path, training: RecipeTraining, config: dict, one_epoch: Callable[[int], dict],
               stop_after: int | None = None, elapsed: float = 0.0) -> tuple[list[dict], float]:
    """Resume from `work_dir` (same `config` only), run `one_epoch(epoch) -> record` up to `stop_after` or the
    schedule's epochs.

    Returns the history of every finished epoch (records with `epoch` first and `seconds` last) and the seconds
    spent, `elapsed` included.
    """
    modules, optimizer, epochs = training.modules, training.optimizer, training.schedule.epochs
    positive_int("stop_after", stop_after, allow_none=True)
    work_dir = Path(work_dir)
    state_path, log_path = work_dir / "last.pt", work_dir / "log.jsonl"
    config = dict(config, state_format=STATE_FORMAT)
    start, history = 0, []
    if state_path.exists():
        state = load_state(state_path)
        saved = state.get("config", {}) if isinstance(state, dict) else {}
        if saved != config:
            diff = {k: (saved.get(k), config.get(k)) for k in {*saved, *config} if saved.get(k) != config.get(k)}
            raise ConfigError(f"{state_path} holds a run of another recipe (saved -> now: {diff}); pass the same "
                              f"config to resume, or delete {work_dir} to start afresh")
        modules.load_state_dict(state["modules"])
        optimizer.load_state_dict(state["optimizer"])
        start, elapsed, history = state["epoch"] + 1, state["elapsed"], state["history"]
        atomic_write_jsonl(log_path, history)  # completes a log that a crash left one epoch short
        print(f"resuming after epoch {start} ({elapsed / 60:.1f} min spent so far)")
    for epoch in range(start, epochs if stop_after is None else min(epochs, stop_after)):
        t0 = time.time()
        record = one_epoch(epoch)
        seconds = time.time() - t0
        elapsed += seconds
        history.append(dict(epoch=epoch, **{k: float(v) for k, v in record.items()}, seconds=seconds))
        # plain tensors, numbers, strings, lists and dicts only: the state loads with torch.load(weights_only=True)
        atomic_torch_save(dict(modules=modules.state_dict(), optimizer=optimizer.state_dict(), epoch=epoch,
                               elapsed=elapsed, history=history, config=config), state_path)
        atomic_write_jsonl(log_path, history)  # after the state: the log mirrors it, each epoch once
        print(f"epoch {epoch + 1}/{epochs}: " + " ".join(f"{k} {v:.4f}" for k, v in record.items())
              + f" ({seconds / 60:.1f} min)")
    return history, elapsed
