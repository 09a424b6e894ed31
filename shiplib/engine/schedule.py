"""The official learning-rate schedule (docs/ship_computation.md §1): linear warm-up, then cosine, stepped once per
epoch; and the same curve's shape for short runs.

The official code uses timm's `CosineLRScheduler(t_initial=epochs, lr_min=1e-5, warmup_lr_init=1e-6,
warmup_t=10, warmup_prefix=False)` and calls `step(epoch)` *after* epoch `epoch`, so the rate used in
epoch e is the scheduler's value at t = e - 1 (and the warm-up start at e = 0). With `warmup_prefix=False`
the cosine is measured from t = 0, not from the end of the warm-up, so it starts below the base lr.

Modes:
- "epoch": the official schedule, one value per epoch, one epoch behind the scheduler.
- "step": the same curve evaluated at each step's fractional epoch.
- "scaled": the official curve's *shape* for any number of epochs: step s of S runs at the lr the official
  per-epoch schedule uses in epoch ceil(R · s / S) of a reference run of R = 100 epochs with
  R · warmup_epochs / epochs warm-up epochs. A short run then spends the same fraction of its steps at the
  warm-up start (2 % with a 10 % warm-up), ramps over the same fraction and follows the same cosine, where the
  "epoch" mode with 10 epochs spends 20 % of its steps at 1e-6 and then jumps to most of the base lr.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULE_MODES = ("epoch", "step", "scaled")
#: The official run's length: the "scaled" mode samples a schedule of this many epochs.
REFERENCE_EPOCHS = 100


@dataclass(frozen=True)
class LRSchedule:
    """Per-epoch (official) or per-step warm-up + cosine. Defaults are the official values."""

    base_lr: float
    epochs: int = 100
    warmup_epochs: int = 10
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    mode: str = "epoch"

    def __post_init__(self):
        if not (isinstance(self.base_lr, (int, float)) and math.isfinite(self.base_lr) and self.base_lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.base_lr!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.mode not in SCHEDULE_MODES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULE_MODES}, got {self.mode!r}")

    @property
    def reference(self) -> "LRSchedule":
        """mode "scaled": the per-epoch schedule of the 100-epoch run whose shape this run follows."""
        warmup = round(REFERENCE_EPOCHS * self.warmup_epochs / self.epochs)
        return LRSchedule(self.base_lr, REFERENCE_EPOCHS, warmup, self.warmup_lr, self.min_lr, mode="epoch")

    def timm_value(self, t: float) -> float:
        """timm's CosineLRScheduler value at (possibly fractional) t, with warmup_prefix=False, cycle_limit=1."""
        if t < self.warmup_epochs:
            return self.warmup_lr + t * (self.base_lr - self.warmup_lr) / self.warmup_epochs
        if t >= self.epochs:  # past the single cycle
            return self.min_lr
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * t / self.epochs))

    def lr_at(self, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
        """The lr used for `step` of `epoch` (0-based).

        mode "epoch" (official): constant within an epoch, one epoch behind the scheduler (stepped after the epoch).
        mode "step": the same curve evaluated at the fractional position t = epoch - 1 + step / steps_per_epoch,
        so it agrees with "epoch" at each epoch's first step and moves smoothly in between.
        mode "scaled": the reference run's per-epoch value at the same fraction of training (module docstring).
        """
        if epoch < 0 or step < 0:
            raise ValueError(f"epoch and step must be >= 0, got epoch={epoch}, step={step}")
        if self.mode == "scaled":
            steps_per_epoch = max(1, steps_per_epoch)
            done = (epoch * steps_per_epoch + step) / (self.epochs * steps_per_epoch)
            # ceil: a step never runs at a value the reference has left (no more steps at the warm-up start)
            return self.reference.lr_at(min(REFERENCE_EPOCHS - 1, math.ceil(REFERENCE_EPOCHS * done - 1e-9)))
        if epoch == 0 and (self.mode == "epoch" or step == 0):
            return self.timm_value(0)
        if self.mode == "epoch":
            return self.timm_value(epoch - 1)
        return self.timm_value(max(0.0, epoch - 1 + step / max(1, steps_per_epoch)))

    def epoch_values(self) -> list[float]:
        """The lr of every epoch in mode "epoch" (for plots and tests)."""
        return [self.lr_at(e) for e in range(self.epochs)]

    def step_values(self, steps_per_epoch: int) -> list[float]:
        """The lr of every step of the run (for plots and tests)."""
        return [self.lr_at(e, s, steps_per_epoch) for e in range(self.epochs) for s in range(steps_per_epoch)]


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
