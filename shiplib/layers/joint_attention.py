"""A timm ViT `Block` run by hand with plain (joint-softmax) attention that also returns its pre-softmax logits.

Numerically the block's own forward (`block(x)`): every token is a query, key and value, one softmax over all keys.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .block_parts import attend, attention_logits, check_block, finish_block, merge_heads, output_projection, split_qkv


def joint_block_forward(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`block(x)` computed by hand; returns (new tokens (B, T, D), pre-softmax logits (B, heads, T, T))."""
    check_block(block)
    xn = block.norm1(x)
    q, k, v = split_qkv(block.attn, xn)
    logits = attention_logits(block.attn, q, k)
    out = output_projection(block.attn, merge_heads(attend(block.attn, logits, v)), xn)
    return finish_block(block, x, out), logits
