"""The fast execution of SHIP's block plan: the same computation as the readable path, without its redundant work.

What the readable path (`SHIP.reference_forward_features`, one concatenated token tensor per block) does that is
not needed:
- it materialises the (B, heads, n, T) logits of every block to read one row of them (the CLS query, for the
  AP and PML top-k): here attention runs through SDPA and the CLS logit row is computed on its own;
- it computes q for prompt rows that are not queries, and proj/MLP for prompt outputs nobody reads (SSP outputs
  are replaced at every block, SIP/AP outputs at every level start): here only the rows the plan says are read
  (`BlockPlan.rows_read`) are computed;
- it runs the input-independent prompts (SIP, SSP) once per sample: in blocks where prompts are not queries their
  rows are `p <- p + proj(LN1 p)`, `p <- p + MLP(LN2 p)`, identical for every sample, so they are kept once per
  distinct value (`PromptRows`: once per batch, or once per distinct drop-path history while training);
- at inference their keys/values do not depend on the input at all: they are computed once and cached
  (`PromptKVCache`, keyed on the parameters' identity and version counters);
- in the last block only the rows that are read are computed: the CLS row for the head (plus, while training
  with PML, the top-k target rows and the prompt rows).
Drop path draws one per-sample factor per block branch and applies it to image and prompt rows alike, as the
plain block does to the whole sequence (same distribution; the random draws differ from the readable path).

Only the model's public interface is used: `plan`, `config`, `vit`, `embed`, `inserted_prompt`, `pml_targets`,
`prompt_cache` and its prompt parameters.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..layers.block_parts import (attention_logits, check_pass_through, drop_path_mask, masked_residual,
                                  merge_heads, output_projection, project_kv, project_q, project_qkv, split_kv)
from ..layers.decoupled_attention import decoupled_sdpa
from ..layers.sdpa import sdpa
from ..losses.pml import gather_tokens, prompt_matching_loss
from .ship_plan import BlockStep, RowsRead

CACHED_KINDS = ("sip", "ssp")  # input-independent prompts, whose keys/values the inference cache holds


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
    if rows.group is None and G == B:
        return PromptRows(masked_residual(rows.values, branch, mask))
    old = rows.group if rows.group is not None else torch.zeros(B, dtype=torch.long, device=mask.device)
    key = old * 2 + (mask != 0).long()
    uniq, group = torch.unique(key, return_inverse=True)
    representative = torch.empty_like(uniq).scatter_(0, group, torch.arange(B, device=mask.device))
    src = old[representative]
    values = masked_residual(rows.values[src], branch[src], mask[representative])
    return PromptRows(values, None if len(uniq) == 1 else group)


def _has_active_dropout(block: nn.Module) -> bool:
    """Element-wise dropout on the output rows differs per sample, so rows can no longer be shared."""
    mods = [block.attn.proj_drop, *block.mlp.modules()]
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in mods)


def identity_rows_update(block: nn.Module, rows: PromptRows, xn: torch.Tensor, masks: tuple) -> PromptRows:
    """A block on prompt rows that are not queries: p <- p + proj(LN1 p), p <- p + MLP(LN2 p) (+ layer scale, drop
    path). `xn` = norm1(rows.values)."""
    check_pass_through(block.attn, xn.shape[-1])
    rows = add_branch(rows, block.ls1(output_projection(block.attn, xn, xn)), masks[0])
    return add_branch(rows, block.ls2(block.mlp(block.norm2(rows.values))), masks[1])


# ----- cached prompt keys/values for inference -----
def _state_key(model: nn.Module) -> tuple:
    return tuple((id(t), t._version, t.data_ptr(), t.dtype, t.device, tuple(t.shape))
                 for t in (*model.parameters(), *model.buffers()))


class PromptKVCache:
    """Per-block keys/values of the input-independent prompts (SIP, SSP) at inference.

    Valid while no parameter changes: the key holds every parameter's id, version counter (bumped by optimizer
    steps and `load_state_dict`'s in-place copies), storage, dtype and device. `SHIP.train()` and
    `load_state_dict` also clear it.
    """

    def __init__(self):
        self._key: tuple | None = None
        self._kv: list[dict[str, torch.Tensor]] | None = None

    def clear(self) -> None:
        self._key, self._kv = None, None

    @property
    def filled(self) -> bool:
        return self._kv is not None

    def lookup(self, model) -> list[dict[str, torch.Tensor]]:
        key = _state_key(model)
        if key != self._key:
            with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable outside inference mode
                self._kv = shared_prompt_kv(model)
            self._key = key
        return self._kv


def shared_prompt_kv(model) -> list[dict[str, torch.Tensor]]:
    """For every block, {"sip": kv, "ssp": kv, "shared": [sip | ssp] kv}: keys|values (1, L, 2 * width) of the
    input-independent prompts entering it.

    Only valid where those prompts are not queries before the last block and no drop path is active (eval mode).
    """
    out, sip = [], None
    for step in model.plan.steps:
        blk, entry = model.vit.blocks[step.index], {}
        if "sip" in step.prompts:
            if "sip" not in step.carried:
                sip = PromptRows(model.inserted_prompt("sip", step))
            xn = blk.norm1(sip.values)
            entry["sip"] = project_kv(blk.attn, xn)
            if "sip" in step.hands_on:
                sip = identity_rows_update(blk, sip, xn, (None, None))
        if "ssp" in step.prompts:
            entry["ssp"] = project_kv(blk.attn, blk.norm1(model.inserted_prompt("ssp", step)))
        entry["shared"] = torch.cat(list(entry.values()), dim=1)  # [SIP | SSP] for blocks without an AP
        out.append(entry)
    return out


def uses_prompt_cache(model) -> bool:
    """Eval mode, cached prompts that are queries in no block but the last (decoupled attention everywhere), and
    no gradient wanted for the prompts."""
    steps = model.plan.steps
    if model.training or not any(k in CACHED_KINDS for s in steps for k in s.prompts):
        return False
    if any(s.attention != "decoupled" or (s.prompts_query and not s.last) for s in steps):
        return False
    prompts = [*model.sip_prompts, *([model.ssp_prompt] if model.ssp_prompt is not None else [])]
    return not (torch.is_grad_enabled() and any(p.requires_grad for p in prompts))


# ----- one block on separate row sets -----
@dataclass
class _Segment:
    name: str  # "sip" | "ap" | "ssp", in token order
    rows: PromptRows | None  # None when only cached keys/values are known
    kv: torch.Tensor | None = None  # (G, L, 2 * width) keys|values, once per distinct row
    xn: torch.Tensor | None = None  # norm1 of the rows


def _batch_prompt_kv(segments: list[_Segment], batch: int, shared_kv: torch.Tensor | None) -> torch.Tensor | None:
    """Keys|values of all prompt tokens in token order: (1, Np, 2 * width) when every sample has the same ones
    (broadcast by SDPA, never copied per sample), else (B, Np, 2 * width). `shared_kv`: that (1, Np, .) tensor when
    the caller already has it (the inference cache)."""
    if not segments:
        return None
    if all(seg.rows is None or (seg.rows.group is None and seg.kv.shape[0] == 1) for seg in segments):
        if shared_kv is not None:
            return shared_kv
        return segments[0].kv if len(segments) == 1 else torch.cat([seg.kv for seg in segments], dim=1)
    parts = [(seg.rows if seg.rows is not None else PromptRows(seg.kv)).per_sample(seg.kv, batch) for seg in segments]
    return torch.cat(parts, dim=1)


def _run_block(model, step: BlockStep, img: torch.Tensor, segments: list[_Segment], rows: RowsRead,
               shared_kv: torch.Tensor | None = None):
    """Block `step.index` on image tokens `img` (B, n, D) and prompt segments, computing the rows in `rows`.

    Returns (image rows out: all, CLS only, or CLS then the PML targets; CLS logits (B, heads, 1, n) or None;
    PML target index or None; {kind: PromptRows out}).
    """
    blk = model.vit.blocks[step.index]
    attn, training = blk.attn, model.training
    B, n, D = img.shape
    masks = (drop_path_mask(blk.drop_path1, B, training, img), drop_path_mask(blk.drop_path2, B, training, img))
    share_rows = not (training and _has_active_dropout(blk))
    joint_attention = step.attention == "joint"

    wanted = [seg for seg in segments if seg.name in rows.prompts]
    for seg in segments:
        if seg.kv is None and seg.xn is None:
            if not share_rows:
                seg.rows = seg.rows.to_batch(B)
            seg.xn = blk.norm1(seg.rows.values)
    xn = blk.norm1(img)
    joint = None
    if segments and (joint_attention or (wanted and step.prompts_query)):
        # some queries attend to image and prompt keys at once: project both in one go, so the joint keys are
        # not a second copy of the image keys
        xn_p = torch.cat([seg.rows.per_sample(seg.xn, B) for seg in segments], dim=1)
        kv_all = project_kv(attn, torch.cat([xn, xn_p], dim=1))
        kv, kv_p = kv_all[:, :n], kv_all[:, n:]
        joint = split_kv(attn, kv_all)
        q = project_q(attn, xn if rows.image == "all" else xn[:, :1])
    else:
        # prompt keys|values projected once per distinct prompt row, then spread over the batch
        for seg in segments:
            if seg.kv is None:
                seg.kv = project_kv(attn, seg.xn)
        kv_p = _batch_prompt_kv(segments, B, shared_kv)
        if rows.image == "all":
            q, kv = project_qkv(attn, xn)
        else:
            kv = project_kv(attn, xn)
            q = project_q(attn, xn[:, :1])
    k, v = split_kv(attn, kv)
    cls_logits = None
    if rows.cls_logits:
        with torch.no_grad():  # only read by top-k selections, which pass no gradient
            cls_logits = attention_logits(attn, q[:, :, :1], k)
    targets = model.pml_targets(cls_logits, n) if rows.targets else None
    if rows.image == "all":
        rows_x, rows_xn = img, xn
    elif rows.image == "cls":
        rows_x, rows_xn = img[:, :1], xn[:, :1]
    else:  # "cls+targets"
        index = torch.cat([targets.new_zeros(B, 1), targets], dim=1)
        rows_x, rows_xn = gather_tokens(img, index), gather_tokens(xn, index)
        q = torch.cat([q, project_q(attn, rows_xn[:, 1:])], dim=2)
    if joint is not None and joint_attention:
        out = sdpa(attn, q, *joint, training)
    else:
        k_p, v_p = split_kv(attn, kv_p) if kv_p is not None else (None, None)  # batch 1: shared by all samples
        out = decoupled_sdpa(attn, q, k, v, k_p, v_p, model.config.da_scale, training)
    y = masked_residual(rows_x, blk.ls1(output_projection(attn, merge_heads(out), rows_xn)), masks[0])
    y = masked_residual(y, blk.ls2(blk.mlp(blk.norm2(y))), masks[1])

    # prompt outputs that a later step reads
    new: dict[str, PromptRows] = {}
    if wanted and step.prompts_query:  # joint softmax over image and prompt keys: outputs differ per sample
        xp = torch.cat([seg.rows.per_sample(seg.rows.values, B) for seg in wanted], dim=1)
        xnp = torch.cat([seg.rows.per_sample(seg.xn, B) for seg in wanted], dim=1)
        outp = sdpa(attn, project_q(attn, xnp), *joint, training)
        yp = masked_residual(xp, blk.ls1(output_projection(attn, merge_heads(outp), xnp)), masks[0])
        yp = masked_residual(yp, blk.ls2(blk.mlp(blk.norm2(yp))), masks[1])
        for seg, part in zip(wanted, yp.split([seg.rows.values.shape[1] for seg in wanted], dim=1)):
            new[seg.name] = PromptRows(part)
    else:
        for seg in wanted:
            new[seg.name] = identity_rows_update(blk, seg.rows, seg.xn, masks)
    return y, cls_logits, targets, new


# ----- the whole forward -----
def head_reads_cls_only(vit: nn.Module) -> bool:
    """The classifier reads only the CLS token (timm global_pool='token', no attention pooling)."""
    return (getattr(vit, "global_pool", None) == "token" and getattr(vit, "attn_pool", None) is None
            and getattr(vit, "cls_token", None) is not None)


def fast_forward(model, x: torch.Tensor, head_only: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SHIP's forward on images `x`: (final-normed image tokens, losses).

    head_only=True returns only the CLS row (B, 1, D) (enough for a 'token'-pooled head); else all image rows.
    """
    plan, pml = model.plan, model.config.pml and model.training
    img = model.embed(x)
    B, n = img.shape[:2]
    cache = model.prompt_cache.lookup(model) if uses_prompt_cache(model) else None
    cached = CACHED_KINDS if cache is not None else ()
    cls_logits, targets, outputs = None, None, {}
    for step in plan.steps:
        segments = []
        for kind in step.prompts:
            if kind in cached:
                segments.append(_Segment(kind, None, cache[step.index][kind]))
            elif kind in step.carried:
                segments.append(_Segment(kind, outputs[kind]))
            else:
                segments.append(_Segment(kind, PromptRows(model.inserted_prompt(kind, step, img, cls_logits))))
        rows = plan.rows_read(step, head_only, pml, skip=cached)
        shared_kv = cache[step.index]["shared"] if cache is not None and "ap" not in step.prompts else None
        img, cls_logits, targets, outputs = _run_block(model, step, img, segments, rows, shared_kv)
    losses = {}
    if model.config.pml:
        if pml:  # on the last block's outputs, before the final norm
            prompts = [outputs[k].per_sample(outputs[k].values, B) for k in plan.steps[-1].prompts]
            image_targets = img[:, 1:] if head_only else gather_tokens(img, targets)
            losses["pml"] = prompt_matching_loss(torch.cat(prompts, dim=1) if prompts else img[:, :0], image_targets)
        else:
            losses["pml"] = img.new_zeros(())
    return model.vit.norm(img[:, :1] if head_only else img), losses
