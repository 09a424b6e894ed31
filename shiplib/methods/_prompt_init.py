"""Prompt initialisations shared by the prompt methods.

- `xavier_prompt_bound`: VPT's uniform bound (Jia et al. 2022; KMnP/vpt `src/models/vit_prompt/vit.py`).
- `token_prototypes`: SPT's prompts from the frozen model's own tokens (Wang et al., ICML 2024, arXiv 2402.02382;
  facts from its README and a public re-implementation, SinAxCosB/Self-Prompt-Tuning `train.py`/`utils.py`).

SPT details and where we differ from that reference:
- Tokens: the **patch tokens** entering each block (prefix tokens excluded, as the reference drops CLS). For block 0
  we use `embed(x)` (patch embedding + position embedding), i.e. the true block-0 input; the reference took the raw
  patch-embedding output without position embedding there.
- Backbone: the prompt-free frozen model in eval mode (no drop path), as in the reference.
- Token pool: a seeded uniform sample of at most `max_tokens` candidates per block, drawn at the same (image, token)
  positions for every block, so memory stays bounded on any data size (the reference used all tokens of a subset).
- `kmeans`: K centres from `sklearn.cluster.KMeans(n_init=1, random_state=seed + block)` on the pool (the paper's
  default "prototypes"; the reference precomputed them offline). ~5 s per block for 20k ViT-B tokens on one core.
- `random`: K distinct pool tokens drawn uniformly (the reference's "random").
- `mean_pool`: each image's patch sequence (raster order) is cut into K contiguous, near-equal groups and each group
  is averaged (`adaptive_avg_pool1d`); K of these group means are then drawn uniformly. The reference cut K-1 windows
  of L//(K-1) tokens plus a remainder window (the whole sequence when the remainder is 0); equal groups avoid that.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from ..utils.checks import choice
from ..utils.images import iter_image_batches
from ..utils.kmeans import kmeans
from ..utils.progress import progress_bar
from .base import embed_tokens

PROTOTYPE_INITS = ("kmeans", "random", "mean_pool")


def xavier_prompt_bound(vit: VisionTransformer) -> float:
    """VPT's bound sqrt(6 / (in_chans * patch_h * patch_w + D)); 0.0625 for ViT-B/16.

    VPT hard-codes 3 channels; here channels and patch size are read from the patch-embedding kernel.
    """
    weight = getattr(getattr(vit.patch_embed, "proj", None), "weight", None)
    if weight is None or weight.ndim != 4:
        raise ValueError("cannot read the patch size and channels: the backbone's patch_embed has no Conv2d `proj`. "
                         "VPT's init needs a standard timm PatchEmbed.")
    fan = weight[0].numel()  # in_chans * patch_h * patch_w
    return math.sqrt(6.0 / (fan + vit.embed_dim))


def _candidates(patches: torch.Tensor, init: str, num_prompts: int) -> torch.Tensor:
    """Candidate prompt vectors of one block input: (B, N, D) patch tokens -> (n, D)."""
    if init == "mean_pool":
        patches = F.adaptive_avg_pool1d(patches.transpose(1, 2), num_prompts).transpose(1, 2)
    return patches.reshape(-1, patches.shape[-1])


@torch.no_grad()
def sample_block_input_tokens(vit: VisionTransformer, data, num_prompts: int, init: str, max_tokens: int,
                              seed: int) -> list[torch.Tensor]:
    """Per block, a uniform sample (<= max_tokens, D) of the candidates built from that block's input tokens.

    The frozen, prompt-free `vit` runs in eval mode.
    """
    choice("init", init, PROTOTYPE_INITS)
    device = next(vit.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    prefix = vit.num_prefix_tokens
    keys = torch.empty(0)
    pools: list[torch.Tensor] | None = None
    was_training = vit.training
    vit.eval()
    total = len(data) if hasattr(data, "__len__") and not isinstance(data, torch.Tensor) else None
    try:
        for x in progress_bar(iter_image_batches(data), total=total, desc="SPT: block-input tokens", unit="batch",
                      disable=None):
            h = embed_tokens(vit, x.to(device))
            n_new = h.shape[0] * (num_prompts if init == "mean_pool" else h.shape[1] - prefix)
            # Priority sampling: a uniform random key per candidate; the max_tokens largest keys survive.
            all_keys = torch.cat([keys, torch.rand(n_new, generator=gen)])
            # Sorted, so the kept old entries come first in pool order, then the new ones: keys stay aligned.
            keep = all_keys.topk(min(max_tokens, len(all_keys))).indices.sort().values
            keep_old, keep_new = keep[keep < len(keys)], keep[keep >= len(keys)] - len(keys)
            keys = all_keys[keep]
            new_pools = []
            for i, blk in enumerate(vit.blocks):
                cand = _candidates(h[:, prefix:], init, num_prompts)[keep_new.to(device)].float().cpu()
                new_pools.append(cand if pools is None else torch.cat([pools[i][keep_old], cand]))
                h = blk(h)
            pools = new_pools
    finally:
        vit.train(was_training)
    if pools is None:
        raise ValueError("data yielded no images: SPT needs training images to build its prompts")
    return pools


def token_prototypes(vit: VisionTransformer, data, num_prompts: int, init: str = "kmeans", max_tokens: int = 20_000,
                     seed: int = 0) -> torch.Tensor:
    """SPT prompts: (depth, K, D), row i built from the tokens entering block i of the frozen backbone."""
    pools = sample_block_input_tokens(vit, data, num_prompts, init, max_tokens, seed)
    n = len(pools[0])
    if n < num_prompts:
        raise ValueError(f"only {n} candidate tokens were collected but num_prompts={num_prompts}: give more "
                         f"training images, a larger max_tokens, or fewer prompts")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, pool in enumerate(progress_bar(pools, desc=f"SPT: {init} prototypes", unit="block", leave=False)):
        if init == "kmeans":
            out.append(torch.from_numpy(kmeans(pool.numpy(), num_prompts, seed + i, n_init=1).cluster_centers_).float())
        else:
            out.append(pool[torch.randperm(n, generator=gen)[:num_prompts]])
    return torch.stack(out)
