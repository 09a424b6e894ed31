"""Texture patches cut from the photographs bundled in the scikit-image wheel (no pooch, no network).

Label = the material the patch shows (7 classes). Each class is one photograph, or a hand-picked region of one
that holds only that material (boxes below). Patches are squares of 32-56 source pixels, box-resized to 32x32,
turned to grey (so colour cannot name the class: brick/grass/gravel are grey photographs), randomly rotated /
mirrored, with a random contrast and brightness change. Test patches come from the last quarter of every region
(across its longer side) and training/validation patches from the rest, so no test pixel is ever seen in training.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .common import IMAGE_SPLITS, TEST, ImageSet, gray_to_rgb, require, resize_uint8, rng_for, split_counts
from .patches import dihedral, jitter_contrast, random_box, split_band

# class name, skimage.data function, region (x0, y0, x1, y1) or None for the whole image, licence (from the
# function's docstring in scikit-image 0.26).
CLASSES = (
    ("brick", "brick", None, "CC0 (CC0Textures, Bricks25)"),
    ("grass", "grass", None, "CC0 (DeviantArt, linolafett)"),
    ("gravel", "gravel", None, "CC0 (CC0Textures, Gravel04)"),
    ("stars", "hubble_deep_field", None, "public domain (NASA, Hubble eXtreme Deep Field)"),
    ("coins", "coins", None, "no known copyright restrictions (Brooklyn Museum)"),
    ("wood", "coffee", (485, 0, 600, 400), "CC0 (photographer Rachel Michetti)"),        # table right of the cup
    ("fur", "chelsea", (105, 0, 335, 82), "CC0 (photographer Stefan van der Walt)"),     # the cat's forehead
)
SIDE_RANGE = (32, 56)
TEST_FRACTION = 0.25
GAIN64_RANGE = (45, 83)   # contrast x0.7 .. x1.3
OFFSET_RANGE = (-30, 30)  # brightness shift in grey levels


def load_regions() -> list[np.ndarray]:
    """Grey uint8 region of every class, in CLASSES order."""
    data = require("skimage.data", "scikit-image", "mini_textures (images bundled with scikit-image)")
    out = []
    for _, fn, box, _ in CLASSES:
        img = np.asarray(getattr(data, fn)())
        if img.ndim == 3:
            img = np.asarray(Image.fromarray(img[..., :3]).convert("L"))  # ITU-R 601 integer luma
        if box is not None:
            x0, y0, x1, y1 = box
            img = img[y0:y1, x0:x1]
        out.append(np.ascontiguousarray(img))
    return out


def build(test_size: int = 500, seed_name: str = "textures") -> ImageSet:
    rng = rng_for(seed_name)
    regions = load_regions()
    bands = [split_band((0, 0, r.shape[1], r.shape[0]), TEST_FRACTION) for r in regions]
    images, labels = {}, {}
    for split, n in split_counts(test_size).items():
        y = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
        batch = []
        for c in y:
            area = bands[c][1] if split == TEST else bands[c][0]
            x0, y0, x1, y1 = random_box(rng, area, SIDE_RANGE)
            patch = resize_uint8(regions[c][y0:y1, x0:x1], resample="box")
            patch = dihedral(patch, int(rng.integers(0, 8)))
            patch = jitter_contrast(patch, int(rng.integers(GAIN64_RANGE[0], GAIN64_RANGE[1] + 1)),
                                    int(rng.integers(OFFSET_RANGE[0], OFFSET_RANGE[1] + 1)))
            batch.append(patch)
        images[split], labels[split] = gray_to_rgb(np.stack(batch)), y
    assert set(images) == set(IMAGE_SPLITS)
    return ImageSet(images=images, labels={"material": labels},
                    facts={"classes": [c[0] for c in CLASSES],
                           "per-class source and licence": "; ".join(
                               f"{name}: skimage.data.{fn}(){'' if box is None else f' region {box}'}, {lic}"
                               for name, fn, box, lic in CLASSES)})
