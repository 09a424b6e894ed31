"""Per-block features of a frozen timm ViT: the input of the affinity matrix and of the attribute bank.

SHIP's released code does not contain the extraction step (docs/ship_computation.md §2), so this follows the
evidence: one vector per block output, from the residual stream *before* the final LayerNorm, computed with the
frozen prompt-free backbone in eval mode. Whether the official files pooled the CLS token or the patch mean is
unknown, hence `pool`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from timm.models.vision_transformer import VisionTransformer

from ..utils.checks import choice, positive_int
from ..utils.images import iter_image_batches
from ..utils.progress import progress_bar

POOLS = ("cls", "mean")


def resolve_vit(model: torch.nn.Module) -> VisionTransformer:
    """The timm `VisionTransformer` itself, or the one a wrapper keeps in `.vit`."""
    if isinstance(model, VisionTransformer):
        return model
    inner = getattr(model, "vit", None)
    if isinstance(inner, VisionTransformer):
        return inner
    raise TypeError(
        f"expected a timm VisionTransformer or a module whose `.vit` is one, got {type(model).__name__}"
        + ("" if inner is None else f" with .vit of type {type(inner).__name__}")
    )


def _check_pool(vit: VisionTransformer, pool: str) -> None:
    choice("pool", pool, POOLS)
    if pool == "cls" and getattr(vit, "cls_token", None) is None:
        raise ValueError("pool='cls' needs a ViT with a class token (class_token=True); use pool='mean'")


def _model_device(vit: VisionTransformer) -> torch.device:
    param = next(vit.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _expected_images(images_or_loader, max_images: int | None) -> int | None:
    """Number of images for the progress bar, when it is knowable without iterating."""
    n = None
    if isinstance(images_or_loader, torch.Tensor):
        n = images_or_loader.shape[0]
    else:
        dataset = getattr(images_or_loader, "dataset", None)
        try:
            n = len(dataset) if dataset is not None else None
        except TypeError:
            n = None
    if max_images is not None:
        n = max_images if n is None else min(n, max_images)
    return n


def _pool_tokens(out, pool: str, has_prefix: bool) -> torch.Tensor:
    # forward_intermediates(return_prefix_tokens=True) yields (patch tokens, prefix tokens) pairs when the
    # model has prefix tokens (CLS first, then registers); without prefix tokens it yields patch tokens only.
    patches, prefix = out if has_prefix else (out, None)
    if pool == "cls":
        return prefix[:, 0]
    return patches.mean(dim=1)


@dataclass(frozen=True)
class _Extraction:
    """Settings of one feature pass; `layers=None` means every block."""

    pool: str
    layers: Sequence[int] | None
    max_images: int | None
    progress: bool
    batch_size: int


@torch.no_grad()
def _extract(model: torch.nn.Module, images_or_loader, how: _Extraction) -> torch.Tensor:
    vit = resolve_vit(model)
    pool, max_images = how.pool, how.max_images
    _check_pool(vit, pool)
    positive_int("max_images", max_images, allow_none=True)
    positive_int("batch_size", how.batch_size)
    device = _model_device(vit)
    has_prefix = vit.num_prefix_tokens > 0
    indices = list(range(len(vit.blocks))) if how.layers is None else list(how.layers)

    was_training = vit.training
    vit.eval()
    chunks: list[torch.Tensor] = []
    seen = 0
    bar = progress_bar(total=_expected_images(images_or_loader, max_images), unit="img",
               desc=f"block features ({pool})", disable=not how.progress)
    try:
        for x in iter_image_batches(images_or_loader, how.batch_size):
            if max_images is not None:
                x = x[: max_images - seen]
            if x.shape[0] == 0:
                break
            outs = vit.forward_intermediates(
                x.to(device=device, dtype=next(vit.parameters()).dtype),
                indices=indices, norm=False, return_prefix_tokens=True,
                output_fmt="NLC", intermediates_only=True, stop_early=True,
            )
            chunks.append(torch.stack([_pool_tokens(o, pool, has_prefix) for o in outs]).float().cpu())
            seen += x.shape[0]
            bar.update(x.shape[0])
            if max_images is not None and seen >= max_images:
                break
    finally:
        bar.close()
        vit.train(was_training)
    if not chunks:
        raise ValueError("no images were given (the loader/tensor is empty)")
    return torch.cat(chunks, dim=1)


def extract_block_features(
    vit: torch.nn.Module,
    images_or_loader,
    pool: str = "cls",
    max_images: int | None = None,
    progress: bool = True,
    batch_size: int = 64,
) -> torch.Tensor:
    """Pooled output of every block for every image: a float32 CPU tensor of shape (L, N, D).

    `pool="cls"` takes the class token, `"mean"` averages the patch tokens (prefix tokens excluded).
    Features are the residual stream before the final norm, from the frozen ViT in eval mode (its train/eval
    state is restored afterwards). `images_or_loader` is an (N, C, H, W) tensor (split into `batch_size`
    chunks) or an iterable yielding x or (x, y, ...). Images go to the ViT's device; the ViT is not moved.
    """
    return _extract(vit, images_or_loader, _Extraction(pool, None, max_images, progress, batch_size))


def extract_last_layer_features(
    vit: torch.nn.Module,
    images_or_loader,
    pool: str = "cls",
    max_images: int | None = None,
    progress: bool = True,
    batch_size: int = 64,
) -> torch.Tensor:
    """Pooled output of the last block only, (N, D): what the attribute prototypes are clustered from."""
    depth = len(resolve_vit(vit).blocks)
    return _extract(vit, images_or_loader, _Extraction(pool, [depth - 1], max_images, progress, batch_size))[0]
