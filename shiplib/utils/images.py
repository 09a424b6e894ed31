"""Image batches from what callers pass as "images": a tensor or a loader."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch


def iter_image_batches(images, batch_size: int = 64) -> Iterator[torch.Tensor]:
    """(B, C, H, W) batches from an (N, C, H, W) tensor (split into `batch_size` chunks) or from an iterable (e.g. a
    DataLoader) yielding x or (x, y, ...)."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"an image tensor must be (N, C, H, W), got shape {tuple(images.shape)}")
        yield from images.split(batch_size)
        return
    if not isinstance(images, Iterable):
        raise TypeError(f"images must be a DataLoader/iterable of image batches or an image tensor, "
                        f"got {type(images).__name__}")
    for batch in images:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"each batch must be an image tensor (B, C, H, W) or a tuple (x, y, ...); got {got}")
        yield x
