"""What every fine-tuning method shares: a wrapped timm ViT, a fresh head, a frozen backbone, one forward contract.

Methods subclass `PeftModel` with their own `MethodConfig` dataclass (huggingface/peft-style tuners).
Contract: `model(x)` -> logits; `model(x, return_losses=True)` -> `(logits, {name: scalar tensor})`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable

import numpy as np
import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer

from ..utils.checks import positive_int


#: Field metadata of an option that only a data step fills (`PeftModel.data_inputs`): left out of the option
#: defaults (`to_dict`) while unset, so it is no run setting and no part of a run's identity.
DATA_STEP_ONLY = {"data_step_only": True}


@dataclass(frozen=True)
class MethodConfig:
    """Options common to all methods. Subclasses add their own fields (all with defaults) and are frozen too: a
    model derives its structure from its config once, at construction. Every instance is validated when it is
    made (`validate`, extended by subclasses), however it is made."""

    drop_path_rate: float = 0.1  # official SHIP: linspace(0, 0.1) over the blocks, active while training
    head_init_std: float = 0.02  # official: trunc_normal(.02) weights, zero bias

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def check_option_names(cls, method: str, names: Iterable[str], error: type[Exception] = TypeError) -> None:
        """Fail (with `error`) on names that are not options of this config, listing the valid ones."""
        unknown = sorted(set(names) - set(cls.option_names()))
        if unknown:
            raise error(f"method {method!r} has no option(s) {', '.join(map(repr, unknown))}. "
                        f"Valid options: {', '.join(cls.option_names())}")

    @classmethod
    def from_options(cls, method: str, options: dict[str, Any]) -> "MethodConfig":
        """Build from keyword options; unknown names fail with the list of valid ones."""
        cls.check_option_names(method, options)
        return cls(**options)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if not self.head_init_std >= 0.0:
            raise ValueError(f"head_init_std must be a number >= 0 (official 0.02), got {self.head_init_std}")

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None and f.metadata.get("data_step_only"):
                continue
            # Arrays/tensors (e.g. a prototype bank) are recorded by shape, not by value.
            out[f.name] = f"<{type(v).__name__} {tuple(v.shape)}>" if hasattr(v, "shape") else v
        return out


def embed_tokens(vit: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """Patch embedding + position embedding + prefix tokens, exactly as timm's forward_features starts."""
    x = vit.patch_embed(x)
    x = vit._pos_embed(x)
    x = vit.patch_drop(x)
    return vit.norm_pre(x)


class PeftModel(nn.Module):
    """A timm `VisionTransformer` (`self.vit`) with a new classifier and a method-specific trainable set."""

    method: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    implementations: ClassVar[tuple[str, ...]] = ()  # executions a call may choose (`forward(..., implementation=)`)

    # ----- hooks: what the engine and the bench ask a method instead of naming it -----
    @classmethod
    def bench_options(cls, vit: VisionTransformer, seed: int = 0) -> dict[str, Any]:
        """Options that make the method buildable on `vit` from random weights, without a dataset."""
        return {}

    # The data step (as peft's EVA): inputs a method derives from the training images are computed apart from the
    # model, as arrays that the caller may cache, and handed to the constructor as options.
    @classmethod
    def data_key(cls, config: MethodConfig) -> dict[str, Any] | None:
        """What `data_inputs` computes for `config` and depends on besides the backbone and the images (JSON
        values): the key to cache it under. None when `config` leaves nothing to compute from images."""
        return None

    @classmethod
    def data_inputs(cls, vit: VisionTransformer, images, config: MethodConfig) -> dict[str, np.ndarray]:
        """Option name -> array, computed on the frozen `vit` from `images` (an (N, C, H, W) tensor or an iterable
        yielding x or (x, y, ...)); building with these options added reads no image. Asked only when
        `data_key(config)` is not None."""
        raise NotImplementedError(f"method {cls.method!r} computes nothing from training images")

    @classmethod
    def check_backbone(cls, options: dict[str, Any], vit: VisionTransformer) -> None:
        """Checks of `options` that need the backbone (e.g. block indices < depth), run before any data work."""

    def __init__(self, vit: VisionTransformer, num_classes: int, config: MethodConfig):
        super().__init__()
        if not isinstance(vit, VisionTransformer):
            raise TypeError(f"expected a timm VisionTransformer, got {type(vit).__name__}")
        positive_int("num_classes", num_classes)
        self.config = config
        self.num_classes = num_classes
        self.vit = vit
        vit.reset_classifier(num_classes)
        nn.init.trunc_normal_(vit.head.weight, std=config.head_init_std)
        nn.init.zeros_(vit.head.bias)
        self.freeze_backbone()

    # ----- shapes read from the backbone (never hard-coded) -----
    @property
    def embed_dim(self) -> int:
        return self.vit.embed_dim

    @property
    def depth(self) -> int:
        return len(self.vit.blocks)

    @property
    def num_prefix_tokens(self) -> int:
        return self.vit.num_prefix_tokens

    def num_image_tokens(self, x: torch.Tensor | None = None) -> int:
        """Prefix tokens + patches for an input (or for the backbone's configured size)."""
        if x is not None:
            gh, gw = self.vit.patch_embed.dynamic_feat_size(x.shape[-2:]) if self.vit.dynamic_img_size \
                else self.vit.patch_embed.grid_size
        else:
            gh, gw = self.vit.patch_embed.grid_size
        return self.num_prefix_tokens + gh * gw

    # ----- trainable set -----
    def freeze_backbone(self) -> None:
        """Everything frozen but the head; methods then unfreeze their own parameters."""
        for p in self.vit.parameters():
            p.requires_grad_(False)
        for p in self.vit.head.parameters():
            p.requires_grad_(True)

    def head_parameter_names(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.startswith("vit.head.")}

    def no_weight_decay(self) -> set[str]:
        """Names kept out of weight decay besides 1-D params and biases (timm's rule)."""
        return {f"vit.{n}" for n in getattr(self.vit, "no_weight_decay", lambda: set())()}

    # ----- forward -----
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return embed_tokens(self.vit, x)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Final-normed image tokens (prompts removed) and auxiliary losses. Default: the plain backbone."""
        return self.vit.forward_features(x), {}

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.vit.forward_head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor, return_losses: bool = False):
        feats, losses = self.forward_features(x)
        logits = self.forward_head(feats)
        return (logits, losses) if return_losses else logits

    def structure_record(self) -> dict[str, Any]:
        """What a result file records of the structure the model derived from its options (JSON values)."""
        return {}

    def extra_repr(self) -> str:
        return f"method={self.method!r}, num_classes={self.num_classes}"
