"""The offline backbones: a 12-block narrow ViT (patch 4, 32 px), with committed weights under three names.

- `mini` (the default) = `mini_distill`: distilled from ImageNet EfficientNet-Lite0 on offline views
  (`shiplib.backbones.distill_mini`);
- `mini_fmnist`: supervised on Fashion-MNIST (`shiplib.backbones.pretrain_mini`).

Same depth as ViT-B/16, so the semantic hierarchy has as many layers to group; small enough to pretrain on two
CPU cores.
"""
from __future__ import annotations

import os
from pathlib import Path

from timm.models.vision_transformer import VisionTransformer

from ..utils.paths import project_root

MINI_ARCH = dict(
    img_size=32,
    patch_size=4,
    in_chans=3,
    embed_dim=96,
    depth=12,
    num_heads=3,
    mlp_ratio=4.0,
    qkv_bias=True,
    class_token=True,
    global_pool="token",
)
#: Where the committed checkpoint and its card live, relative to the project folder (`shiplib.utils.paths`).
CHECKPOINT_FOLDER = Path("data") / "checkpoints"
#: Backbone names that load a committed mini checkpoint -> its file stem in `data/checkpoints` ("mini": the default).
MINI_CHECKPOINTS = {"mini": "vit_mini_distill", "mini_distill": "vit_mini_distill", "mini_fmnist": "vit_mini_fmnist"}
#: How each checkpoint is made (said when its file is missing).
MINI_RECIPES = {"vit_mini_fmnist": "notebooks/pretrain_mini.ipynb (or `python -m shiplib.backbones.pretrain_mini`)",
                "vit_mini_distill": "`python -m shiplib.backbones.distill_mini`"}


def create_mini_vit(num_classes: int = 10, drop_path_rate: float = 0.0) -> VisionTransformer:
    """A randomly initialised ViT with the mini architecture."""
    return VisionTransformer(num_classes=num_classes, drop_path_rate=drop_path_rate, **MINI_ARCH)


def checkpoint_dir(home: str | os.PathLike | None = None) -> Path:
    """`<project>/data/checkpoints`; fails saying where it looked when the project folder cannot be found."""
    return project_root(home) / CHECKPOINT_FOLDER


def _stem(name: str) -> str:
    if name not in MINI_CHECKPOINTS:
        raise KeyError(f"unknown mini backbone {name!r}; valid: {', '.join(MINI_CHECKPOINTS)}")
    return MINI_CHECKPOINTS[name]


def mini_recipe(name: str = "mini") -> str:
    """How to train the named mini backbone."""
    return MINI_RECIPES[_stem(name)]


def mini_checkpoint_path(home: str | os.PathLike | None = None, name: str = "mini") -> Path:
    """The safetensors file of the named mini backbone (`MINI_CHECKPOINTS`)."""
    return checkpoint_dir(home) / f"{_stem(name)}.safetensors"


def mini_card_path(home: str | os.PathLike | None = None, name: str = "mini") -> Path:
    """The JSON card beside the named mini backbone's weights."""
    return checkpoint_dir(home) / f"{_stem(name)}.json"
