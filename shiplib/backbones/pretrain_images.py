"""Offline pretraining images for the mini backbone: photo crops, colourised Fashion-MNIST, IFS fractals.

None of them is a mini-VTAB image. Photographs whose regions mini-VTAB uses (skimage's brick, grass, gravel,
hubble_deep_field, coins, coffee, chelsea, immunohistochemistry) are left out, and so is MNIST.

`render_views(n, seed, size)` draws `n` views deterministically from `seed`: every view is rendered at
`size` px (the teacher's input) from its source; the student sees the same view box-averaged to 32 px.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Colour and grey photographs bundled in installed wheels: name -> (loader, licence).
PHOTOS = {
    "astronaut": ("skimage.data.astronaut", "public domain (NASA)"),
    "rocket": ("skimage.data.rocket", "public domain (SpaceX)"),
    "retina": ("skimage.data.retina", "CC0 1.0 (Häggström et al.)"),
    "camera": ("skimage.data.camera", "CC0 (Lav Varshney)"),
    "cell": ("skimage.data.cell", "CC0"),
    "horse": ("skimage.data.horse", "CC0 (Andreas Preuss)"),
    "text": ("skimage.data.text", "public domain"),
    "china": ("sklearn.datasets.images/china.jpg", "CC BY 2.0 (danielbuechele)"),
    "flower": ("sklearn.datasets.images/flower.jpg", "CC BY 2.0 (vultilion)"),
    "grace_hopper": ("matplotlib sample_data/grace_hopper.jpg", "public domain (US Navy)"),
}
#: Sources of the view stream and their default shares.
SOURCE_WEIGHTS = {"photo": 0.5, "fmnist": 0.25, "fractal": 0.25}


def load_photo(name: str) -> np.ndarray:
    """One of `PHOTOS` as an (H, W, 3) uint8 array."""
    if name not in PHOTOS:
        raise KeyError(f"unknown photo {name!r}; valid: {', '.join(PHOTOS)}")
    where = PHOTOS[name][0]
    if where.startswith("skimage.data."):
        import skimage.data

        img = np.asarray(getattr(skimage.data, where.rsplit(".", 1)[1])())
    elif where.startswith("sklearn"):
        from sklearn.datasets import load_sample_image

        img = np.asarray(load_sample_image(where.rsplit("/", 1)[1]))
    else:
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data(where.rsplit("/", 1)[1]) as f:
            from PIL import Image

            img = np.asarray(Image.open(f).convert("RGB"))
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC, reducing_gap=None))


def photo_view(photos: list[np.ndarray], rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop (2-50 % of the shorter side squared) of a random photo, resized to `size`."""
    img = photos[rng.integers(len(photos))]
    h, w = img.shape[:2]
    side = int(min(h, w) * np.sqrt(rng.uniform(0.02, 0.5)))
    side = max(side, 8)
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = img[y: y + side, x: x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return _resize(np.ascontiguousarray(crop), size)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float32)


def fmnist_view(items: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A Fashion-MNIST item at a random scale and position, foreground and background in random colours."""
    item = items[rng.integers(len(items))]
    scale = int(size * rng.uniform(0.35, 1.0))
    alpha = _resize(np.repeat(item[..., None], 3, -1), scale)[..., 0].astype(np.float32) / 255.0
    y, x = rng.integers(0, size - scale + 1), rng.integers(0, size - scale + 1)
    canvas_alpha = np.zeros((size, size), np.float32)
    canvas_alpha[y: y + scale, x: x + scale] = alpha
    fg, bg = _random_colour(rng), _random_colour(rng)
    out = bg[None, None] * (1 - canvas_alpha[..., None]) + fg[None, None] * canvas_alpha[..., None]
    return out.clip(0, 255).astype(np.uint8)


def fractal_view(rng: np.random.Generator, size: int, walkers: int = 512, steps: int = 24) -> np.ndarray:
    """An iterated-function-system fractal (2-4 random contractive affine maps, FractalDB-style), one colour per
    map, on a random background; points are drawn by the chaos game with independent walkers."""
    n_maps = int(rng.integers(2, 5))
    mats = []
    for _ in range(n_maps):
        u, _, vt = np.linalg.svd(rng.normal(size=(2, 2)))
        s = np.diag(rng.uniform(0.25, 0.85, 2))
        mats.append(u @ s @ vt)
    mats = np.stack(mats)
    shifts = rng.uniform(-1, 1, (n_maps, 2))
    probs = np.abs(np.linalg.det(mats)) + 1e-3
    probs /= probs.sum()
    pts = rng.uniform(-1, 1, (walkers, 2))
    xs, which = [], []
    for step in range(steps):
        k = rng.choice(n_maps, walkers, p=probs)
        pts = np.einsum("nij,nj->ni", mats[k], pts) + shifts[k]
        if step >= 6:  # burn-in: the walkers reach the attractor first
            xs.append(pts)
            which.append(k)
    pts, which = np.concatenate(xs), np.concatenate(which)
    lo, hi = np.percentile(pts, 1, axis=0), np.percentile(pts, 99, axis=0)
    pts = (pts - lo) / np.maximum(hi - lo, 1e-6)
    margin = rng.uniform(0.05, 0.3)
    pix = ((margin + pts * (1 - 2 * margin)) * (size - 1)).round().astype(int)
    keep = ((pix >= 0) & (pix < size)).all(1)
    canvas = np.broadcast_to(_random_colour(rng), (size, size, 3)).copy()
    colours = np.stack([_random_colour(rng) for _ in range(n_maps)])
    canvas[pix[keep, 1], pix[keep, 0]] = colours[which[keep]]
    if rng.random() < 0.5:
        canvas = canvas[:, ::-1]
    return canvas.astype(np.uint8)


@dataclass(frozen=True)
class ViewBatch:
    """Views at the teacher's size (N, S, S, 3) uint8 and at 32 px for the student, plus each view's source."""
    teacher: np.ndarray
    student: np.ndarray
    source: np.ndarray


def box_downsample(views: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, size, size, 3) by block averaging (S a multiple of size)."""
    n, s = views.shape[:2]
    if s % size:
        raise ValueError(f"view size {s} is not a multiple of {size}")
    f = s // size
    return views.reshape(n, size, f, size, f, 3).mean((2, 4)).round().astype(np.uint8)


class ViewSampler:
    """Deterministic view stream: `sample(n, seed)` always gives the same views for the same seed."""

    def __init__(self, size: int = 128, student_size: int = 32, weights: dict | None = None):
        from ..data.fashion_mnist import load_fashion_mnist

        self.size, self.student_size = size, student_size
        self.weights = dict(weights or SOURCE_WEIGHTS)
        unknown = set(self.weights) - set(SOURCE_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown view sources {sorted(unknown)}; valid: {', '.join(SOURCE_WEIGHTS)}")
        self.photos = [load_photo(n) for n in PHOTOS] if self.weights.get("photo") else []
        self.fmnist = load_fashion_mnist("train")[0] if self.weights.get("fmnist") else None

    def sample(self, n: int, seed: int) -> ViewBatch:
        rng = np.random.default_rng(seed)
        names = list(self.weights)
        p = np.array([self.weights[k] for k in names], dtype=float)
        kinds = rng.choice(len(names), n, p=p / p.sum())
        views = np.empty((n, self.size, self.size, 3), np.uint8)
        for i, k in enumerate(kinds):
            kind = names[k]
            if kind == "photo":
                views[i] = photo_view(self.photos, rng, self.size)
            elif kind == "fmnist":
                views[i] = fmnist_view(self.fmnist, rng, self.size)
            else:
                views[i] = fractal_view(rng, self.size)
        return ViewBatch(teacher=views, student=box_downsample(views, self.student_size),
                         source=np.asarray(names)[kinds])
