"""VPT (Jia et al., "Visual Prompt Tuning", ECCV 2022, arXiv 2203.12119): learnable tokens in a frozen ViT.

Facts from the official code (KMnP/vpt, `src/models/vit_prompt/vit.py`, configs and demo scripts):
- prompts sit after the CLS token and before the patches; here after all `num_prefix_tokens` (CLS + registers);
- init U(+-sqrt(6 / (3 * patch * patch + D))) (= +-0.0625 for ViT-B/16); channels and patch size are read from the
  backbone here (`xavier_prompt_bound`);
- shallow: one (K, D) prompt at the input, its outputs carried through all blocks;
  deep: a fresh (K, D) prompt replaces the previous prompt outputs before every block (depth * K * D parameters);
- `Dropout(p)` on the (batch-expanded) prompts each time they are inserted; the demo scripts use p = 0.1;
- standard joint-softmax attention: prompts are queries, keys and values in every block (plain timm blocks);
- the classifier reads the final-normed CLS token (`forward_head` after the prompts are removed).

Deliberate differences, for a controlled comparison with SHIP (docs/ship_computation.md §9):
- training recipe = SHIP's (§1): drop path 0.1 active while training. Official VPT keeps the frozen encoder in eval
  mode while training (no stochastic depth).
- default K = 50. VPT tunes K per task over {1, 5, 10, 50, 100, 200}; 50 is SHIP's most common K (11 of 19 tasks).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer

from ..utils.checks import positive_int
from ._prompt_init import xavier_prompt_bound
from .base import MethodConfig, PeftModel
from .registry import register_method


# ----- token layout shared by the prompt methods: [prefix tokens | prompts | patches] -----
def insert_prompts(x: torch.Tensor, prompts: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Place (B, K, D) prompts after the prefix tokens of (B, P + N, D) image tokens."""
    return torch.cat([x[:, :num_prefix], prompts, x[:, num_prefix:]], dim=1)


def replace_prompts(x: torch.Tensor, prompts: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Swap the K prompt slots of (B, P + K + N, D) tokens for new (B, K, D) prompts."""
    return torch.cat([x[:, :num_prefix], prompts, x[:, num_prefix + prompts.shape[1]:]], dim=1)


def remove_prompts(x: torch.Tensor, num_prefix: int, num_prompts: int) -> torch.Tensor:
    """The image tokens (prefix + patches) of (B, P + K + N, D) tokens."""
    return torch.cat([x[:, :num_prefix], x[:, num_prefix + num_prompts:]], dim=1)


@dataclass(frozen=True)
class PromptConfig(MethodConfig):
    """Options of every prompt method."""

    num_prompts: int = 50  # K; VPT tunes it per task, 50 is SHIP's most common value
    prompt_dropout: float = 0.1  # VPT demo scripts: MODEL.PROMPT.DROPOUT 0.1

    def validate(self) -> None:
        super().validate()
        positive_int("num_prompts", self.num_prompts)
        if not 0.0 <= self.prompt_dropout < 1.0:
            raise ValueError(f"prompt_dropout must be in [0, 1), got {self.prompt_dropout}")


@dataclass(frozen=True)
class VPTConfig(PromptConfig):
    pass


class VisualPromptTuning(PeftModel):
    """VPT on a timm ViT. `deep` (class attribute) chooses shallow (input only) or deep (every block) prompts."""

    config_class = VPTConfig
    deep: ClassVar[bool] = False

    def __init__(self, vit: VisionTransformer, num_classes: int, config: PromptConfig):
        super().__init__(vit, num_classes, config)
        layers = self.depth if self.deep else 1
        self.prompts = nn.Parameter(torch.empty(layers, config.num_prompts, self.embed_dim))
        bound = xavier_prompt_bound(vit)
        nn.init.uniform_(self.prompts, -bound, bound)
        self.prompt_dropout = nn.Dropout(config.prompt_dropout)

    @property
    def num_prompts(self) -> int:
        return self.prompts.shape[1]

    def _prompts_for(self, layer: int, batch: int) -> torch.Tensor:
        return self.prompt_dropout(self.prompts[layer].expand(batch, -1, -1))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = self.embed(x)
        prefix = self.num_prefix_tokens
        for i, blk in enumerate(self.vit.blocks):
            if i == 0:
                x = insert_prompts(x, self._prompts_for(0, x.shape[0]), prefix)
            elif self.deep:
                x = replace_prompts(x, self._prompts_for(i, x.shape[0]), prefix)
            x = blk(x)
        x = self.vit.norm(x)
        return remove_prompts(x, prefix, self.num_prompts), {}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_prompts={self.num_prompts}, deep={self.deep}"


@register_method("vpt_shallow")
class VPTShallow(VisualPromptTuning):
    deep = False


@register_method("vpt_deep")
class VPTDeep(VisualPromptTuning):
    deep = True
