"""Random square patches from large images, with the held-out area kept apart so test patches never overlap
training patches."""
from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)


def split_band(box: Box, test_fraction: float) -> tuple[Box, Box]:
    """Cut `box` across its longer side: (train/val part, test part = the last `test_fraction`)."""
    x0, y0, x1, y1 = box
    if x1 - x0 >= y1 - y0:
        cut = x1 - round((x1 - x0) * test_fraction)
        return (x0, y0, cut, y1), (cut, y0, x1, y1)
    cut = y1 - round((y1 - y0) * test_fraction)
    return (x0, y0, x1, cut), (x0, cut, x1, y1)


def random_box(rng: np.random.Generator, area: Box, side_range: tuple[int, int]) -> Box:
    """A square inside `area` with a side drawn uniformly from side_range (inclusive)."""
    x0, y0, x1, y1 = area
    lo, hi = side_range
    hi = min(hi, x1 - x0, y1 - y0)
    if hi < lo:
        raise ValueError(f"area {area} is smaller than the smallest patch side {lo}")
    side = int(rng.integers(lo, hi + 1))
    x = int(rng.integers(x0, x1 - side + 1))
    y = int(rng.integers(y0, y1 - side + 1))
    return x, y, x + side, y + side


def dihedral(patch: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 rotations/reflections (k in 0..7); content of these sources has no preferred orientation."""
    out = np.rot90(patch, k % 4)
    return np.ascontiguousarray(out[:, ::-1] if k >= 4 else out)


def jitter_contrast(patch: np.ndarray, gain64: int, offset: int) -> np.ndarray:
    """(p - mean) * gain64/64 + mean + offset, in integers (bit-stable), clipped to 0..255."""
    p = patch.astype(np.int32)
    mean = int(p.sum()) // p.size
    return np.clip((p - mean) * gain64 // 64 + mean + offset, 0, 255).astype(np.uint8)
