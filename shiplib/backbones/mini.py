"""The offline default backbone: a 12-block narrow ViT (patch 4, 32 px) pretrained on Fashion-MNIST.

Same depth as ViT-B/16, so the semantic hierarchy has as many layers to group; small enough to
pretrain on two CPU cores (see `shiplib.backbones.pretrain_mini`).
"""
from __future__ import annotations

from pathlib import Path

from timm.models.vision_transformer import VisionTransformer

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
#: Where the committed checkpoint and its card live (inside the repository, not ../shared).
CHECKPOINT_DIR = Path(__file__).resolve().parents[2] / "data" / "checkpoints"
CHECKPOINT_NAME = "vit_mini_fmnist"


def create_mini_vit(num_classes: int = 10, drop_path_rate: float = 0.0) -> VisionTransformer:
    """A randomly initialised ViT with the mini architecture."""
    return VisionTransformer(num_classes=num_classes, drop_path_rate=drop_path_rate, **MINI_ARCH)


def mini_checkpoint_path() -> Path:
    return CHECKPOINT_DIR / f"{CHECKPOINT_NAME}.safetensors"


def mini_card_path() -> Path:
    return CHECKPOINT_DIR / f"{CHECKPOINT_NAME}.json"
