"""What both mini-backbone pretraining recipes share: AdamW parameter groups and the per-step learning rate."""
from __future__ import annotations

import math
from typing import Iterable

import torch


def adamw(named_parameters: Iterable[tuple[str, torch.nn.Parameter]], lr: float, weight_decay: float):
    """AdamW with weight decay on matrices only (no decay on norms, biases, position embedding or CLS token)."""
    decay, no_decay = [], []
    for name, p in named_parameters:
        (decay if p.ndim > 1 and "pos_embed" not in name and "cls_token" not in name else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def warmup_cosine_lr(step: int, total: int, warmup: int, lr: float, min_lr: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine from `lr` to `min_lr` at step `total`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
