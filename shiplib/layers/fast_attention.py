"""SDPA building blocks over a timm ViT block's own weights, for paths that need only some rows or only K/V.

`joint_attention`/`decoupled_attention` materialise every logit (B, heads, T, T) because the straightforward SHIP
forward returns them. The fast SHIP path instead projects only what a row set needs (q of the query rows, k/v of
the key rows, from slices of the fused qkv weight), runs `F.scaled_dot_product_attention` (no (T, T) matrix is
kept for backward), and computes the one logit row the top-k selections read (the CLS query) on its own.
Every helper applies the block's q_norm/k_norm, attention dropout, attn.norm, gate, proj, layer scale and drop path
exactly as timm does, so a block split into row sets computes what the whole block computes.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # timm's stochastic-depth module (the only one the fast path reproduces besides Identity)
    from timm.layers import DropPath
except ImportError:  # pragma: no cover - older timm
    from timm.models.layers import DropPath


def _width(attn: nn.Module) -> int:
    return attn.num_heads * attn.head_dim


def _split_heads(attn: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """(B, T, heads * head_dim) -> (B, heads, T, head_dim), a view."""
    B, T, _ = t.shape
    return t.view(B, T, attn.num_heads, attn.head_dim).transpose(1, 2)


def project_q(attn: nn.Module, xn: torch.Tensor) -> torch.Tensor:
    """Queries (B, heads, T, head_dim) of normed rows `xn`, from the q slice of the fused projection."""
    w, bias = attn.qkv.weight, attn.qkv.bias
    n = _width(attn)
    q = F.linear(xn, w[:n], None if bias is None else bias[:n])
    return attn.q_norm(_split_heads(attn, q))


def project_kv(attn: nn.Module, xn: torch.Tensor) -> torch.Tensor:
    """Keys|values of normed rows `xn` as one (B, T, 2 * width) tensor, from the k|v slice of the projection.

    Kept in token-major layout so that row sets of different origin are cheap to concatenate (dim 1) before
    `split_kv` turns them into per-head keys and values.
    """
    w, bias = attn.qkv.weight, attn.qkv.bias
    n = _width(attn)
    return F.linear(xn, w[n:], None if bias is None else bias[n:])


def split_kv(attn: nn.Module, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, 2 * width) keys|values -> keys, values (each (B, heads, T, head_dim)), k_norm applied."""
    B, T, _ = kv.shape
    k, v = kv.view(B, T, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    return attn.k_norm(k), v


def project_qkv(attn: nn.Module, xn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries (B, heads, T, head_dim) and keys|values (B, T, 2 * width) of rows that are queries and keys (one
    fused matmul, as timm)."""
    B, T, _ = xn.shape
    qkv = attn.qkv(xn)
    n = _width(attn)
    q = attn.q_norm(_split_heads(attn, qkv[..., :n]))
    return q, qkv[..., n:]


def sdpa(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, training: bool) -> torch.Tensor:
    """softmax(q k^T * attn.scale) v with the module's attention dropout (active only while training)."""
    p = attn.attn_drop.p if training and isinstance(attn.attn_drop, nn.Dropout) else 0.0
    return F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=attn.scale)


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
                        training: bool) -> torch.Tensor:
    """softmax(q k^T * scale) v for a few keys (the prompts): q (B, heads, T, d), k/v (B or 1, heads, L, d); keys
    of batch 1 are shared by every sample and broadcast without copies.

    While gradients are recorded on CPU, only q, k, v are kept for backward and the attention is recomputed there
    (one more kernel call) instead of keeping its (B, heads, T, d) output: with a few dozen keys that output would
    be most of the memory the attention needs.
    """
    B = q.shape[0]
    k, v = k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1)
    records = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    dropout = training and isinstance(attn.attn_drop, nn.Dropout) and attn.attn_drop.p > 0
    if records and not dropout and q.device.type == "cpu" and None not in _CPU_FLASH \
            and q.dtype in (torch.float32, torch.float64, torch.bfloat16):
        return _RecomputedCpuSdpa.apply(q, k, v, attn.scale)
    return sdpa(attn, q, k, v, training)


def decoupled_sdpa(attn: nn.Module, q: torch.Tensor, k_image: torch.Tensor, v_image: torch.Tensor,
                   k_prompt: torch.Tensor | None, v_prompt: torch.Tensor | None, scale: float,
                   training: bool) -> torch.Tensor:
    """(1 - s) softmax(q K_Z^T) V_Z + s softmax(q K_P^T) V_P as two attention calls; plain attention without prompt
    keys. The prompt part goes through `small_key_attention`."""
    out = sdpa(attn, q, k_image, v_image, training)
    if k_prompt is None or k_prompt.shape[2] == 0:
        return out
    out_prompt = small_key_attention(attn, q, k_prompt, v_prompt, training)
    if torch.is_grad_enabled() and (out.requires_grad or out_prompt.requires_grad):
        return torch.lerp(out, out_prompt, scale)
    return out.lerp_(out_prompt, scale)  # nothing is saved for backward: reuse the buffer


def query_logits(attn: nn.Module, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Pre-softmax logits of a few query rows, (B, heads, R, keys), as `attention_logits` computes them."""
    return (q * attn.scale) @ k.transpose(-2, -1)


def merge_heads(out: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, head_dim) -> (B, T, heads * head_dim)."""
    B, H, T, d = out.shape
    return out.transpose(1, 2).reshape(B, T, H * d)


def drop_path_mask(module: nn.Module, batch: int, training: bool, like: torch.Tensor) -> torch.Tensor | None:
    """Per-sample stochastic-depth factors (B,) as timm's DropPath draws them, or None when it is inactive.

    Drawn once per block branch and applied to every row set of a sample (image rows and prompt rows alike),
    like the single per-sample mask the whole token sequence gets in a plain block.
    """
    if isinstance(module, nn.Identity):
        return None
    if not isinstance(module, DropPath):
        raise TypeError(f"the fast SHIP path reproduces timm's DropPath or Identity, got {type(module).__name__}; "
                        "use implementation='reference'")
    if not training or module.drop_prob == 0.0:
        return None
    keep = 1.0 - module.drop_prob
    mask = like.new_empty(batch).bernoulli_(keep)
    if keep > 0.0 and module.scale_by_keep:
        mask.div_(keep)
    return mask


def masked_residual(x: torch.Tensor, branch: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """x + mask[b] * branch (per sample), as timm's DropPath (keeps only the mask for backward); x + branch
    without a mask."""
    if mask is None:
        return x + branch
    return x + branch * mask.view(-1, *([1] * (branch.ndim - 1)))
