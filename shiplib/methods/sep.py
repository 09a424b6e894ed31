"""SEP's visual branch (Yao et al., "SEP: Self-Enhanced Prompt Tuning for Visual-Language Model", arXiv 2405.15549,
github.com/htyao89/SEP) on a timm ViT classifier.

What SEP does in its image encoder (official `ResidualAttentionBlock_SEP_Visual` / `PromptAttention`):
- one learnable (K, D) prompt, init N(0, 0.02), is inserted at the input;
- before each fusion block i (default: every block but the first, the official layer set `[1..11]`), the K prompt
  outputs of block i-1 (the "learnable prompt tokens" at that depth) are fused with the K highest-energy image tokens
  of the same input by that block's own Token Fusion Module (`shiplib.layers.token_fusion`); the result replaces
  the prompt slots. Nothing is re-inserted: the only prompt parameter is the input one.
- the blocks are the frozen timm blocks with joint attention (prompts are queries too).

Defaults and differences (details, and the two fixes to the official code, in `token_fusion.py`):
- K = 16 (official N_CTX_V default); no prompt dropout (official has none);
- TFM heads = the backbone's head count (official D // 64, the same for ViT-B); MLP hidden = D / 3 (official 256 for
  D = 768); mixing scalars start at 0.75 (official);
- out of scope (CLIP-specific): the text branch, the residual with frozen CLIP image features and the consistency
  losses. The classifier is the usual linear head on the final-normed CLS token, trained with the SHIP recipe.
- Cost: each TFM holds a full D x D attention (4D^2 + 4D) plus a 2 * D * D/3 MLP; with ViT-B that is ~2.76 M
  parameters per fused block (~30 M for 11 blocks), as in the official code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer

from ..layers.token_fusion import TokenFusion, select_high_energy_tokens
from ..utils.checks import positive_int
from .base import PeftModel
from .registry import register_method
from .vpt import PromptConfig, insert_prompts, remove_prompts, replace_prompts


@dataclass(frozen=True)
class SEPConfig(PromptConfig):
    num_prompts: int = 16  # official N_CTX_V default
    prompt_dropout: float = 0.0  # official applies none
    prompt_init_std: float = 0.02  # official: nn.init.normal_(std=0.02)
    fusion_layers: tuple[int, ...] | None = None  # blocks whose input prompts are fused; None = 1..depth-1
    fusion_heads: int | None = None  # None = the backbone's heads (official D // 64)
    fusion_mlp_ratio: float = 1 / 3  # hidden = round(D * ratio); official 256 for D = 768
    fusion_init_scale: float = 0.75  # official init of both mixing scalars

    def validate(self) -> None:
        super().validate()
        if self.fusion_layers is not None:
            layers = tuple(self.fusion_layers)
            if (not all(isinstance(i, int) and not isinstance(i, bool) for i in layers)
                    or len(set(layers)) != len(layers)):
                raise ValueError(f"fusion_layers must be distinct block indices, got {self.fusion_layers!r}")
            object.__setattr__(self, "fusion_layers", tuple(sorted(layers)))  # normalised once; frozen otherwise
        positive_int("fusion_heads", self.fusion_heads, allow_none=True)
        if not self.fusion_mlp_ratio > 0:
            raise ValueError(f"fusion_mlp_ratio must be > 0, got {self.fusion_mlp_ratio}")
        if self.prompt_init_std <= 0:
            raise ValueError(f"prompt_init_std must be > 0, got {self.prompt_init_std}")


def _backbone_heads(vit: VisionTransformer) -> int:
    heads = getattr(getattr(vit.blocks[0], "attn", None), "num_heads", None)
    return heads if isinstance(heads, int) else max(1, vit.embed_dim // 64)


@register_method("sep")
class SelfEnhancedPromptTuning(PeftModel):
    config_class = SEPConfig

    def __init__(self, vit: VisionTransformer, num_classes: int, config: SEPConfig):
        super().__init__(vit, num_classes, config)
        layers = config.fusion_layers if config.fusion_layers is not None else tuple(range(1, self.depth))
        bad = [i for i in layers if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"fusion_layers {bad} are outside the backbone's blocks 0..{self.depth - 1}")
        dim = self.embed_dim
        self.prompt = nn.Parameter(torch.empty(1, config.num_prompts, dim))
        nn.init.normal_(self.prompt, std=config.prompt_init_std)
        self.prompt_dropout = nn.Dropout(config.prompt_dropout)
        heads = config.fusion_heads or _backbone_heads(vit)
        hidden = max(1, round(dim * config.fusion_mlp_ratio))
        self.fusion = nn.ModuleDict({str(i): TokenFusion(dim, heads, hidden, config.fusion_init_scale)
                                     for i in layers})

    @property
    def num_prompts(self) -> int:
        return self.prompt.shape[1]

    @property
    def fusion_layers(self) -> list[int]:
        return [int(i) for i in self.fusion]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = self.embed(x)
        prefix, k = self.num_prefix_tokens, self.num_prompts
        x = insert_prompts(x, self.prompt_dropout(self.prompt.expand(x.shape[0], -1, -1)), prefix)
        for i, blk in enumerate(self.vit.blocks):
            if str(i) in self.fusion:
                selected = select_high_energy_tokens(remove_prompts(x, prefix, k), k)
                x = replace_prompts(x, self.fusion[str(i)](x[:, prefix:prefix + k], selected), prefix)
            x = blk(x)
        x = self.vit.norm(x)
        return remove_prompts(x, prefix, k), {}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_prompts={self.num_prompts}, fusion_layers={self.fusion_layers}"
