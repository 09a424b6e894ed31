"""Decoded-image cache: a split's images decoded and resized once, held as uint8 at model resolution.

A VTAB-1k run decodes and resizes the same 1,000 training images in each of 100 epochs and the test split at every
evaluation. The cache does that once: `(N, 3, size, size)` uint8, in memory when it fits in `memory_bytes`, else
in a memory-mapped file under the runs folder (`<runs>/_cache/images/<key>.u8`), shared by every run of the
split. The key covers the split's file list (names, sizes, modification times), the preset and the size, so an
edited folder or another preset makes a new cache. `Normalize` turns uint8 images into the exact float tensors
of the uncached transform, on any device (a whole batch at once).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torchvision.transforms import functional as TF

from ..utils.io import atomic_write, atomic_write_json, move_aside
from ..utils.progress import progress_bar

#: Splits up to this size are held in memory (a VTAB-1k train split at 224 px is 0.15 GB, a mini-VTAB split at
#: 32 px a few MB); larger ones (VTAB-1k test splits: up to 6.4 GB at 224 px) go to a memory-mapped file.
MEMORY_BYTES = 2 ** 30


def images_fingerprint(paths) -> str:
    """sha256 over an image list: each file's name, size and modification time, in list order.

    Identifies the images a cache was made from: replacing, editing or re-listing them changes it (without reading
    every image's bytes). Names are taken relative to the files' common folder, so the same files listed from
    another mount point agree."""
    paths = [Path(p) for p in paths]
    base = Path(os.path.commonpath([str(p) for p in paths])) if paths else Path()
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        rel = p.relative_to(base).as_posix() if p != base else p.name
        h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_key(paths, preset: str, img_size: int) -> str:
    """The cache's name: the split's file list, the preset and the size."""
    return hashlib.sha256(f"{images_fingerprint(paths)}|{preset}|{img_size}".encode()).hexdigest()[:24]


class Normalize(torch.nn.Module):
    """uint8 images (C, H, W) or (B, C, H, W) -> float, exactly as `ToTensor` + `Normalize` of the preset (same
    operations in the same order), on whatever device the images are."""

    def __init__(self, mean, std):
        super().__init__()
        self.mean, self.std = tuple(mean), tuple(std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return TF.normalize(images.to(torch.get_default_dtype()).div(255), self.mean, self.std)


def to_uint8(image) -> torch.Tensor:
    """A PIL RGB image as a (3, H, W) uint8 tensor (the array `ToTensor` reads)."""
    return torch.from_numpy(np.array(image, np.uint8, copy=True)).permute(2, 0, 1).contiguous()


class DecodedImages:
    """The uint8 images of one split: `images[i]` is a (3, size, size) uint8 tensor."""

    def __init__(self, array: np.ndarray, where: str):
        self.array, self.where = array, where  # where: "memory" or the memory-mapped file

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array[index]))  # a copy: memory-mapped pages stay read-only

    @classmethod
    def build(cls, count: int, load: Callable[[int], object], img_size: int, key: str, folder: Path | None,
              memory_bytes: int = MEMORY_BYTES, progress: bool = True) -> "DecodedImages | None":
        """Decode `count` images with `load(i)` (a PIL image at model resolution) into memory, or into
        `folder/<key>.u8` (reused when it exists) when they exceed `memory_bytes`. None when they do not fit in
        memory and there is no folder."""
        shape = (count, 3, img_size, img_size)
        if int(np.prod(shape)) <= memory_bytes:
            array = np.empty(shape, np.uint8)
            _fill(array, load, progress)
            return cls(array, "memory")
        if folder is None:
            return None
        path = Path(folder) / f"{key}.u8"
        meta = path.with_suffix(".json")
        if path.is_file() and _meta_matches(meta, shape):
            return cls(np.memmap(path, np.uint8, mode="r", shape=shape), str(path))
        if path.exists():
            move_aside(path, "an image cache without a matching description")
        with atomic_write(path) as tmp:
            array = np.memmap(tmp, np.uint8, mode="w+", shape=shape)
            _fill(array, load, progress)
            array.flush()
            del array
        atomic_write_json(meta, dict(shape=list(shape), dtype="uint8"))
        return cls(np.memmap(path, np.uint8, mode="r", shape=shape), str(path))


def _meta_matches(meta: Path, shape: tuple) -> bool:
    try:
        return json.loads(meta.read_text()).get("shape") == list(shape)
    except (OSError, ValueError):
        return False


def _fill(array, load: Callable[[int], object], progress: bool) -> None:
    for i in progress_bar(range(len(array)), desc="decoding images (once)", unit="img", leave=False,
                          disable=not progress):
        array[i] = to_uint8(load(i)).numpy()
