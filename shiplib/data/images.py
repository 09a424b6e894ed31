"""Decoded images as 8-bit RGB with their full range kept: PIL's `convert("RGB")` clips 16-bit and 32-bit
integer images to {0, 255} and float images to their integer part, so those are scaled first."""
from __future__ import annotations

import numpy as np
from PIL import Image

#: Modes PIL decodes high-depth images to (16-bit grayscale PNG/TIFF as "I;16…" or "I", float TIFF as "F").
_HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_rgb(im: Image.Image) -> Image.Image:
    """`im` as 8-bit RGB. 16-bit values are scaled by 255/65535 (rounded), 32-bit integers by 255/(2^32-1) when
    they exceed 16 bits, floats from [0, 1] (or [0, 255] when larger values occur)."""
    if im.mode not in _HIGH_DEPTH:
        return im.convert("RGB")
    a = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        scale = 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else 1.0
    else:
        scale = 255.0 / (65535.0 if np.max(a, initial=0) <= 65535 else 4294967295.0)
    gray = np.clip(np.rint(np.nan_to_num(a) * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")  # 2-D uint8: mode "L"
