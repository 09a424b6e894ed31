"""One SHIP block (docs/ship_computation.md §4-§6) over a timm ViT `Block`'s own weights, on separate row sets.

`ship_block` computes one block of SHIP for image tokens `(B, n, D)` and the prompt segments entering it
(`[image | SIP | AP | SSP]`), in one of two ways chosen like timm's `Attention.fused_attn`:
- `fused=True`: attention through SDPA, no logit matrix kept;
- `fused=False`: every attention materialises its logits (`softmax(q k^T * scale) v` written out).
Which rows are computed is the caller's `RowsRead`. The readable path of the method is this function with every row
materialised (all image rows, every prompt output, one prompt row per sample, explicit logits); the fast path asks
only for the rows a later step reads:
- prompt rows that are not queries are `p <- p + proj(LN1 p)`, `p <- p + MLP(LN2 p)`: identical for every sample
  whose rows started equal, so they are kept once per distinct value (`PromptRows`);
- their keys and values are projected once per distinct row (and may come from a cache, `PromptSegment.kv`);
- the class token's logit row, read only by the top-k selections (AP, PML), is computed on its own;
- in the last block a token-pooled head reads only the leading prefix rows (plus the PML targets while training).
Drop path draws one per-sample factor per block branch and applies it to every row set of a sample, as a plain block
does to the whole sequence.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..losses.pml import gather_tokens, top_attended_tokens
from .block_parts import (BlockSettings, attention_logits, check_pass_through, drop_path_mask, masked_residual,
                          merge_heads, output_projection, project_kv, project_q, project_qkv, split_kv)
from .decoupled_attention import decoupled_image_attention
from .sdpa import attention


# ----- prompt rows stored once per distinct value -----
@dataclass
class PromptRows:
    """Prompt tokens of a batch, one row of `values` (G, L, D) per distinct value.

    `group` (B,) maps each sample to its row; None means G == 1 (shared by every sample) or G == B (row b is
    sample b).
    """

    values: torch.Tensor
    group: torch.Tensor | None = None

    def per_sample(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        """Expand a tensor with one leading entry per distinct row (G, ...) to the batch (B, ...)."""
        if self.group is not None:
            return t[self.group]
        return t.expand(batch, *t.shape[1:]) if t.shape[0] == 1 else t

    def to_batch(self, batch: int) -> "PromptRows":
        return PromptRows(self.per_sample(self.values, batch))


def add_branch(rows: PromptRows, branch: torch.Tensor, mask: torch.Tensor | None) -> PromptRows:
    """rows + mask[b] * branch, with `branch` computed once per distinct row; splits rows whose samples' drop-path
    factors differ (a row shared by kept and dropped samples becomes two rows)."""
    if mask is None:
        return PromptRows(rows.values + branch, rows.group)
    G, B = rows.values.shape[0], mask.shape[0]
    if (rows.group is None and G == B) or torch.compiler.is_compiling():
        # compiled: one row per sample, since a row count that depends on the drop-path draws would recompile
        return PromptRows(masked_residual(rows.per_sample(rows.values, B), rows.per_sample(branch, B), mask))
    old = rows.group if rows.group is not None else torch.zeros(B, dtype=torch.long, device=mask.device)
    key = old * 2 + (mask != 0).long()
    uniq, group = torch.unique(key, return_inverse=True)
    representative = torch.empty_like(uniq).scatter_(0, group, torch.arange(B, device=mask.device))
    src = old[representative]
    values = masked_residual(rows.values[src], branch[src], mask[representative])
    return PromptRows(values, None if len(uniq) == 1 else group)


def identity_rows_update(block: nn.Module, rows: PromptRows, xn: torch.Tensor, masks: tuple) -> PromptRows:
    """A block on prompt rows that are not queries: p <- p + proj(LN1 p), p <- p + MLP(LN2 p) (+ layer scale, drop
    path). `xn` = norm1(rows.values)."""
    check_pass_through(block.attn, xn.shape[-1])
    rows = add_branch(rows, block.ls1(output_projection(block.attn, xn, xn)), masks[0])
    return add_branch(rows, block.ls2(block.mlp(block.norm2(rows.values))), masks[1])


def _has_active_dropout(block: nn.Module) -> bool:
    """Element-wise dropout on the output rows differs per sample, so rows can no longer be shared."""
    mods = [block.attn.proj_drop, *block.mlp.modules()]
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in mods)


# ----- what a block is asked -----
@dataclass
class PromptSegment:
    """One prompt kind entering the block: its rows, and/or its keys|values when a cache already holds them."""

    name: str  # "sip" | "ap" | "ssp", in token order
    rows: PromptRows | None  # None when only cached keys/values are known
    kv: torch.Tensor | None = None  # (G, L, 2 * width) keys|values, once per distinct row
    xn: torch.Tensor | None = field(default=None, repr=False)  # norm1 of the rows


@dataclass(frozen=True)
class RowsRead:
    """The outputs of one block that are read later, for one call."""

    image: int | None  # leading image rows read (a token-pooled head's prefix tokens); None: every image row
    prompts: tuple[str, ...]  # prompt kinds whose outputs are read (by the next block, or by PML)
    cls_logits: bool  # the class token's pre-softmax logit row is read (AP or PML token selection)
    targets: bool  # the PML targets are selected (and, with `image` set, their rows computed after the leading ones)


@dataclass
class BlockOutput:
    image: torch.Tensor  # image rows: all, or the leading ones then the PML targets
    cls_logits: torch.Tensor | None  # (B, heads, 1, n) pre-softmax logits of the class token's query
    targets: torch.Tensor | None  # (B, top_k) PML target indices
    prompts: dict[str, PromptRows]  # prompt outputs read later, by kind


# ----- the block -----
def ship_block(block: nn.Module, img: torch.Tensor, prompts: list[PromptSegment], rows: RowsRead,
               settings: BlockSettings, shared_kv: torch.Tensor | None = None) -> BlockOutput:
    """Block `block` on image tokens `img` (B, n, D) and `prompts` (token order), computing the rows in `rows`.

    `shared_kv`: the (1, Np, 2 * width) keys|values of all prompts when every sample has the same ones and the
    caller already holds them (an inference cache).
    """
    attn, training = block.attn, block.training
    B, n, _ = img.shape
    masks = (drop_path_mask(block.drop_path1, B, training, img), drop_path_mask(block.drop_path2, B, training, img))
    wanted = [seg for seg in prompts if seg.name in rows.prompts]
    share_rows = not (training and _has_active_dropout(block))
    for seg in prompts:
        if seg.kv is None and seg.xn is None:
            seg.rows = seg.rows if share_rows else seg.rows.to_batch(B)
            seg.xn = block.norm1(seg.rows.values)
    xn = block.norm1(img)
    # some queries attend to image and prompt keys under one softmax: project both in one go
    joint = bool(prompts) and (settings.joint or (bool(wanted) and settings.prompts_query))
    q, kv, kv_p, kv_all = _project(attn, xn if rows.image is None else xn[:, :rows.image], xn, prompts, joint,
                                   shared_kv)
    k, v = split_kv(attn, kv)
    keys = split_kv(attn, kv_all) if kv_all is not None else None  # image and prompt keys, values
    cls_logits = targets = None
    if rows.cls_logits:
        with torch.no_grad():  # only read by top-k selections, which pass no gradient
            cls_logits = attention_logits(attn, q[:, :, :1], k)
    if rows.targets:
        targets = top_attended_tokens(cls_logits, n, settings.top_k)
    rows_x, rows_xn = (img, xn) if rows.image is None else (img[:, :rows.image], xn[:, :rows.image])
    if rows.image is not None and targets is not None:
        index = torch.cat([torch.arange(rows.image, device=img.device).expand(B, -1), targets], dim=1)
        rows_x, rows_xn = gather_tokens(img, index), gather_tokens(xn, index)
        q = torch.cat([q, project_q(attn, rows_xn[:, rows.image:])], dim=2)
    if settings.joint and keys is not None:
        out = attention(attn, q, *keys, training, settings.fused)
    else:
        prompt_kv = split_kv(attn, kv_p) if kv_p is not None else None  # batch 1: shared by every sample
        out = decoupled_image_attention(attn, q, (k, v), prompt_kv, settings, training)
    image = _finish(block, rows_x, merge_heads(out), rows_xn, masks)
    return BlockOutput(image, cls_logits, targets, _prompt_outputs(block, wanted, settings, keys, masks, B))


def _project(attn: nn.Module, query_xn: torch.Tensor, xn: torch.Tensor, prompts: list[PromptSegment], joint: bool,
             shared_kv: torch.Tensor | None) -> tuple:
    """Queries of `query_xn`, image keys|values (B, n, 2 * width), prompt keys|values (B or 1, Np, 2 * width) and,
    with `joint`, all keys|values (B, n + Np, 2 * width) of which the other two are views."""
    B, n = xn.shape[:2]
    if joint:  # per sample anyway: one projection, so the joint keys are not a second copy of the image keys
        xn_p = torch.cat([seg.rows.per_sample(seg.xn, B) for seg in prompts], dim=1)
        kv_all = project_kv(attn, torch.cat([xn, xn_p], dim=1))
        return project_q(attn, query_xn), kv_all[:, :n], kv_all[:, n:], kv_all
    for seg in prompts:  # projected once per distinct prompt row, then spread over the batch
        if seg.kv is None:
            seg.kv = project_kv(attn, seg.xn)
    kv_p = _batch_prompt_kv(prompts, B, shared_kv)
    if query_xn.shape[1] == n:
        q, kv = project_qkv(attn, xn)
        return q, kv, kv_p, None
    return project_q(attn, query_xn), project_kv(attn, xn), kv_p, None


def _batch_prompt_kv(prompts: list[PromptSegment], batch: int, shared_kv: torch.Tensor | None) -> torch.Tensor | None:
    """Keys|values of all prompt tokens in token order: (1, Np, 2 * width) when every sample has the same ones
    (broadcast by attention, never copied per sample), else (B, Np, 2 * width)."""
    if not prompts:
        return None
    if all(seg.rows is None or (seg.rows.group is None and seg.kv.shape[0] == 1) for seg in prompts):
        if shared_kv is not None:
            return shared_kv
        return prompts[0].kv if len(prompts) == 1 else torch.cat([seg.kv for seg in prompts], dim=1)
    parts = [(seg.rows if seg.rows is not None else PromptRows(seg.kv)).per_sample(seg.kv, batch) for seg in prompts]
    return torch.cat(parts, dim=1)


def _finish(block: nn.Module, x: torch.Tensor, merged: torch.Tensor, xn: torch.Tensor, masks: tuple) -> torch.Tensor:
    """proj, then the residual attention and MLP branches, with layer scale and per-sample drop path."""
    y = masked_residual(x, block.ls1(output_projection(block.attn, merged, xn)), masks[0])
    return masked_residual(y, block.ls2(block.mlp(block.norm2(y))), masks[1])


def _prompt_outputs(block: nn.Module, wanted: list[PromptSegment], settings: BlockSettings, keys: tuple | None,
                    masks: tuple, batch: int) -> dict[str, PromptRows]:
    """The prompt outputs a later step reads: queries under one softmax over image and prompt keys (per sample),
    or rows that pass their normed input through to proj (once per distinct row)."""
    if not (wanted and settings.prompts_query):
        return {seg.name: identity_rows_update(block, seg.rows, seg.xn, masks) for seg in wanted}
    attn = block.attn
    xp = torch.cat([seg.rows.per_sample(seg.rows.values, batch) for seg in wanted], dim=1)
    xnp = torch.cat([seg.rows.per_sample(seg.xn, batch) for seg in wanted], dim=1)
    out = attention(attn, project_q(attn, xnp), *keys, block.training, settings.fused)
    yp = _finish(block, xp, merge_heads(out), xnp, masks)
    return {seg.name: PromptRows(part) for seg, part in zip(wanted, yp.split([seg.xn.shape[1] for seg in wanted], 1))}
