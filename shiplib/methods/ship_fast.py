"""The fast SHIP forward: the same computation as `SHIP`'s reference path, without its redundant work.

What the reference path (ship.py, one concatenated token tensor per block) does that is not needed:
- it materialises the (B, heads, n, T) logits of every block to read one row of them (the CLS query, for the
  AP and PML top-k): here attention runs through SDPA and the CLS logit row is computed on its own;
- it computes q for prompt rows that are not queries, and proj/MLP for prompt outputs nobody reads (SSP outputs
  are replaced at every block, SIP/AP outputs at every level start): here only the rows a later step reads are
  computed;
- it runs the input-independent prompts (SIP, SSP) once per sample: in blocks where prompts are not queries their
  rows are `p <- p + proj(LN1 p)`, `p <- p + MLP(LN2 p)`, identical for every sample, so they are kept once per
  distinct value (`PromptRows`: once per batch, or once per distinct drop-path history while training);
- at inference their keys/values do not depend on the input at all: they are computed once and cached
  (`PromptKVCache`, keyed on the parameters' identity and version counters);
- in the last block only the rows that are read are computed: the CLS row for the head (plus, while training
  with PML, the top-k target rows and the prompt rows).
Drop path draws one per-sample factor per block branch and applies it to image and prompt rows alike, as the
plain block does to the whole sequence (same distribution; the random draws differ from the reference path).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..layers.fast_attention import (decoupled_sdpa, drop_path_mask, masked_residual, merge_heads, project_kv,
                                     project_q, project_qkv, query_logits, sdpa, split_kv)
from ..layers.joint_attention import output_projection
from ..losses.pml import gather_tokens, prompt_matching_loss, top_attended_tokens


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
    rows = add_branch(rows, block.ls1(output_projection(block.attn, xn, xn)), masks[0])
    return add_branch(rows, block.ls2(block.mlp(block.norm2(rows.values))), masks[1])


def _check_pass_through(attn: nn.Module, width: int) -> None:
    if attn.num_heads * attn.head_dim != width:
        raise ValueError(f"prompt rows pass through unchanged, which needs heads * head_dim == width; got "
                         f"{attn.num_heads * attn.head_dim} != {width}")


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
    prompts entering it.

    Only valid where prompts are not queries before the last block and no drop path is active (eval mode).
    """
    cfg, levels = model.config, model._level_of_start
    out, sip = [], None
    for i, blk in enumerate(model.vit.blocks):
        entry = {}
        if cfg.sip:
            if i in levels:
                sip = PromptRows(model.sip_prompts[levels[i]])
            xn = blk.norm1(sip.values)
            entry["sip"] = project_kv(blk.attn, xn)
            if i + 1 < model.depth and i + 1 not in levels:
                _check_pass_through(blk.attn, xn.shape[-1])
                sip = identity_rows_update(blk, sip, xn, (None, None))
        if cfg.ssp:
            entry["ssp"] = project_kv(blk.attn, blk.norm1(model.ssp_prompt.unsqueeze(0)))
        entry["shared"] = torch.cat(list(entry.values()), dim=1)  # [SIP | SSP] for blocks without an AP
        out.append(entry)
    return out


def uses_prompt_cache(model) -> bool:
    """Eval mode, prompts queries only in the last block, and no gradient wanted for the prompts."""
    cfg = model.config
    if model.training or not cfg.da or cfg.prompt_queries != "last" or not (cfg.sip or cfg.ssp):
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


def _run_block(model, i: int, img: torch.Tensor, segments: list[_Segment], query_rows: str, need_cls: bool,
               outputs: set[str], shared_kv: torch.Tensor | None = None):
    """Block i on image tokens `img` (B, n, D) and prompt segments.

    query_rows: "all" image rows, "cls" (row 0 only) or "cls+topk" (row 0, then the top_k PML targets).
    Returns (image rows out, CLS logits (B, heads, 1, n) or None, top-k index or None, {name: PromptRows out}).
    """
    cfg, blk = model.config, model.vit.blocks[i]
    attn, training = blk.attn, model.training
    B, n, D = img.shape
    last = i == model.depth - 1
    prompts_attend = not cfg.da or cfg.prompt_queries == "all" or last
    masks = (drop_path_mask(blk.drop_path1, B, training, img), drop_path_mask(blk.drop_path2, B, training, img))
    share_rows = not (training and _has_active_dropout(blk))

    wanted = [seg for seg in segments if seg.name in outputs]
    for seg in segments:
        if seg.kv is None and seg.xn is None:
            if not share_rows:
                seg.rows = seg.rows.to_batch(B)
            seg.xn = blk.norm1(seg.rows.values)
    xn = blk.norm1(img)
    joint = None
    if segments and (not cfg.da or (wanted and prompts_attend)):
        # some queries attend to image and prompt keys at once: project both in one go, so the joint keys are
        # not a second copy of the image keys
        xn_p = torch.cat([seg.rows.per_sample(seg.xn, B) for seg in segments], dim=1)
        kv_all = project_kv(attn, torch.cat([xn, xn_p], dim=1))
        kv, kv_p = kv_all[:, :n], kv_all[:, n:]
        joint = split_kv(attn, kv_all)
        q = project_q(attn, xn if query_rows == "all" else xn[:, :1])
    else:
        # prompt keys|values projected once per distinct prompt row, then spread over the batch
        for seg in segments:
            if seg.kv is None:
                seg.kv = project_kv(attn, seg.xn)
        kv_p = _batch_prompt_kv(segments, B, shared_kv)
        if query_rows == "all":
            q, kv = project_qkv(attn, xn)
        else:
            kv = project_kv(attn, xn)
            q = project_q(attn, xn[:, :1])
    k, v = split_kv(attn, kv)
    if need_cls or query_rows == "cls+topk":
        with torch.no_grad():  # only read by top-k selections, which pass no gradient
            cls_logits = query_logits(attn, q[:, :, :1], k)
    else:
        cls_logits = None
    topk = top_attended_tokens(cls_logits, n, cfg.top_k) if query_rows == "cls+topk" else None
    if query_rows == "all":
        rows_x, rows_xn = img, xn
    elif query_rows == "cls":
        rows_x, rows_xn = img[:, :1], xn[:, :1]
    else:
        index = torch.cat([topk.new_zeros(B, 1), topk], dim=1)
        rows_x, rows_xn = gather_tokens(img, index), gather_tokens(xn, index)
        q = torch.cat([q, project_q(attn, rows_xn[:, 1:])], dim=2)
    if joint is not None and not cfg.da:
        out = sdpa(attn, q, *joint, training)
    else:
        k_p, v_p = split_kv(attn, kv_p) if kv_p is not None else (None, None)  # batch 1: shared by all samples
        out = decoupled_sdpa(attn, q, k, v, k_p, v_p, cfg.da_scale, training)
    y = masked_residual(rows_x, blk.ls1(output_projection(attn, merge_heads(out), rows_xn)), masks[0])
    y = masked_residual(y, blk.ls2(blk.mlp(blk.norm2(y))), masks[1])

    # prompt outputs that a later step reads
    new: dict[str, PromptRows] = {}
    if wanted and prompts_attend:  # joint softmax over image and prompt keys: outputs differ per sample
        xp = torch.cat([seg.rows.per_sample(seg.rows.values, B) for seg in wanted], dim=1)
        xnp = torch.cat([seg.rows.per_sample(seg.xn, B) for seg in wanted], dim=1)
        outp = sdpa(attn, project_q(attn, xnp), *joint, training)
        yp = masked_residual(xp, blk.ls1(output_projection(attn, merge_heads(outp), xnp)), masks[0])
        yp = masked_residual(yp, blk.ls2(blk.mlp(blk.norm2(yp))), masks[1])
        for seg, part in zip(wanted, yp.split([seg.rows.values.shape[1] for seg in wanted], dim=1)):
            new[seg.name] = PromptRows(part)
    elif wanted:
        _check_pass_through(attn, D)
        for seg in wanted:
            new[seg.name] = identity_rows_update(blk, seg.rows, seg.xn, masks)
    return y, cls_logits, topk, new


# ----- the whole forward -----
def head_reads_cls_only(vit: nn.Module) -> bool:
    """The classifier reads only the CLS token (timm global_pool='token', no attention pooling)."""
    return (getattr(vit, "global_pool", None) == "token" and getattr(vit, "attn_pool", None) is None
            and getattr(vit, "cls_token", None) is not None)


def fast_forward(model, x: torch.Tensor, head_only: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SHIP's forward on images `x`: (final-normed image tokens, losses).

    head_only=True returns only the CLS row (B, 1, D) (enough for a 'token'-pooled head); else all image rows.
    """
    cfg, levels, ap_rows = model.config, model._level_of_start, model._ap_row
    img = model.embed(x)
    B, n = img.shape[:2]
    want_pml = cfg.pml and model.training
    cache = model.prompt_cache.lookup(model) if uses_prompt_cache(model) else None
    sip = ap = None
    cls_logits, topk, new = None, None, {}
    for i in range(model.depth):
        last = i == model.depth - 1
        if i in levels:
            sip = PromptRows(model.sip_prompts[levels[i]]) if cfg.sip else None
            ap = PromptRows(model._attribute_prompt(ap_rows[i], img, cls_logits, n)) if i in ap_rows else None
        else:
            sip, ap = new.get("sip"), new.get("ap")  # carried outputs (SIP: from the cache when there is one)
        segments = []
        if cfg.sip:
            segments.append(_Segment("sip", None, cache[i]["sip"]) if cache is not None else _Segment("sip", sip))
        if ap is not None:
            segments.append(_Segment("ap", ap))
        if cfg.ssp:
            segments.append(_Segment("ssp", None, cache[i]["ssp"]) if cache is not None
                            else _Segment("ssp", PromptRows(model.ssp_prompt.unsqueeze(0))))
        if last:
            query_rows = "all" if not head_only else ("cls+topk" if want_pml else "cls")
            outputs = {"sip", "ap", "ssp"} if want_pml else set()
        else:
            query_rows = "all"
            outputs = set() if i + 1 in levels else ({"ap"} if cache is not None else {"sip", "ap"})
        need_cls = (i + 1) in ap_rows or (last and want_pml)
        shared_kv = cache[i]["shared"] if cache is not None and ap is None else None
        img, cls_logits, topk, new = _run_block(model, i, img, segments, query_rows, need_cls, outputs, shared_kv)
    losses = {}
    if cfg.pml:
        if want_pml:
            prompts = [new[s.name].per_sample(new[s.name].values, B) for s in segments]
            if topk is None:
                topk = top_attended_tokens(cls_logits, n, cfg.top_k)
                targets = gather_tokens(img, topk)
            else:
                targets = img[:, 1:]
            losses["pml"] = prompt_matching_loss(torch.cat(prompts, dim=1) if prompts else img[:, :0], targets)
        else:
            losses["pml"] = img.new_zeros(())
    tokens = img[:, :1] if head_only else img
    return model.vit.norm(tokens), losses
