"""Parameter accounting as an API."""
from __future__ import annotations

import torch.nn as nn


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable counts with and without the head, and the total.

    Keys: trainable, trainable_without_head, head, frozen, total; methods may add their own (e.g. SHIP's
    `official_trainable`, the official code's count with its unused prompt position embedding).
    """
    head_names = model.head_parameter_names() if hasattr(model, "head_parameter_names") else set()
    trainable = head = total = 0
    for name, p in model.named_parameters():
        n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
            if name in head_names:
                head += n
    out = dict(trainable=trainable, trainable_without_head=trainable - head, head=head,
               frozen=total - trainable, total=total)
    extra = getattr(model, "extra_parameter_counts", None)
    if callable(extra):
        out.update(extra(out))
    return out
