"""SEP's visual Token Fusion Module (TFM) and its token selection.

Source: Yao et al., "SEP: Self-Enhanced Prompt Tuning for Visual-Language Model" (arXiv 2405.15549); facts from
its abstract and the official code (htyao89/SEP, `SEP_main/trainers/sep.py` `PromptAttention`,
`SEP_main/trainers/clip_text/model.py` `ResidualAttentionBlock_SEP_Visual`).

Selection ("representative tokens ... for each input data", abstract):
- energy of a token = mean of its squared channels, ||t||^2 / D (official: `x.pow(2).mean(dim=2)`), computed on the
  block's input (the pre-LayerNorm residual stream) over the non-prompt tokens, CLS included;
- top-k by energy with k = number of prompts (forced: the fused output is a residual on the selected tokens).
- Difference: the official code then averages the energy over the batch, so one index set is shared by the whole
  batch; we select per input, as the abstract describes.

Fusion (official `PromptAttention.forward`, with s1, s2 learnable scalars initialised to 0.75):
    a   = MHA(query=LN1(prompts), key=value=LN1(selected))      # one LayerNorm for both, as in the code
    v   = s1 * selected + (1 - s1) * a
    out = s2 * v + (1 - s2) * MLP(LN2(v))                       # MLP: D -> D/3 -> D, no biases (256 for D=768)
- Difference: official calls `nn.MultiheadAttention` (sequence-first) on batch-first tensors, so it attends over the
  *batch* axis. We attend over tokens (`batch_first=True`), the evident intent.
- Difference: GELU instead of CLIP's QuickGELU (its approximation), matching timm ViT blocks.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def token_energy(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, D) -> (B, N): mean squared activation of each token."""
    return tokens.pow(2).mean(dim=-1)


def select_high_energy_tokens(tokens: torch.Tensor, k: int) -> torch.Tensor:
    """The k highest-energy tokens of each input, highest first: (B, N, D) -> (B, k, D)."""
    if not 1 <= k <= tokens.shape[1]:
        raise ValueError(f"cannot select {k} tokens from {tokens.shape[1]}: "
                         "use at most as many prompts as image tokens")
    idx = token_energy(tokens).topk(k, dim=1).indices
    return tokens.gather(1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


class TokenFusion(nn.Module):
    """Fuse K prompt tokens (queries) with K selected image tokens (keys/values) of the same input."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden_dim: int, init_scale: float = 0.75):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"fusion width {dim} is not divisible by {num_heads} heads")
        if mlp_hidden_dim < 1:
            raise ValueError(f"mlp_hidden_dim must be >= 1, got {mlp_hidden_dim}")
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_hidden_dim, bias=False), nn.GELU(),
                                 nn.Linear(mlp_hidden_dim, dim, bias=False))
        self.attn_scale = nn.Parameter(torch.full((1,), float(init_scale)))
        self.mlp_scale = nn.Parameter(torch.full((1,), float(init_scale)))

    def forward(self, prompts: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        if prompts.shape != selected.shape:
            raise ValueError(f"prompts {tuple(prompts.shape)} and selected tokens {tuple(selected.shape)} must have "
                             "the same shape (B, K, D)")
        kv = self.norm1(selected)
        fused = self.attn(self.norm1(prompts), kv, kv, need_weights=False)[0]
        x = self.attn_scale * selected + (1 - self.attn_scale) * fused
        return self.mlp_scale * x + (1 - self.mlp_scale) * self.mlp(self.norm2(x))
