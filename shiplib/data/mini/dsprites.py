"""Re-rendered dSprites: 2-D shapes drawn from dSprites' generative factors, with VTAB's location/orientation labels.

dSprites (Matthey et al., 2017) is the full grid of five factors rendered as 64x64 binary images:
shape in {square, ellipse, heart}, scale in 6 steps of [0.5, 1], orientation in 40 steps of [0, 2*pi]
(np.linspace, so both ends are included), and x / y position in 32 steps of [0, 1].
Here every example draws the five factor indices uniformly at random (seeded; no picture twice), draws the
shape as a binary 64x64 mask (as dSprites), and averages 2x2 blocks down to 32x32 (5 grey levels on edges).
No dSprites file is read: the images are synthetic re-renderings of the same definition.

Labels, as VTAB (task_adaptation `dsprites.py`): location = x index // 2 (16 classes);
orientation = floor(orientation index / 2.5) (16 classes). As in dSprites, a square looks the same every
90 degrees and an ellipse every 180 degrees, so part of the orientation label is not visible in the image.

VTAB builds both tasks from the same images. Here they get separate image sets: at 32x32 with the full
position range a raw-pixel linear probe reads orientation at chance level (7.8% vs 6.25% measured), so the
orientation set draws x and y only from the central 8 of the 32 position steps (CENTRAL_POSITIONS); the
location set uses all 32.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .common import IMAGE_SIZE, TEST, ImageSet, gray_to_rgb, rng_for, split_counts

RENDER_SIZE = 64
SHAPES = ("square", "ellipse", "heart")
N_SCALE, N_ORIENT, N_POS = 6, 40, 32
HALF_EXTENT = 13.0  # px at 64x64: half the side of the scale-1 square
MARGIN = 14.0       # px at 64x64: centre of position 0; keeps the largest rotated shape inside the frame
ELLIPSE_AXES = (1.0, 0.5)  # semi-axes relative to HALF_EXTENT (an elongated ellipse, as in dSprites)
CENTRAL_POSITIONS = (12, 20)  # position indices [12, 20) for the orientation set
GRID = 1 / 64       # vertex coordinates are rounded to this grid so float noise cannot move a rasterised pixel


def _outline(shape: str) -> list[tuple[float, float]]:
    """Unit outline (before scale/rotation), centred on the origin, y pointing down."""
    if shape == "square":
        return [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]
    n = 96
    if shape == "ellipse":
        a, b = ELLIPSE_AXES
        return [(a * math.cos(2 * math.pi * i / n), b * math.sin(2 * math.pi * i / n)) for i in range(n)]
    if shape == "heart":
        # The classic parametric heart curve, scaled to about the same extent as the square.
        pts = []
        for i in range(n):
            t = 2 * math.pi * i / n
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((x / 16.0, -(y + 2.5) / 15.0))
        return pts
    raise ValueError(f"unknown shape {shape!r}; use one of {SHAPES}")


_OUTLINES = {s: _outline(s) for s in SHAPES}


def factor_values():
    """The dSprites factor values: scale, orientation (radians), position in [0, 1]."""
    scales = [0.5 + 0.5 * i / (N_SCALE - 1) for i in range(N_SCALE)]
    orients = [2 * math.pi * i / (N_ORIENT - 1) for i in range(N_ORIENT)]
    positions = [i / (N_POS - 1) for i in range(N_POS)]
    return scales, orients, positions


def render(shape: int, scale: int, orient: int, pos_x: int, pos_y: int) -> np.ndarray:
    """One example from factor indices: uint8 (32, 32) grey image."""
    scales, orients, positions = factor_values()
    s, th = scales[scale] * HALF_EXTENT, orients[orient]
    span = RENDER_SIZE - 2 * MARGIN
    cx, cy = MARGIN + positions[pos_x] * span, MARGIN + positions[pos_y] * span
    c, si = math.cos(th), math.sin(th)
    pts = [(round((cx + s * (x * c - y * si)) / GRID) * GRID, round((cy + s * (x * si + y * c)) / GRID) * GRID)
           for x, y in _OUTLINES[SHAPES[shape]]]
    canvas = Image.new("L", (RENDER_SIZE, RENDER_SIZE), 0)
    ImageDraw.Draw(canvas).polygon(pts, fill=255)
    # 2x2 box average: integer arithmetic, identical everywhere.
    return np.asarray(canvas.reduce(RENDER_SIZE // IMAGE_SIZE))


def sample_examples(rng: np.random.Generator, n: int, positions: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """n examples with distinct pictures: (factor indices (n, 5), grey images (n, 32, 32)).

    Factor indices are uniform. A draw whose picture already occurred is redrawn: at 32x32 some factor tuples
    render alike (orientations 0 and 2*pi, near-symmetric turns of small shapes), and a repeat could put one
    picture into both training and test.
    """
    lo, hi = positions
    seen: set[bytes] = set()
    factors, images = [], []
    while len(factors) < n:
        f = [int(v) for v in (rng.integers(0, len(SHAPES)), rng.integers(0, N_SCALE), rng.integers(0, N_ORIENT),
                              rng.integers(lo, hi), rng.integers(lo, hi))]
        img = render(*f)
        if img.tobytes() not in seen:
            seen.add(img.tobytes())
            factors.append(f)
            images.append(img)
    return np.array(factors, dtype=np.int64), np.stack(images)


def build(test_size: int = 500, seed_name: str = "dsprites", positions: tuple[int, int] = (0, N_POS)) -> ImageSet:
    """Distinct factor tuples, indices uniform; x/y position indices from [positions[0], positions[1])."""
    lo, hi = positions
    if not 0 <= lo < hi <= N_POS:
        raise ValueError(f"positions must satisfy 0 <= lo < hi <= {N_POS}, got {positions}")
    counts = split_counts(test_size)
    factors, pictures = sample_examples(rng_for(seed_name), sum(counts.values()), positions)
    images, loc, ori = {}, {}, {}
    start = 0
    for split, n in counts.items():
        f = factors[start:start + n]
        images[split] = gray_to_rgb(pictures[start:start + n])
        start += n
        loc[split] = (f[:, 3] // 2).astype(np.int64)
        ori[split] = np.floor(f[:, 2] / 2.5).astype(np.int64)
    assert int(max(ori[s].max() for s in counts)) <= 15 and images[TEST].shape[0] == test_size
    return ImageSet(images=images, labels={"location": loc, "orientation": ori},
                    facts={"render_size": RENDER_SIZE, "shapes": list(SHAPES), "position_indices": [lo, hi],
                           "distinct_pictures": True})


def build_location(test_size: int = 500) -> ImageSet:
    return build(test_size, "dsprites_loc", (0, N_POS))


def build_orientation(test_size: int = 500) -> ImageSet:
    return build(test_size, "dsprites_ori", CENTRAL_POSITIONS)
