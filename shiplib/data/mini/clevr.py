"""Synthetic CLEVR-count-like scenes: 3 to 10 flat objects on a shaded floor, label = number of objects - 3.

A 2-D stand-in for CLEVR's `count_all` task (VTAB clevr_count): no 3-D rendering and no CLEVR file is used.
Each scene draws its object count uniformly from 3..10; every object draws a shape (circle, square, triangle,
standing in for CLEVR's sphere, cube, cylinder), one of CLEVR's 8 colours, a size (small or large, as CLEVR)
and a rotation. Objects never overlap (rejection sampling with a clearance), so the count is always visible.
Scenes are drawn at 4x resolution and box-averaged to 32x32 (PIL, integer arithmetic).
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .common import IMAGE_SIZE, ImageSet, rng_for, split_counts

SUPERSAMPLE = 4
MIN_OBJECTS, MAX_OBJECTS = 3, 10
# CLEVR's material colours (RGB), from its scene-generation properties: gray, red, blue, green, brown,
# purple, cyan, yellow.
COLOURS = ((87, 87, 87), (173, 35, 35), (42, 75, 215), (29, 105, 20),
           (129, 74, 25), (129, 38, 192), (41, 208, 208), (255, 238, 51))
SHAPES = ("circle", "square", "triangle")
RADII = (1.9, 3.0)   # object radius in output pixels: small, large
CLEARANCE = 0.8      # min gap between objects, output pixels
EDGE = 1.0           # min gap to the image border, output pixels
GRID = 1 / 16        # vertices rounded to this grid (render pixels), so float noise cannot move a pixel


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    n = {"circle": 48, "square": 4, "triangle": 3}[shape]
    # Squares/triangles are scaled so their area is close to the circle's of the same radius.
    k = {"circle": 1.0, "square": 1.25, "triangle": 1.55}[shape]
    pts = [(cx + k * r * math.cos(angle + 2 * math.pi * i / n), cy + k * r * math.sin(angle + 2 * math.pi * i / n))
           for i in range(n)]
    return [(round(x / GRID) * GRID, round(y / GRID) * GRID) for x, y in pts]


def _floor(size: int, top: int, bottom: int) -> np.ndarray:
    """A vertical grey gradient, lighter at the back (top), like CLEVR's lit floor."""
    rows = (top + (bottom - top) * np.arange(size) // max(size - 1, 1)).astype(np.uint8)
    return np.repeat(np.repeat(rows[:, None, None], size, axis=1), 3, axis=2)


def render_scene(rng: np.random.Generator, count: int) -> np.ndarray:
    s = SUPERSAMPLE
    top, bottom = int(rng.integers(150, 191)), int(rng.integers(100, 141))
    canvas = Image.fromarray(_floor(IMAGE_SIZE * s, top, bottom), "RGB")
    draw = ImageDraw.Draw(canvas)
    placed: list[tuple[float, float, float]] = []
    while len(placed) < count:
        r = RADII[int(rng.integers(0, 2))] * 1.25  # bounding radius with the square/triangle factor
        cx, cy = rng.uniform(EDGE + r, IMAGE_SIZE - EDGE - r, size=2)
        if any(math.hypot(cx - x, cy - y) < r + q + CLEARANCE for x, y, q in placed):
            continue
        placed.append((float(cx), float(cy), r))
        shape = SHAPES[int(rng.integers(0, len(SHAPES)))]
        colour = COLOURS[int(rng.integers(0, len(COLOURS)))]
        pts = _polygon(shape, cx * s, cy * s, r / 1.25 * s, float(rng.uniform(0, 2 * math.pi)))
        draw.polygon(pts, fill=colour)
    return np.asarray(canvas.reduce(s))


def build(test_size: int = 500, seed_name: str = "clevr_count") -> ImageSet:
    rng = rng_for(seed_name)
    images, labels = {}, {}
    for split, n in split_counts(test_size).items():
        counts = rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1, n)
        images[split] = np.stack([render_scene(rng, int(c)) for c in counts])
        labels[split] = (counts - MIN_OBJECTS).astype(np.int64)
    return ImageSet(images=images, labels={"count": labels},
                    facts={"objects": f"{MIN_OBJECTS}-{MAX_OBJECTS}", "supersample": SUPERSAMPLE})
