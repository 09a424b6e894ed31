"""Shared pieces of the mini-VTAB builders: seeding, split sizes, image helpers, byte-stable PNG writing."""
from __future__ import annotations

import hashlib
import importlib
import io
import os
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from PIL import Image

from ...utils.io import sha256_file

IMAGE_SIZE = 32
BASE_SEED = 20241222  # fixed: the committed data depend on it
TRAIN, VAL, TEST = "train800", "val200", "test"
SPLIT_SIZES = {TRAIN: 800, VAL: 200}
IMAGE_SPLITS = (TRAIN, VAL, TEST)


def require(module: str, pip_name: str, purpose: str):
    """Import `module`, or fail with the command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{purpose} needs the package {pip_name!r}, which is not installed. "
            f"Install it with `pip install {pip_name}` (or `pip install -r requirements.txt`)."
        ) from err


def package_version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def rng_for(name: str, seed: int = BASE_SEED) -> np.random.Generator:
    """A generator that depends only on (seed, name), never on Python's salted hash()."""
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, digest]))


def split_counts(test_size: int) -> dict[str, int]:
    return {TRAIN: SPLIT_SIZES[TRAIN], VAL: SPLIT_SIZES[VAL], TEST: int(test_size)}


@dataclass
class ImageSet:
    """Images of one source for the three stored splits, with one or more label columns.

    images[split]: uint8 (N, 32, 32, 3); labels[key][split]: int64 (N,).
    """

    images: dict[str, np.ndarray]
    labels: dict[str, dict[str, np.ndarray]]
    facts: dict = field(default_factory=dict)  # measured facts worth recording (e.g. label thresholds)

    def __post_init__(self):
        for split in IMAGE_SPLITS:
            x = self.images[split]
            if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
                raise ValueError(f"split {split}: expected uint8 (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3), got "
                                 f"{x.dtype} {x.shape}")
            for key, per_split in self.labels.items():
                if len(per_split[split]) != len(x):
                    raise ValueError(f"label {key!r}, split {split}: {len(per_split[split])} labels "
                                     f"for {len(x)} images")


def gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """(…, H, W) uint8 -> (…, H, W, 3) by repeating the channel (as VTAB does for grey sources)."""
    return np.repeat(np.asarray(gray, dtype=np.uint8)[..., None], 3, axis=-1)


def resize_uint8(img: np.ndarray, size: int = IMAGE_SIZE, resample: str = "box") -> np.ndarray:
    """Resize with PIL's fixed-point resampler (bit-stable across machines, unlike float pipelines)."""
    filters = {"box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR,
               "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}
    out = Image.fromarray(np.ascontiguousarray(img)).resize((size, size), filters[resample])
    return np.asarray(out)


def split_rows(rows: np.ndarray, test_size: int) -> dict[str, np.ndarray]:
    """Cut an already shuffled index array into train800 / val200 / test (in that order)."""
    need = SPLIT_SIZES[TRAIN] + SPLIT_SIZES[VAL] + test_size
    if len(rows) < need:
        raise ValueError(f"need {need} examples for train800+val200+test{test_size}, the source has {len(rows)}")
    a, b = SPLIT_SIZES[TRAIN], SPLIT_SIZES[TRAIN] + SPLIT_SIZES[VAL]
    return {TRAIN: rows[:a], VAL: rows[a:b], TEST: rows[b:need]}


def png_bytes(img: np.ndarray) -> bytes:
    """Encode a (32, 32, 3) uint8 image as PNG, byte-deterministically.

    compress_level=0 stores the pixels uncompressed (deflate "stored" blocks), so the bytes do not depend on
    which zlib build Pillow links; a 32x32 RGB file still fits one 4 KiB disk block, and git compresses it anyway.
    No text chunks, no timestamps.
    """
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img), "RGB").save(buf, format="PNG", compress_level=0, optimize=False)
    return buf.getvalue()


def write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def tree_sha256(root: str | os.PathLike, rel_paths: list[str]) -> str:
    """One hash over `sha256  relpath` lines (sorted), i.e. over the names and bytes of the given files."""
    root = Path(root)
    lines = "".join(f"{sha256_file(root / p)}  {p}\n" for p in sorted(rel_paths))
    return hashlib.sha256(lines.encode()).hexdigest()
