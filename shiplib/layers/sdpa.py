"""Attention with a timm `Attention`'s scale and dropout, fused (`F.scaled_dot_product_attention`) or written out.

The fused form keeps no (T, T) matrix for backward; the written-out form (`fused=False`, the readable path)
materialises the logits, as timm's `Attention` does when `fused_attn` is off.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .block_parts import attend, attention_logits


def sdpa(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, training: bool) -> torch.Tensor:
    """softmax(q k^T * attn.scale) v with the module's attention dropout (active only while training)."""
    p = attn.attn_drop.p if training and isinstance(attn.attn_drop, nn.Dropout) else 0.0
    return F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=attn.scale)


def attention(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, training: bool,
              fused: bool = True) -> torch.Tensor:
    """softmax(q k^T * attn.scale) v: SDPA, or (`fused=False`) with the logits materialised."""
    if fused:
        return sdpa(attn, q, k, v, training)
    return attend(attn, attention_logits(attn, q, k), v)


_aten = torch.ops.aten
_CPU_FLASH = (getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu", None),
              getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None))


class _RecomputedCpuSdpa(torch.autograd.Function):
    """SDPA (CPU flash kernel) that keeps only q, k, v for backward and recomputes its output there."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(q, k, v)
        ctx.scale = scale
        return _CPU_FLASH[0](q, k, v, 0.0, False, scale=scale)[0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        q, k, v = ctx.saved_tensors
        out, lse = _CPU_FLASH[0](q, k, v, 0.0, False, scale=ctx.scale)
        grad_q, grad_k, grad_v = _CPU_FLASH[1](grad_out, q, k, v, out, lse, 0.0, False, scale=ctx.scale)
        return grad_q, grad_k, grad_v, None


def small_key_attention(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        training: bool, fused: bool = True) -> torch.Tensor:
    """softmax(q k^T * scale) v for a few keys (the prompts): q (B, heads, T, d), k/v (B or 1, heads, L, d); keys
    of batch 1 are shared by every sample and broadcast without copies.

    While gradients are recorded on CPU, only q, k, v are kept for backward and the attention is recomputed there
    (one more kernel call) instead of keeping its (B, heads, T, d) output: with a few dozen keys that output would
    be most of the memory the attention needs.
    """
    B = q.shape[0]
    k, v = k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1)
    if not fused:
        return attention(attn, q, k, v, training, fused=False)
    records = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    dropout = training and isinstance(attn.attn_drop, nn.Dropout) and attn.attn_drop.p > 0
    if records and not dropout and q.device.type == "cpu" and None not in _CPU_FLASH \
            and q.dtype in (torch.float32, torch.float64, torch.bfloat16):
        return _RecomputedCpuSdpa.apply(q, k, v, attn.scale)
    return sdpa(attn, q, k, v, training)
