"""SHIP's Prompt Matching Loss (PML; docs/ship_computation.md §5).

Each prompt output is pulled towards its nearest high-response image token:

    L = mean over (batch b, prompt p) of  min over targets t in T_b  of  1 - cos(P[b, p], Z[b, t])

Official choices (kept by the callers): the last block's outputs before the final norm; targets T_b = the top-10
image tokens (keys, CLS included) by the head-mean PRE-softmax logits of the CLS query of that block; no
temperature, no stop-gradient (both prompts and image tokens get gradients); weight 0.5 in the total loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def top_attended_tokens(logits: torch.Tensor, num_image_tokens: int, k: int, query: int = 0) -> torch.Tensor:
    """(B, k) indices of the image keys with the largest head-mean pre-softmax logit of one query (CLS = 0).

    `logits`: (B, heads, queries, keys); keys 0..num_image_tokens-1 are the image tokens (prefix included).
    """
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, heads, queries, keys), got shape {tuple(logits.shape)}")
    if not 1 <= k <= num_image_tokens:
        raise ValueError(f"cannot pick the top {k} of {num_image_tokens} image tokens: lower the count (SHIP: "
                         f"top_k / ap_length <= {num_image_tokens}) or feed larger images")
    scores = logits[:, :, query, :num_image_tokens].mean(dim=1)
    return scores.topk(k, dim=-1).indices


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b]] for every b: (B, T, D), (B, k) -> (B, k, D)."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def prompt_matching_loss(prompts: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over batch and prompts of the smallest cosine distance to the targets: (B, P, D), (B, k, D) -> scalar.

    With no prompts (P == 0) the loss is 0 (the mean over an empty set would be NaN).
    """
    if prompts.ndim != 3 or targets.ndim != 3 or prompts.shape[::2] != targets.shape[::2]:
        raise ValueError(f"prompts (B, P, D) and targets (B, k, D) must share B and D, got "
                         f"{tuple(prompts.shape)} and {tuple(targets.shape)}")
    if prompts.shape[1] == 0:
        return prompts.new_zeros(())
    cos = F.normalize(prompts, dim=-1) @ F.normalize(targets, dim=-1).transpose(1, 2)  # (B, P, k)
    return (1.0 - cos).min(dim=-1).values.mean()
