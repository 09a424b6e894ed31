"""A timm ViT `Block` taken apart, over its own weights: the one home of the attention primitives.

Every helper applies the block's parts exactly as timm does (norm1, the fused qkv projection split q | k | v,
q_norm/k_norm, attention dropout, attn.norm, the optional gate, proj, layer scale, drop path, norm2, mlp), so a
block computed from these parts, whole or in row sets, computes what `block(x)` computes. The joint and decoupled
attentions (`joint_attention`, `decoupled_attention`) and SHIP's block (`ship_block`) are written with them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # timm's stochastic-depth module (the only one reproduced per sample besides Identity)
    from timm.layers import DropPath
except ImportError:  # pragma: no cover - older timm
    from timm.models.layers import DropPath

_BLOCK_PARTS = ("norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2")
_ATTN_PARTS = ("qkv", "q_norm", "k_norm", "attn_drop", "norm", "proj", "proj_drop", "num_heads", "head_dim", "scale")


@dataclass(frozen=True)
class BlockSettings:
    """How a block attends."""

    joint: bool  # one softmax over image and prompt keys for every query (da=False); else decoupled attention
    prompts_query: bool  # prompt rows are queries; otherwise their normed input passes through to proj
    da_scale: float  # s in (1 - s) * image-image + s * image-prompt
    top_k: int  # PML targets selected when `RowsRead.targets`
    fused: bool = True  # SDPA; False: explicit logits (the readable form)


# ----- checks -----
def check_block(block: nn.Module) -> None:
    """Fail clearly if `block` is not a standard pre-norm timm ViT block with a fused qkv projection."""
    missing = [p for p in _BLOCK_PARTS if not hasattr(block, p)]
    attn = getattr(block, "attn", None)
    missing += [f"attn.{p}" for p in _ATTN_PARTS if attn is not None and not hasattr(attn, p)]
    if missing:
        raise TypeError(f"{type(block).__name__} is not a standard timm ViT Block (missing {', '.join(missing)}); "
                        "SHIP's attention needs timm.models.vision_transformer.Block with its fused-qkv Attention")
    width = attention_width(attn)
    if not isinstance(attn.qkv, nn.Linear) or attn.qkv.out_features != 3 * width:
        raise TypeError(f"attn.qkv must be one nn.Linear producing q, k, v ({3 * width} outputs); "
                        f"got {attn.qkv!r}")


def attention_width(attn: nn.Module) -> int:
    """heads * head_dim: the width of q, k, v and of the merged heads."""
    return attn.num_heads * attn.head_dim


def check_pass_through(attn: nn.Module, width: int) -> None:
    """Rows that are not queries pass their normed input to proj in place of merged heads: the widths must agree."""
    if attention_width(attn) != width:
        raise ValueError(f"prompt rows pass through unchanged, which needs heads * head_dim == width; got "
                         f"{attention_width(attn)} != {width}")


# ----- projections -----
def _split_heads(attn: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """(B, T, heads * head_dim) -> (B, heads, T, head_dim), a view."""
    B, T, _ = t.shape
    return t.view(B, T, attn.num_heads, attn.head_dim).transpose(1, 2)


def split_qkv(attn: nn.Module, xn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-head q, k, v, each (B, heads, T, head_dim), from the fused projection, q/k norms applied."""
    B, T, _ = xn.shape
    qkv = attn.qkv(xn).reshape(B, T, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def project_q(attn: nn.Module, xn: torch.Tensor) -> torch.Tensor:
    """Queries (B, heads, T, head_dim) of normed rows `xn`, from the q slice of the fused projection."""
    w, bias, n = attn.qkv.weight, attn.qkv.bias, attention_width(attn)
    q = F.linear(xn, w[:n], None if bias is None else bias[:n])
    return attn.q_norm(_split_heads(attn, q))


def project_kv(attn: nn.Module, xn: torch.Tensor) -> torch.Tensor:
    """Keys|values of normed rows `xn` as one (B, T, 2 * width) tensor, from the k|v slice of the projection.

    Kept in token-major layout so that row sets of different origin are cheap to concatenate (dim 1) before
    `split_kv` turns them into per-head keys and values.
    """
    w, bias, n = attn.qkv.weight, attn.qkv.bias, attention_width(attn)
    return F.linear(xn, w[n:], None if bias is None else bias[n:])


def project_qkv(attn: nn.Module, xn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries (B, heads, T, head_dim) and keys|values (B, T, 2 * width) of rows that are queries and keys (one
    fused matmul, as timm)."""
    qkv, n = attn.qkv(xn), attention_width(attn)
    return attn.q_norm(_split_heads(attn, qkv[..., :n])), qkv[..., n:]


def split_kv(attn: nn.Module, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, 2 * width) keys|values -> keys, values (each (B, heads, T, head_dim)), k_norm applied."""
    B, T, _ = kv.shape
    k, v = kv.view(B, T, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    return attn.k_norm(k), v


# ----- attention -----
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


# ----- residual branches -----
def finish_block(block: nn.Module, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
    """Residual attention branch, then the residual MLP branch, with layer scale and drop path as in timm."""
    x = x + block.drop_path1(block.ls1(attn_out))
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def drop_path_mask(module: nn.Module, batch: int, training: bool, like: torch.Tensor) -> torch.Tensor | None:
    """Per-sample stochastic-depth factors (B,) as timm's DropPath draws them, or None when it is inactive.

    Drawn once per block branch and applied to every row set of a sample, like the single per-sample mask the
    whole token sequence gets in a plain block.
    """
    if isinstance(module, nn.Identity):
        return None
    if not isinstance(module, DropPath):
        raise TypeError(f"SHIP's block reproduces timm's DropPath or Identity, got {type(module).__name__}; "
                        "build the backbone with timm's stochastic depth (drop_path_rate)")
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
