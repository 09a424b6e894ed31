"""Preprocessing presets: each is a torchvision transform plus a dict that records exactly what it does.

- `ship`: SHIP's official pipeline (`lib/datasets.py` `build_transform` with `train.py` defaults `no_aug=True`,
  `direct_resize=True`, `inception=True`): bicubic resize to exactly img_size x img_size (aspect ratio not
  kept), no augmentation, [0, 1] tensor, mean = std = 0.5. Same for train and test. SHIP's centre crop after
  the resize is a no-op and is omitted.
- `vpt`: VPT's TFDS pipeline: resize to img_size x img_size (bilinear), /255, ImageNet mean/std. VPT resizes
  the TFDS tensor with TensorFlow (no antialiasing); torchvision resizes PIL images with antialiasing, so
  pixels differ slightly (recorded in the preset).
"""
from __future__ import annotations

from torchvision import transforms as T

from ..errors import ConfigError, setting_fix
from ..utils.checks import positive_int

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PRESETS: dict[str, dict] = {
    "ship": {
        "interpolation": "bicubic", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "augmentation": None,
        "source": "SHIP lib/datasets.py build_transform (no_aug, direct_resize, inception)",
    },
    "vpt": {
        "interpolation": "bilinear", "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "augmentation": None,
        "source": "VPT TFDS pipeline (tf.image.resize bilinear, /255, ImageNet mean/std); "
                  "here torchvision's antialiased PIL resize",
    },
}

#: The preset runs use unless they name another (SHIP's official pipeline; it is also what results record).
DEFAULT_PRESET = "ship"

_INTERPOLATION = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}


class ToRGB:
    """Convert a PIL image to 3-channel RGB (grey, palette, RGBA and CMYK inputs all occur in VTAB folders)."""

    def __call__(self, img):
        return img if img.mode == "RGB" else img.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


def check_preset(preset: str, img_size: int) -> dict:
    """The preset's settings; an unknown preset or a bad image size is a ConfigError saying how to fix it."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preprocessing preset {preset!r}; valid presets: {', '.join(PRESETS)}. Choose one "
                          f"with {setting_fix('preset', DEFAULT_PRESET)}")
    positive_int("img_size", img_size)
    return PRESETS[preset]


def preset_record(preset: str, img_size: int) -> dict:
    """What the preset does, as a JSON-ready dict to store with results."""
    p = check_preset(preset, img_size)
    return {"preset": preset, "to_rgb": True, "resize": [img_size, img_size], "interpolation": p["interpolation"],
            "keep_aspect_ratio": False, "augmentation": p["augmentation"], "scale": "[0, 1] then normalise",
            "mean": list(p["mean"]), "std": list(p["std"]), "source": p["source"]}


def resize_transform(preset: str, img_size: int) -> T.Compose:
    """PIL image -> RGB PIL image at img_size x img_size: the part of the preset the decoded-image cache keeps."""
    p = check_preset(preset, img_size)
    return T.Compose([ToRGB(), T.Resize((img_size, img_size), interpolation=_INTERPOLATION[p["interpolation"]])])


def build_transform(preset: str, img_size: int) -> T.Compose:
    """PIL image -> normalised float tensor (3, img_size, img_size); identical for train and test."""
    p = check_preset(preset, img_size)
    return T.Compose([*resize_transform(preset, img_size).transforms, T.ToTensor(), T.Normalize(p["mean"], p["std"])])
