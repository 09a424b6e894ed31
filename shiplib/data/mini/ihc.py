"""Immunohistochemistry (IHC) patches from the colon-tissue image bundled with scikit-image, with stain labels.

Source: skimage.data.immunohistochemistry(), 512x512 RGB, colonic glands with the FHL2 protein shown by DAB
(brown) and nuclei counterstained with hematoxylin (blue). The stains are separated by colour deconvolution
(Ruifrok & Johnston 2001, `skimage.color.rgb2hed`), which gives each pixel an optical density (OD) per stain.

Two labels per patch (both read from the patch's central half, i.e. the middle 50% square of the crop):
  * dab  : DAB stain level, i.e. how strongly the protein is expressed: mean DAB OD binned at DAB_EDGES
           -> 0 negative, 1 weak, 2 moderate, 3 strong;
  * hema : hematoxylin level, a proxy for nuclear density: mean hematoxylin OD binned at HEMA_EDGES -> 0..3.
The bin edges are the quartiles of random 32-64 px crops of the whole image (rounded), so classes are about
balanced. These are rule-derived labels, not a pathologist's annotation: the task is to read stain amounts
from a 32x32 view of the tissue, which needs colour and texture together.

Patches: squares of 32-64 source pixels, box-resized to 32x32, randomly rotated/mirrored (tissue has no
orientation). The image is cut into 4x4 blocks of 128 px; test patches lie inside one of 4 held-out blocks (one
per block row and column) and training/validation patches never touch those blocks.
"""
from __future__ import annotations

import numpy as np

from .common import TEST, ImageSet, require, resize_uint8, rng_for, split_counts
from .patches import Box, dihedral, random_box

DAB_EDGES = (0.015, 0.065, 0.095)
HEMA_EDGES = (0.014, 0.020, 0.026)
SIDE_RANGE = (32, 64)
BLOCK = 128
# (block row, block column): of the 24 layouts with one held-out block per row and column, the one whose
# class mix (both labels) is closest to that of the other 12 blocks (total variation 0.21; worst 0.34).
TEST_BLOCKS = ((0, 1), (1, 0), (2, 2), (3, 3))


def load_source() -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 image, OD array (H, W, 3) for hematoxylin, eosin, DAB)."""
    data = require("skimage.data", "scikit-image", "mini_ihc_* (image bundled with scikit-image)")
    color = require("skimage.color", "scikit-image", "mini_ihc_* (colour deconvolution)")
    rgb = np.asarray(data.immunohistochemistry())
    return rgb, color.rgb2hed(rgb)


def _block_box(row: int, col: int) -> Box:
    return col * BLOCK, row * BLOCK, (col + 1) * BLOCK, (row + 1) * BLOCK


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def sample_box(rng: np.random.Generator, split: str, height: int, width: int) -> Box:
    test_boxes = [_block_box(r, c) for r, c in TEST_BLOCKS]
    if split == TEST:
        return random_box(rng, test_boxes[int(rng.integers(0, len(test_boxes)))], SIDE_RANGE)
    while True:
        box = random_box(rng, (0, 0, width, height), SIDE_RANGE)
        if not any(_overlaps(box, t) for t in test_boxes):
            return box


def centre_mean(od: np.ndarray, box: Box) -> np.ndarray:
    x0, y0, x1, y1 = box
    q = (x1 - x0) // 4
    return od[y0 + q:y1 - q, x0 + q:x1 - q].reshape(-1, od.shape[-1]).mean(axis=0)


def build(test_size: int = 500, seed_name: str = "ihc") -> ImageSet:
    rng = rng_for(seed_name)
    rgb, od = load_source()
    h, w = rgb.shape[:2]
    if h < 4 * BLOCK or w < 4 * BLOCK:
        raise ValueError(f"immunohistochemistry image is {w}x{h}; expected at least {4 * BLOCK}x{4 * BLOCK}")
    images, dab, hema = {}, {}, {}
    for split, n in split_counts(test_size).items():
        batch, d_lab, h_lab = [], [], []
        for _ in range(n):
            x0, y0, x1, y1 = box = sample_box(rng, split, h, w)
            means = centre_mean(od, box)
            h_lab.append(int(np.searchsorted(HEMA_EDGES, means[0], side="right")))
            d_lab.append(int(np.searchsorted(DAB_EDGES, means[2], side="right")))
            patch = resize_uint8(rgb[y0:y1, x0:x1], resample="box")
            batch.append(dihedral(patch, int(rng.integers(0, 8))))
        images[split] = np.stack(batch)
        dab[split], hema[split] = np.array(d_lab, np.int64), np.array(h_lab, np.int64)
    return ImageSet(images=images, labels={"dab": dab, "hema": hema},
                    facts={"dab_edges": list(DAB_EDGES), "hema_edges": list(HEMA_EDGES),
                           "test_blocks": [list(b) for b in TEST_BLOCKS], "block_px": BLOCK})
