"""Backbones: any timm `VisionTransformer`, from a timm name, a local file, or the committed mini ViT."""
from .loading import (DEFAULT_BACKBONE, BackboneError, create_backbone, load_state_dict_file, npz_architecture,
                      set_drop_path, state_dict_architecture)
from .mini import MINI_ARCH, create_mini_vit, mini_card_path, mini_checkpoint_path

__all__ = ["DEFAULT_BACKBONE", "BackboneError", "create_backbone", "load_state_dict_file", "npz_architecture",
           "set_drop_path", "state_dict_architecture", "MINI_ARCH", "create_mini_vit", "mini_card_path",
           "mini_checkpoint_path"]
