"""SHIP's decoupled attention (DA; docs/ship_computation.md §6) over a timm ViT `Block`'s own weights.

Tokens are `[image (n) | prompts (T - n)]`, with `Xn = norm1(x) = [Z; P]`. Per head:

    image queries:  Z' = (1 - s) * softmax(Q_Z K_Z^T * scale) V_Z  +  s * softmax(Q_Z K_P^T * scale) V_P
    prompt rows:    prompts_attend=False -> P' = P  (the norm1-normed prompts pass through unchanged)
                    prompts_attend=True  -> P' = softmax(Q_P [K_Z; K_P]^T * scale) [V_Z; V_P]   (one joint softmax)

Two separate softmaxes keep the pretrained image-to-image pattern intact (scaled by 1 - s) and add a separately
normalised image-to-prompt term. The official code uses s = 0.1 and lets prompts attend only in the last block.
Then, as in a plain block, `proj` is applied to all rows (prompt rows included), followed by the residual,
norm2, MLP and residual; drop path (per sample) covers the prompt rows too, as in the official code.

With no prompt tokens (T == n) the prompt term is empty and the image rows get plain softmax attention
(no 1 - s factor): an ablation without any prompt then equals the frozen backbone.

Two forms of the image-query formula: `decoupled_attention` materialises the logits (the readable path returns
them), `decoupled_image_attention` runs it as two attention calls on given queries, keys and values (the SHIP
block, `shiplib.layers.ship_block`).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .block_parts import (BlockSettings, attend, attention_logits, check_block, check_pass_through, finish_block,
                          merge_heads, output_projection, split_qkv)
from .sdpa import attention, small_key_attention


def decoupled_attention(attn: nn.Module, xn: torch.Tensor, num_image_tokens: int, scale: float = 0.1,
                        prompts_attend: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """DA on normed tokens `xn` (B, T, D). Returns (output after proj (B, T, D), pre-softmax logits).

    The logits are (B, heads, n, T) when only the image tokens are queries, (B, heads, T, T) when prompts attend.
    """
    n, T = num_image_tokens, xn.shape[1]
    if not 0 < n <= T:
        raise ValueError(f"num_image_tokens must be in [1, {T}] for {T} tokens, got {n}")
    if T > n and not prompts_attend:
        check_pass_through(attn, xn.shape[-1])
    q, k, v = split_qkv(attn, xn)
    logits = attention_logits(attn, q if prompts_attend else q[:, :, :n], k)
    image_rows = logits[:, :, :n]
    out_image = attend(attn, image_rows[..., :n], v[:, :, :n])
    if T > n:
        out_prompt_keys = attend(attn, image_rows[..., n:], v[:, :, n:])
        out_image = (1.0 - scale) * out_image + scale * out_prompt_keys
    merged_prompts = merge_heads(attend(attn, logits[:, :, n:], v)) if prompts_attend else xn[:, n:]
    out = output_projection(attn, torch.cat([merge_heads(out_image), merged_prompts], dim=1), xn)
    return out, logits


def decoupled_block_forward(block: nn.Module, x: torch.Tensor, num_image_tokens: int, scale: float = 0.1,
                            prompts_attend: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A timm `Block` with decoupled attention: (new tokens (B, T, D), pre-softmax logits)."""
    check_block(block)
    xn = block.norm1(x)
    out, logits = decoupled_attention(block.attn, xn, num_image_tokens, scale, prompts_attend)
    return finish_block(block, x, out), logits


def decoupled_image_attention(attn: nn.Module, q: torch.Tensor, image_kv: tuple[torch.Tensor, torch.Tensor],
                              prompt_kv: tuple[torch.Tensor, torch.Tensor] | None, settings: BlockSettings,
                              training: bool) -> torch.Tensor:
    """The image-query formula above on per-head q and (keys, values) pairs, merged heads not yet formed: (1 - s)
    softmax(q K_Z^T) V_Z + s softmax(q K_P^T) V_P as two attention calls, s = `settings.da_scale` (SDPA, or with
    `settings.fused=False` the logits written out); plain attention without prompt keys. Prompt keys of batch 1
    are shared by every sample (`small_key_attention`)."""
    fused = settings.fused
    out = attention(attn, q, *image_kv, training, fused)
    if prompt_kv is None or prompt_kv[0].shape[2] == 0:
        return out
    out_prompt = small_key_attention(attn, q, *prompt_kv, training, fused)
    if torch.is_grad_enabled() and (out.requires_grad or out_prompt.requires_grad):
        return torch.lerp(out, out_prompt, settings.da_scale)
    return out.lerp_(out_prompt, settings.da_scale)  # nothing is saved for backward: reuse the buffer
