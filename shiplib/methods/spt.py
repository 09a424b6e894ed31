"""SPT (Self-Prompt Tuning; Wang et al., "Revisiting the Power of Prompt for Visual Tuning", ICML 2024,
arXiv 2402.02382, github.com/WangYZ1608/Self-Prompt-Tuning).

VPT-deep whose prompts for block i start as prototypes of the frozen model's patch tokens entering block i over
the training set (k-means centres by default; `random` and `mean_pool` are the paper's cheap alternatives).
How the tokens are gathered and pooled is documented in `_prompt_init.py`.

Defaults: K = 50 like our VPT; `prompt_dropout = 0` because SPT's reference forward applies no prompt dropout
(set 0.1 to match VPT exactly). Training recipe as for VPT (SHIP's §1: drop path 0.1).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer

from ..utils.checks import choice
from ._prompt_init import PROTOTYPE_INITS, token_prototypes
from .base import DATA_STEP_ONLY
from .registry import register_method
from .vpt import PromptConfig, VPTDeep


@dataclass(frozen=True)
class SPTConfig(PromptConfig):
    prompt_dropout: float = 0.0  # SPT's reference has no prompt dropout
    init: str = "kmeans"  # "kmeans" | "random" | "mean_pool"
    max_tokens: int = 20_000  # candidate tokens kept per block (seeded uniform sample) to keep k-means fast
    seed: int = 0
    init_prompts: Any = field(default=None, metadata=DATA_STEP_ONLY)  # (depth, K, D); computed by the data step

    def validate(self) -> None:
        super().validate()
        choice("init", self.init, PROTOTYPE_INITS)
        if not isinstance(self.max_tokens, int) or self.max_tokens < self.num_prompts:
            raise ValueError(f"max_tokens must be an int >= num_prompts ({self.num_prompts}), got {self.max_tokens!r}")


@register_method("spt")
class SelfPromptTuning(VPTDeep):
    config_class = SPTConfig

    @classmethod
    def bench_options(cls, vit: VisionTransformer, seed: int = 0) -> dict:
        """Prompts drawn from random images' tokens: k-means would only add build time."""
        return dict(init="random")

    @classmethod
    def data_key(cls, config: SPTConfig) -> dict[str, Any] | None:
        if config.init_prompts is not None:
            return None
        return dict(inputs=["init_prompts"], init=config.init, num_prompts=config.num_prompts,
                    max_tokens=config.max_tokens, seed=config.seed)

    @classmethod
    def data_inputs(cls, vit: VisionTransformer, images, config: SPTConfig) -> dict[str, np.ndarray]:
        """The prompts' initial values from the tokens entering each block (`token_prototypes`)."""
        protos = token_prototypes(vit, images, config.num_prompts, config.init, config.max_tokens, config.seed)
        return dict(init_prompts=protos.numpy())

    def __init__(self, vit: VisionTransformer, num_classes: int, config: SPTConfig):
        if config.init_prompts is None:
            raise ValueError("method 'spt' builds its prompts from the training images: pass data=<a DataLoader "
                             "yielding (x, y) or x> (e.g. build_model('spt', ..., data=train_loader)), or "
                             "init_prompts=<(depth, num_prompts, D) array>")
        super().__init__(vit, num_classes, config)
        protos = torch.as_tensor(np.asarray(config.init_prompts))
        if protos.shape != self.prompts.shape:
            raise ValueError(f"init_prompts must have shape {tuple(self.prompts.shape)} (depth, num_prompts, D), "
                             f"got {tuple(protos.shape)}")
        with torch.no_grad():
            self.prompts.copy_(protos.to(self.prompts))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, init={self.config.init!r}"
