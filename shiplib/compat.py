"""Checkpoints of the official SHIP code (haoweiz23/SHIP @ d65400f) <-> shiplib's `ship` model.

Official names (docs/ship_computation.md §11) and ours:

| official                                   | shiplib                                 |
|--------------------------------------------|-----------------------------------------|
| `compound_prompts_visual.<c>` (1, K, D)    | `sip_prompts.<c>`                       |
| `semantic_share_prompt` (10, D)            | `ssp_prompt`                            |
| `attribute_prompt` (2, 10, D)              | `attribute_prompts` (rows used, below)  |
| `visual_prompt_token_pos_embed` (1, K, D)  | - (never used by the official forward)  |
| `head.weight` / `head.bias`                | `vit.head.weight` / `vit.head.bias`     |
| `blocks.<i>.attn.{q,k,v}.{weight,bias}`    | `vit.blocks.<i>.attn.qkv.*`, stacked q, k, v |
| every other backbone tensor `<name>`       | `vit.<name>`                            |

The attribute bank is not in the official state dict (a plain attribute there, a non-persistent buffer here):
build the model with `prototypes=` (e.g. the official `save_attribute/<task>/prototype_200_clusters.npy`).

Attribute prompt rows: official row j is used at level start `levels[-2 + j]`. shiplib keeps only the APs at level
starts > 0 (the official code crashes with <= 2 levels), so with `levels` given the rows of unusable starts are
dropped; for the official configurations (>= 3 levels) all rows are kept.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from .methods.ship import SHIP

SIP_OFFICIAL, SIP_OURS = "compound_prompts_visual", "sip_prompts"
PROMPT_NAMES = {"semantic_share_prompt": "ssp_prompt", "attribute_prompt": "attribute_prompts"}
UNUSED_OFFICIAL = ("visual_prompt_token_pos_embed",)

# Backbone tensors of the official ViT (timm-0.5.4 layout with separate q/k/v); all other names are unexpected.
_BACKBONE = re.compile(
    r"^(cls_token|pos_embed|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)"
    r"|blocks\.\d+\.(norm1|norm2|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias))$")
_SPLIT_QKV = re.compile(r"^blocks\.(\d+)\.attn\.([qkv])\.(weight|bias)$")
_FUSED_QKV = re.compile(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")
_SIP = re.compile(rf"^{SIP_OFFICIAL}\.(\d+)$")


def _unwrap(state_dict: Mapping) -> dict[str, torch.Tensor]:
    """The model state dict from a bare state dict or a whole checkpoint {'model': ..., 'optimizer': ...}."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"expected a state dict (mapping of names to tensors), got {type(state_dict).__name__}")
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):  # saved from a DistributedDataParallel wrapper
        sd = {k[len("module."):]: v for k, v in sd.items()}
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"state dict entries must be tensors; not tensors: {bad[:5]}")
    return sd


def _attribute_rows(levels: Sequence[int] | None, num_rows: int) -> slice:
    """Official AP rows that shiplib uses: those whose level start is > 0."""
    if levels is None:
        return slice(0, num_rows)
    starts = [int(s) for s in levels][-num_rows:]
    usable = sum(1 for s in starts if s > 0)
    return slice(num_rows - usable, num_rows)


def convert_official_state_dict(state_dict: Mapping, levels: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """An official SHIP state dict (or checkpoint with a 'model' key) as a state dict of shiplib's `ship` model.

    `levels` (the official `prompt_indices`) is optional: it checks the number of SIPs and selects the usable
    attribute-prompt rows. The result loads with `strict=True` into `build_model("ship", ..., levels=levels,
    prompt_length=K, prototypes=bank)` on a timm ViT of the same architecture.
    """
    sd = _unwrap(state_dict)
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    sips: dict[int, torch.Tensor] = {}
    unexpected = []
    for name, value in sd.items():
        if name in UNUSED_OFFICIAL:
            continue
        if m := _SPLIT_QKV.match(name):
            qkv.setdefault((int(m[1]), m[3]), {})[m[2]] = value
        elif m := _SIP.match(name):
            sips[int(m[1])] = value
        elif name == "attribute_prompt":
            rows = value[_attribute_rows(levels, value.shape[0])]
            if rows.shape[0]:  # a single level uses no AP: the model has no attribute_prompts then
                out["attribute_prompts"] = rows
        elif name in PROMPT_NAMES:
            out[PROMPT_NAMES[name]] = value
        elif name in ("head.weight", "head.bias"):
            out[f"vit.{name}"] = value
        elif _BACKBONE.match(name):
            out[f"vit.{name}"] = value
        else:
            unexpected.append(name)
    if unexpected:
        hint = (" (this looks like a timm/shiplib state dict with a fused qkv, not an official one)"
                if any(_FUSED_QKV.match(k) for k in unexpected) else "")
        raise ValueError(f"unexpected tensors in the official state dict{hint}: {sorted(unexpected)[:10]}"
                         f"{' ...' if len(unexpected) > 10 else ''}. Expected the official SHIP ViT names "
                         "(docs/ship_computation.md §11): backbone, blocks.<i>.attn.q/k/v, "
                         "compound_prompts_visual.<c>, semantic_share_prompt, attribute_prompt, "
                         "visual_prompt_token_pos_embed, head.*")
    for (block, kind), parts in sorted(qkv.items()):
        missing = [p for p in "qkv" if p not in parts]
        if missing:
            raise ValueError(f"block {block} lacks attn.{'/'.join(missing)}.{kind}: q, k and v are fused together")
        out[f"vit.blocks.{block}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    if sorted(sips) != list(range(len(sips))):
        raise ValueError(f"{SIP_OFFICIAL}.<c> must be numbered 0..L-1, got {sorted(sips)}")
    if levels is not None and len(sips) != len(levels):
        raise ValueError(f"the state dict has {len(sips)} SIPs ({SIP_OFFICIAL}.*) but levels={list(levels)} has "
                         f"{len(levels)} levels; pass the run's prompt_indices")
    out.update({f"{SIP_OURS}.{c}": sips[c] for c in sorted(sips)})
    return out


def to_official_state_dict(model) -> dict[str, torch.Tensor]:
    """The official-layout state dict (CPU tensors) of a shiplib `ship` model with every prompt kind on (for round
    trips and the official code). The unused `visual_prompt_token_pos_embed` is written as zeros; attribute-prompt rows
    the model lacks (levels with < 3 entries, which the official code cannot run) are written as zeros.
    """
    if not isinstance(model, SHIP):
        raise TypeError(f"expected a shiplib 'ship' model, got {type(model).__name__}")
    cfg = model.config
    if not (cfg.sip and cfg.ssp and cfg.ap):
        raise ValueError("the official layout has SIPs, an SSP and APs; this model has some of them switched off")
    out: dict[str, torch.Tensor] = {}
    unexpected = []
    for name, value in model.vit.state_dict().items():
        value = value.detach().cpu()
        if m := _FUSED_QKV.match(name):
            for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                out[f"blocks.{m[1]}.attn.{part}.{m[2]}"] = chunk.clone()
        elif _BACKBONE.match(name) or name in ("head.weight", "head.bias"):
            out[name] = value.clone()
        else:
            unexpected.append(name)
    if unexpected:
        raise ValueError(f"the backbone has tensors the official ViT does not: {unexpected[:10]}")
    D = model.embed_dim
    for c, p in enumerate(model.sip_prompts):
        out[f"{SIP_OFFICIAL}.{c}"] = p.detach().cpu().clone()
    out["semantic_share_prompt"] = model.ssp_prompt.detach().cpu().clone()
    ap = torch.zeros(cfg.num_attribute_prompts, cfg.ap_length, D, dtype=model.ssp_prompt.dtype)
    if model.attribute_prompts is not None:
        used = model.attribute_prompts.shape[0]
        ap[cfg.num_attribute_prompts - used:] = model.attribute_prompts.detach().cpu()
    out["attribute_prompt"] = ap
    out["visual_prompt_token_pos_embed"] = torch.zeros(1, cfg.prompt_length, D, dtype=ap.dtype)
    return out
