"""Write a timm `VisionTransformer` as a Google ViT `.npz` (the layout of the original `ViT-B_16.npz`).

The layout is the exact inverse of what timm's `_load_weights` reads, so
`create_backbone("model.npz")` rebuilds the same network. This lets the `.npz` code path be tested
(and used) without downloading Google's 330 MB file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer

from ..utils.io import atomic_save_npz


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def _unsupported_features(vit: VisionTransformer) -> list[str]:
    """Parts of a timm ViT that the original Google layout has no slot for."""
    problems = []
    if not hasattr(vit.patch_embed, "proj") or hasattr(vit.patch_embed, "backbone"):
        problems.append("a hybrid (CNN) patch embedding")
    if vit.cls_token is None:
        problems.append("no class token (class_token=False)")
    if getattr(vit, "reg_token", None) is not None:
        problems.append("register tokens (reg_tokens > 0)")
    if getattr(vit, "no_embed_class", False):
        problems.append("no_embed_class=True")
    if vit.pos_embed is None:
        problems.append("no absolute position embedding")
    if getattr(vit, "attn_pool", None) is not None:
        problems.append("an attention-pool (MAP) head")
    if not isinstance(vit.norm_pre, torch.nn.Identity):
        problems.append("a pre-norm before the blocks (pre_norm=True)")
    if not isinstance(getattr(vit, "fc_norm", torch.nn.Identity()), torch.nn.Identity):
        problems.append("an fc_norm (global_pool='avg' with fc_norm)")
    if vit.patch_embed.proj.bias is None:
        problems.append("a patch embedding without bias")
    for i, blk in enumerate(vit.blocks):
        if getattr(blk.attn, "qkv", None) is None or blk.attn.qkv.bias is None:
            problems.append(f"block {i} has no fused qkv with bias (qkv_bias=False?)")
            break
        if not isinstance(blk.ls1, torch.nn.Identity) or not isinstance(blk.ls2, torch.nn.Identity):
            problems.append(f"block {i} uses layer scale (init_values)")
            break
        if (not isinstance(blk.attn.q_norm, torch.nn.Identity)
                or not isinstance(getattr(blk.attn, "norm", torch.nn.Identity()), torch.nn.Identity)):
            problems.append(f"block {i} uses qk_norm / attention norm")
            break
    return problems


def google_npz_arrays(vit: VisionTransformer) -> dict[str, np.ndarray]:
    """The Google ViT arrays (float32) for `vit`, keyed as in `ViT-B_16.npz`.

    Raises ValueError for ViT variants the original layout cannot hold (no CLS token, layer scale, ...).
    """
    if not isinstance(vit, VisionTransformer):
        raise ValueError(f"export_google_npz needs a timm VisionTransformer, got {type(vit).__name__}")
    problems = _unsupported_features(vit)
    if problems:
        raise ValueError("this ViT cannot be written in Google's original .npz layout: it has "
                         + "; ".join(problems) + ". Save it as .safetensors instead.")
    proj = vit.patch_embed.proj.weight  # (D, C, p, p)
    dim, chans, p = proj.shape[0], proj.shape[1], proj.shape[-1]
    if p == 1 and chans == 1:
        # timm's reader flattens any (1, 1, 1, D) kernel, so a 1-px, 1-channel stem would not round-trip
        raise ValueError("a patch size of 1 with 1 input channel cannot round-trip through the .npz layout")
    w = {
        "embedding/kernel": _np(proj.permute(2, 3, 1, 0)),  # (p, p, C, D)
        "embedding/bias": _np(vit.patch_embed.proj.bias),
        "cls": _np(vit.cls_token),  # (1, 1, D)
        "Transformer/posembed_input/pos_embedding": _np(vit.pos_embed),  # (1, N, D), CLS position first
    }
    for i, blk in enumerate(vit.blocks):
        bp = f"Transformer/encoderblock_{i}/"
        mha = bp + "MultiHeadDotProductAttention_1/"
        heads = blk.attn.num_heads
        head_dim = blk.attn.qkv.weight.shape[0] // (3 * heads)
        w[bp + "LayerNorm_0/scale"] = _np(blk.norm1.weight)
        w[bp + "LayerNorm_0/bias"] = _np(blk.norm1.bias)
        qkv_w = blk.attn.qkv.weight.chunk(3, dim=0)  # each (H*hd, D)
        qkv_b = blk.attn.qkv.bias.chunk(3, dim=0)
        for name, wt, b in zip(("query", "key", "value"), qkv_w, qkv_b):
            w[mha + f"{name}/kernel"] = _np(wt.T.reshape(dim, heads, head_dim))  # (D, H, hd)
            w[mha + f"{name}/bias"] = _np(b.reshape(heads, head_dim))  # (H, hd)
        out = blk.attn.proj.weight  # (D, H*hd)
        w[mha + "out/kernel"] = _np(out.reshape(out.shape[0], heads, head_dim).permute(1, 2, 0))  # (H, hd, D)
        w[mha + "out/bias"] = _np(blk.attn.proj.bias)
        w[bp + "LayerNorm_2/scale"] = _np(blk.norm2.weight)
        w[bp + "LayerNorm_2/bias"] = _np(blk.norm2.bias)
        for r, fc in enumerate((blk.mlp.fc1, blk.mlp.fc2)):
            w[bp + f"MlpBlock_3/Dense_{r}/kernel"] = _np(fc.weight.T)  # (in, out)
            w[bp + f"MlpBlock_3/Dense_{r}/bias"] = _np(fc.bias)
    w["Transformer/encoder_norm/scale"] = _np(vit.norm.weight)
    w["Transformer/encoder_norm/bias"] = _np(vit.norm.bias)
    if isinstance(vit.head, torch.nn.Linear):
        w["head/kernel"] = _np(vit.head.weight.T)  # (D, classes)
        w["head/bias"] = _np(vit.head.bias)
    return w


def export_google_npz(vit: VisionTransformer, path: str | os.PathLike) -> Path:
    """Write `vit` atomically as a Google ViT `.npz` at `path` (must end in `.npz`); returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"Google ViT checkpoints are .npz files; got {path.name!r}")
    return atomic_save_npz(path, **google_npz_arrays(vit))
