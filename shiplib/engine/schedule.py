"""The official learning-rate schedule (docs/ship_computation.md §1): linear warm-up, then cosine, stepped once per
epoch.

The official code uses timm's `CosineLRScheduler(t_initial=epochs, lr_min=1e-5, warmup_lr_init=1e-6,
warmup_t=10, warmup_prefix=False)` and calls `step(epoch)` *after* epoch `epoch`, so the rate used in
epoch e is the scheduler's value at t = e - 1 (and the warm-up start at e = 0). With `warmup_prefix=False`
the cosine is measured from t = 0, not from the end of the warm-up, so it starts below the base lr.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULE_MODES = ("epoch", "step")


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
        """
        if epoch < 0 or step < 0:
            raise ValueError(f"epoch and step must be >= 0, got epoch={epoch}, step={step}")
        if epoch == 0 and (self.mode == "epoch" or step == 0):
            return self.timm_value(0)
        if self.mode == "epoch":
            return self.timm_value(epoch - 1)
        return self.timm_value(max(0.0, epoch - 1 + step / max(1, steps_per_epoch)))

    def epoch_values(self) -> list[float]:
        """The lr of every epoch in mode "epoch" (for plots and tests)."""
        return [self.lr_at(e) for e in range(self.epochs)]


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
