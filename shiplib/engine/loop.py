"""One training epoch and one evaluation pass.

Total loss = cross-entropy + Σ weight · aux loss, with the weights from `model.loss_weights`
(e.g. SHIP's {"pml": 0.5}); an aux loss without a listed weight counts with weight 1.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError, ShiplibError, setting_fix
from ..utils.progress import progress_bar
from .precision import Precision
from .resources import log_epoch_time
from .schedule import LRSchedule, set_lr


class NonFiniteLossError(ShiplibError, RuntimeError):
    """The loss became NaN/inf; usually the learning rate is too high (exit 1: the run failed while working)."""


def loss_weights(model: nn.Module) -> dict[str, float]:
    """The weights of the model's auxiliary losses (`model.loss_weights`; none: every aux loss counts once)."""
    return dict(getattr(model, "loss_weights", None) or {})


def total_loss(logits: torch.Tensor, y: torch.Tensor, aux: dict[str, torch.Tensor],
               weights: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(total loss, cross-entropy) of one training step: CE + Σ weight · aux loss (weight 1 where none is listed).
    The training loop and the benchmark's training step both take their loss from here."""
    ce = F.cross_entropy(logits, y)
    loss = ce
    for name, value in aux.items():
        loss = loss + weights.get(name, 1.0) * value
    return loss, ce


def trainable_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters by part, for per-step gradient norms: the head, and otherwise the first component of
    the parameter's name below the wrapped backbone (e.g. `prompts`, `fusion`, `blocks`)."""
    head = set(model.head_parameter_names()) if hasattr(model, "head_parameter_names") else set()
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        parts = name.split(".")
        part = "head" if name in head else parts[1] if parts[0] == "vit" and len(parts) > 1 else parts[0]
        groups.setdefault(part, []).append(p)
    return groups


def _grad_norms(groups: dict[str, list[nn.Parameter]]) -> dict[str, float]:
    out = {}
    for part, params in groups.items():
        grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
        out[part] = float(torch.stack(grads).norm()) if grads else 0.0
    return out


@dataclass(frozen=True)
class TrainStep:
    """What every optimiser step of a run uses; `precision=None` is float32."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    device: torch.device
    precision: Precision | None = None


def train_one_epoch(train: TrainStep, loader, epoch: int, progress: bool = True, on_step=None,
                    announce_time: bool = False) -> dict:
    """Train for one epoch; return the epoch's mean losses (raw aux values), lr, train accuracy (%) and seconds,
    and per step (`step_*`): the loss, the cross-entropy, the lr and each trainable part's gradient norm.

    `on_step(epoch, step)` is called after each optimiser step (used by tests to interrupt a run).
    `announce_time`: log how long the epoch will take, timed on its first batch (a warning when it is long).
    """
    model, optimizer, schedule, device = train.model, train.optimizer, train.schedule, train.device
    precision = train.precision or Precision(device=device)
    model.train()
    weights = loss_weights(model)
    sums: dict[str, float] = defaultdict(float)
    correct = seen = steps = 0
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ConfigError("the training loader yields no batch: the training split is smaller than the batch size "
                         "(drop_last=True); lower batch_size")
    lrs, step_loss, step_ce = [], [], []
    groups = trainable_groups(model)
    step_grad_norm: dict[str, list[float]] = {part: [] for part in groups}
    start = time.perf_counter()
    bar = progress_bar(loader, desc=f"epoch {epoch} train", leave=False, disable=not progress, dynamic_ncols=True)
    for step, (x, y) in enumerate(bar):
        lr = schedule.lr_at(epoch, step, steps_per_epoch)
        set_lr(optimizer, lr)
        lrs.append(lr)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with precision.autocast():
            logits, aux = model(x, return_losses=True)
            loss, ce = total_loss(logits, y, aux, weights)
        if not math.isfinite(loss.item()):
            raise NonFiniteLossError(f"loss is {loss.item()} at epoch {epoch}, step {step} (lr {lr:.3g}); "
                                     f"lower the learning rate, e.g. {setting_fix('lr', float(f'{lr / 10:.2g}'))}")
        optimizer.zero_grad(set_to_none=True)
        precision.backward(loss, optimizer)  # fp16: gradients unscaled here, so their norms are true values
        for part, norm in _grad_norms(groups).items():
            step_grad_norm[part].append(norm)
        _step(precision, optimizer, epoch, step, lr)
        n = y.shape[0]
        step_loss.append(loss.item())
        step_ce.append(ce.item())
        sums["loss"] += loss.item() * n
        sums["ce"] += ce.item() * n
        for name, value in aux.items():
            sums[name] += float(value.detach()) * n
        correct += (logits.argmax(1) == y).sum().item()
        seen += n
        steps += 1
        if announce_time and step == 0:
            log_epoch_time(time.perf_counter() - start, steps_per_epoch)
        bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", lr=f"{lr:.2e}")
        if on_step is not None:
            on_step(epoch, step)
    check_finite_state(model, optimizer, epoch, lr)  # before the checkpoint of this epoch is written
    record = {k: v / seen for k, v in sums.items()}
    record.update(lr=lrs[0] if schedule.mode == "epoch" else sum(lrs) / len(lrs), train_acc=100.0 * correct / seen,
                  steps=steps, train_seconds=time.perf_counter() - start, step_loss=step_loss, step_ce=step_ce,
                  step_lr=lrs, step_grad_norm=step_grad_norm)
    return record


def _step(precision: Precision, optimizer: torch.optim.Optimizer, epoch: int, step: int, lr: float) -> None:
    try:
        precision.step(optimizer)
    except RuntimeError as e:  # e.g. Adam's step size overflows float32 with a huge lr
        if "overflow" not in str(e):
            raise
        raise NonFiniteLossError(f"the optimiser step overflowed at epoch {epoch}, step {step} (lr {lr:.3g}: {e}); "
                                 "lower the learning rate (--set lr=...)") from None


@torch.no_grad()
def check_finite_state(model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, lr: float) -> None:
    """`NonFiniteLossError` naming the first trainable parameter or optimiser state that is NaN/inf (a finite loss
    does not show an overflow in the step that follows it)."""
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            tensors = {"": p, **{f" (optimiser {k})": v for k, v in optimizer.state.get(p, {}).items()
                                 if torch.is_tensor(v) and v.is_floating_point()}}
            for what, t in tensors.items():
                if not torch.isfinite(t).all():
                    raise NonFiniteLossError(f"{names.get(id(p), 'a parameter')}{what} is not finite after epoch "
                                             f"{epoch} (lr {lr:.3g}); lower the learning rate (--set lr=...)")


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, progress: bool = True, desc: str = "eval",
             precision: Precision | None = None) -> dict:
    """Top-1 accuracy (%) and mean cross-entropy over the whole loader (forward under `precision`'s autocast)."""
    precision = precision or Precision(device=device)
    model.eval()
    correct = seen = 0
    ce_sum = 0.0
    start = time.perf_counter()
    for x, y in progress_bar(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with precision.autocast():
            logits = model(x)
        ce_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        seen += y.shape[0]
    if seen == 0:
        raise ValueError("the evaluation split is empty")
    return dict(acc=100.0 * correct / seen, loss=ce_sum / seen, n=seen, seconds=time.perf_counter() - start)
