"""AdamW with timm's weight-decay groups, over the trainable parameters only (docs/ship_computation.md §1).

No decay for 1-D parameters, biases and the names the model lists in `no_weight_decay()` (fnmatch
patterns allowed, as in timm); decay for the rest. Frozen parameters never enter the optimiser (the official
code put the whole model in one group when wd == 0; that only inflated its logged parameter count).
"""
from __future__ import annotations

from fnmatch import fnmatch

import torch
import torch.nn as nn

ADAMW_BETAS = (0.9, 0.999)
ADAMW_EPS = 1e-8


def _no_decay_patterns(model: nn.Module) -> set[str]:
    fn = getattr(model, "no_weight_decay", None)
    return set(fn()) if callable(fn) else set()


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups {"no_decay", "decay"} (empty ones dropped), each with `names` for the record."""
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    patterns = _no_decay_patterns(model)
    groups = {"no_decay": ([], []), "decay": ([], [])}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim <= 1 or name.endswith(".bias") or any(fnmatch(name, pat) for pat in patterns)
        params, names = groups["no_decay" if exempt or not weight_decay else "decay"]
        params.append(p)
        names.append(name)
    out = []
    for key, (params, names) in groups.items():
        if params:
            out.append(dict(params=params, names=names, group=key,
                            weight_decay=0.0 if key == "no_decay" else float(weight_decay)))
    if not out:
        raise ValueError("the model has no trainable parameters: nothing to optimise")
    return out


def create_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW(betas .9/.999, eps 1e-8) over `weight_decay_groups`; the lr is set per epoch by the schedule."""
    return torch.optim.AdamW(weight_decay_groups(model, weight_decay), lr=lr, betas=ADAMW_BETAS, eps=ADAMW_EPS)


def optimizer_summary(optimizer: torch.optim.Optimizer) -> list[dict]:
    """Per group: name, weight decay, number of tensors and of parameters (for the result file)."""
    return [dict(group=g.get("group", str(i)), weight_decay=g["weight_decay"], tensors=len(g["params"]),
                 parameters=sum(p.numel() for p in g["params"]))
            for i, g in enumerate(optimizer.param_groups)]
