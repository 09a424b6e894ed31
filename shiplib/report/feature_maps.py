"""Feature maps of consecutive layers for a few images (paper Fig. 1(a)): per-layer patch-token maps.

Three views of each block's output (residual stream before the final norm, frozen ViT in eval mode):
- "pca": the first three principal components of the patch tokens as RGB, fitted per layer over all shown
  images (so colours compare across images of one layer), each channel scaled to [0, 1] by its 1st/99th
  percentile; signs are fixed so each component's largest loading is positive (deterministic);
- "norm": the L2 norm of every patch token;
- "cos_next": the cosine between a patch token at block l and the same patch at block l+1.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data import build_dataset
from ..hierarchy import resolve_vit
from ..utils.checks import choice
from .affinity import AFFINITY_PRESET, benchmark_backbone

KINDS = ("pca", "norm", "cos_next")


def sample_images(task: str, n: int = 4, split: str = "test", data_root=None, img_size: int | None = None,
                  seed: int = 0) -> dict:
    """`n` images of a task (a seeded draw): model inputs (n, C, H, W) preprocessed as in a run, the raw RGB
    arrays, labels, indices."""
    _, size = benchmark_backbone(task, None, img_size)
    ds = build_dataset(task, split, root=data_root, preset=AFFINITY_PRESET, img_size=size)
    if not 0 < n <= len(ds):
        raise ValueError(f"n must be in 1..{len(ds)} (the size of {task}/{split}), got {n}")
    idx = sorted(np.random.default_rng(seed).choice(len(ds), size=n, replace=False).tolist())
    x = torch.stack([ds[i][0] for i in idx])
    raw = [np.asarray(ds.load_image(i).convert("RGB").resize((size, size))) for i in idx]
    return dict(images=x, raw=raw, labels=[ds.targets[i] for i in idx], indices=idx, task=task, split=split)


@torch.no_grad()
def block_patch_tokens(vit, images: torch.Tensor, layers=None) -> torch.Tensor:
    """Patch tokens of the chosen blocks as a (n_layers, n_images, D, gh, gw) CPU float tensor."""
    vit = resolve_vit(vit)
    depth = len(vit.blocks)
    layers = list(range(depth)) if layers is None else [int(i) for i in layers]
    bad = [i for i in layers if not 0 <= i < depth]
    if bad:
        raise ValueError(f"layers {bad} are outside the backbone's blocks 0..{depth - 1}")
    was_training = vit.training
    vit.eval()
    try:
        param = next(vit.parameters())
        outs = vit.forward_intermediates(images.to(param.device, param.dtype), indices=layers, norm=False,
                                         output_fmt="NCHW", intermediates_only=True)
    finally:
        vit.train(was_training)
    return torch.stack([o.float().cpu() for o in outs])


def _pca_rgb(tokens: torch.Tensor) -> np.ndarray:
    """tokens (n, D, gh, gw) -> (n, gh, gw, 3) in [0, 1]."""
    n, d, gh, gw = tokens.shape
    flat = tokens.permute(0, 2, 3, 1).reshape(-1, d).double()
    flat = flat - flat.mean(0)
    _, _, vt = torch.linalg.svd(flat, full_matrices=False)
    comps = vt[:3]
    signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    proj = (flat @ (comps * signs).T).numpy()
    if proj.shape[1] < 3:  # fewer than 3 dims or tokens: pad with zeros (grey)
        proj = np.pad(proj, ((0, 0), (0, 3 - proj.shape[1])))
    lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
    scaled = np.clip((proj - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1)
    return scaled.reshape(n, gh, gw, 3).astype(np.float32)


def layer_feature_maps(vit, images: torch.Tensor, layers=None, kind: str = "pca") -> np.ndarray:
    """Per-layer maps: "pca" (n_images, n_layers, gh, gw, 3), "norm" (n_images, n_layers, gh, gw),
    "cos_next" (n_images, n_layers - 1, gh, gw) between consecutive chosen layers."""
    choice("kind", kind, KINDS)
    tokens = block_patch_tokens(vit, images, layers)  # (L, n, D, gh, gw)
    if kind == "pca":
        return np.stack([_pca_rgb(t) for t in tokens], axis=1)
    if kind == "norm":
        return tokens.norm(dim=2).permute(1, 0, 2, 3).numpy()
    if tokens.shape[0] < 2:
        raise ValueError("kind='cos_next' needs at least two layers")
    cos = torch.nn.functional.cosine_similarity(tokens[:-1], tokens[1:], dim=2)
    return cos.permute(1, 0, 2, 3).numpy()
