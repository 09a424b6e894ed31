"""A timm ViT `Block` run by hand with plain (joint-softmax) attention that also returns its pre-softmax logits.

Numerically the block's own forward (`block(x)`): every token is a query, key and value, one softmax over all keys.
The helpers here read the block's own weights (norm1, attn.qkv fused as q|k|v, attn.q_norm/k_norm, attn.norm,
attn.gate, attn.proj, ls1, drop_path1, norm2, mlp, ls2, drop_path2) and are shared with the decoupled attention.
"""
from __future__ import annotations

import torch
import torch.nn as nn

_BLOCK_PARTS = ("norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2")
_ATTN_PARTS = ("qkv", "q_norm", "k_norm", "attn_drop", "norm", "proj", "proj_drop", "num_heads", "head_dim", "scale")


def check_block(block: nn.Module) -> None:
    """Fail clearly if `block` is not a standard pre-norm timm ViT block with a fused qkv projection."""
    missing = [p for p in _BLOCK_PARTS if not hasattr(block, p)]
    attn = getattr(block, "attn", None)
    missing += [f"attn.{p}" for p in _ATTN_PARTS if attn is not None and not hasattr(attn, p)]
    if missing:
        raise TypeError(f"{type(block).__name__} is not a standard timm ViT Block (missing {', '.join(missing)}); "
                        "SHIP's attention needs timm.models.vision_transformer.Block with its fused-qkv Attention")
    width = attn.num_heads * attn.head_dim
    if not isinstance(attn.qkv, nn.Linear) or attn.qkv.out_features != 3 * width:
        raise TypeError(f"attn.qkv must be one nn.Linear producing q, k, v ({3 * width} outputs); "
                        f"got {attn.qkv!r}")


def split_qkv(attn: nn.Module, xn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-head q, k, v, each (B, heads, T, head_dim), from the fused projection (order q, k, v), q/k norms applied."""
    B, T, _ = xn.shape
    qkv = attn.qkv(xn).reshape(B, T, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def attention_logits(attn: nn.Module, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Pre-softmax logits q k^T * scale, (B, heads, Tq, Tk) (timm scales q first, as here)."""
    return (q * attn.scale) @ k.transpose(-2, -1)


def attend(attn: nn.Module, logits: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax over the keys (with the module's attention dropout) times the values."""
    return attn.attn_drop(logits.softmax(dim=-1)) @ v


def merge_heads(out: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, head_dim) -> (B, T, heads * head_dim)."""
    B, H, T, d = out.shape
    return out.transpose(1, 2).reshape(B, T, H * d)


def output_projection(attn: nn.Module, merged: torch.Tensor, xn: torch.Tensor) -> torch.Tensor:
    """What timm's Attention does after merging heads: norm, optional gate (computed from the block input), proj."""
    merged = attn.norm(merged)
    gate = getattr(attn, "gate", None)
    if gate is not None:
        merged = merged * gate(xn).sigmoid()
    return attn.proj_drop(attn.proj(merged))


def finish_block(block: nn.Module, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
    """Residual attention branch, then the residual MLP branch, with layer scale and drop path as in timm."""
    x = x + block.drop_path1(block.ls1(attn_out))
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def joint_block_forward(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`block(x)` computed by hand; returns (new tokens (B, T, D), pre-softmax logits (B, heads, T, T))."""
    check_block(block)
    xn = block.norm1(x)
    q, k, v = split_qkv(block.attn, xn)
    logits = attention_logits(block.attn, q, k)
    out = output_projection(block.attn, merge_heads(attend(block.attn, logits, v)), xn)
    return finish_block(block, x, out), logits
