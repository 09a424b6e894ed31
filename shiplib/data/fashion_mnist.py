"""Fashion-MNIST from the files of the Debian package `dataset-fashion-mnist` (no download)."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
LICENCE = "MIT (Zalando Research, Fashion-MNIST); Debian package dataset-fashion-mnist"
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def fashion_mnist_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder holding the four idx files: `root`, else $FASHION_MNIST_DIR, else the Debian path."""
    d = Path(root or os.environ.get("FASHION_MNIST_DIR") or DEBIAN_DIR)
    missing = [f for pair in _FILES.values() for f in pair if not (d / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files not found in {d} (missing: {', '.join(missing)}). "
            "Install them with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
            "or download the four *-ubyte.gz files from the Fashion-MNIST project and point "
            "FASHION_MNIST_DIR (or the `root` argument) at their folder."
        )
    return d


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00":
        raise ValueError(f"{path} is not an idx file (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).copy()
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: expected {np.prod(shape)} values, found {arr.size}")
    return arr.reshape(shape)


def load_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return `(images uint8 (N, 28, 28), labels int64 (N,))` for split "train" (60k) or "test" (10k)."""
    if split not in _FILES:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; use one of {sorted(_FILES)}")
    d = fashion_mnist_dir(root)
    images, labels = (_read_idx(d / f) for f in _FILES[split])
    return images, labels.astype(np.int64)
