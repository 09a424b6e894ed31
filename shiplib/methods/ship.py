"""SHIP (Zhu et al., "Semantic Hierarchical Prompt Tuning for Parameter-Efficient Fine-Tuning", arXiv 2412.16956).

The official code (haoweiz23/SHIP @ d65400f) as restated in docs/ship_computation.md (the "spec"; §N below are its
sections), on any timm `VisionTransformer` (widths, depths, image sizes and prefix tokens are read from the backbone).

Forward (defaults = official):
- token layout entering a block: `[image tokens (prefix + patches) | SIP | AP | SSP]`; prompts get no position
  embedding;
- semantic levels = list of level-start blocks (begins with 0). At each level start the previous prompt outputs
  are dropped and the level's SIP (K tokens, its own parameter) is inserted; its outputs are carried through the
  rest of the level. At the last `num_attribute_prompts` level starts an AP follows the SIP (outputs carried the
  same way). The SSP (one parameter) is re-inserted at every block, replacing the previous SSP outputs. This
  schedule is the model's `plan` (`shiplib.methods.ship_plan.BlockPlan`), computed once at construction;
- AP of the level starting at block i: the top-`ap_length` image tokens of block i-1's output by the head-mean
  PRE-softmax logits of its CLS query (keys = image tokens, CLS included) are matched to the prototype bank:
  `AP = ap_mix_scale * softmax(cos(tokens, bank)) @ bank + (1 - ap_mix_scale) * attribute_prompt`;
- decoupled attention (`shiplib.layers.decoupled_attention`) with scale `da_scale` in every block; prompts are
  queries only in the last block (`prompt_queries="last"`), elsewhere their rows pass LN1(p) through to proj;
- PML (`shiplib.losses.pml`) on the last block's outputs, top-`top_k` targets, returned raw under "pml"; its
  weight is `model.loss_weights["pml"]`; only computed in train mode (eval returns 0; the official code computes
  and discards it);
- classifier: the backbone's own head (timm's `forward_head`) on the final-normed image tokens.

One loop over the plan (`SHIP.run_plan`), one block function (`shiplib.layers.ship_block`) with timm's kind of
switch (`fused_attn`): `model.implementation` (from the `implementation` option at construction) or per call,
`model(x, implementation="reference")`:
- "fast" (default): SDPA attention, the CLS logit row computed on its own, the input-independent prompt rows
  computed once per batch (and their keys/values cached across calls at inference, `ship_cache`), only the rows
  the plan says are read (in the last block only the prefix rows a token-pooled head reads);
- "reference": the same function with every row materialised and every logit written out: the executable
  statement of the method, and the oracle of the fast path.
They agree to float32 rounding, gradients included (tests/test_ship_fast.py), with the same drop-path draws.

Choices where the official code has no answer (documented behaviour, spec §10):
- APs sit only at level starts > 0 (block 0 has no previous block to select tokens from): the last
  `num_attribute_prompts` level starts after block 0. With fewer levels there are fewer APs, and
  `attribute_prompts` has one row per AP actually used (none for a single level). The official code crashes with
  <= 2 levels. Rows keep the official order (row j <-> the j-th AP start).
- The AP picks `ap_length` tokens (one per AP token; official 10 = AP length = top-k); `top_k` is the number of
  PML targets.
- `da=False` (ablation): plain joint-softmax attention over [image; prompts] with prompts as queries in every block
  (VPT-style); `prompt_queries` and `da_scale` then do nothing.
- No prompt tokens at all (sip, ssp, ap off): attention is the backbone's own and PML is 0.
- AP and PML select tokens by the CLS query, so they need a backbone with a class token (token 0).
- The prototype bank is a non-persistent buffer: it follows `.to(device)` but is not in `state_dict()` (as in the
  official code, where it is a plain attribute); pass `prototypes=` again when rebuilding a model.

Hierarchy sources, in priority order: `levels`; `affinity` + `threshold`; `threshold >= 1` (every block its own
level, as the official code, which then never reads the affinity); `data` + `threshold` (block features of the frozen
backbone -> affinity -> levels). The bank (needed only when an AP is used): `prototypes`, else k-means on the
last-block features of `data` (`num_prototypes`, `prototype_seed`, `feature_pool`); `prototype_bank="random"`
(an ablation, not in the official code) swaps it for random vectors of the same shape and per-dimension scale.
The missing level and bank sources come from the data step (`SHIP.data_key`, `SHIP.data_inputs`): block features
of the frozen backbone on the training images, extracted once in eval mode, give `affinity` and `prototypes`, which
the constructor then takes like given ones (`build_model(..., data=images)` runs the step first).
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from ..errors import ConfigError
from ..hierarchy import (attribute_prototypes, check_level_order, check_level_starts, extract_block_features,
                         extract_last_layer_features, inter_layer_affinity, load_affinity, load_prototype_bank,
                         random_bank_like, semantic_levels, validate_affinity)
from ..layers.block_parts import check_block
from ..layers.ship_block import BlockOutput, BlockSettings, PromptRows, PromptSegment, ship_block
from ..losses.pml import gather_tokens, prompt_matching_loss, top_attended_tokens
from ..utils.checks import choice, is_int, positive_int
from .base import MethodConfig, PeftModel
from .registry import register_method
from .ship_cache import CACHED_KINDS, PromptKVCache, cache_entry, uses_prompt_cache
from .ship_plan import BlockPlan, BlockStep, attribute_prompt_starts, head_rows

PROMPT_QUERIES = ("last", "all")
IMPLEMENTATIONS = ("fast", "reference")
FEATURE_POOLS = ("cls", "mean")
PROTOTYPE_BANKS = ("kmeans", "random")
ABLATION_SWITCHES = ("sip", "ssp", "ap", "pml", "da")
CIFAR100_LEVELS = (0, 2, 4, 6, 8, 11)  # official cifar100 level starts (spec §7), for 12 blocks

LEVEL_SOURCES_HELP = (
    "pass one of: levels=[0, ...] (the first block of each semantic level); affinity=<(L, L) matrix or .npy path> "
    "with threshold=<float>; data=<loader of training images> with threshold=<float> (levels from the frozen "
    "backbone's block features); or threshold>=1 (every block its own level). Or switch off both sip and ap."
)


def _is_real(v) -> bool:
    return isinstance(v, (numbers.Real, np.floating, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_implementation(value: str) -> str:
    return choice("implementation", value, IMPLEMENTATIONS)


@dataclass(frozen=True)
class ShipConfig(MethodConfig):
    """SHIP options; every default is the official code's (spec §4-§6, §10)."""

    prompt_length: int = 50  # K, tokens per SIP (the official code tunes it per task)
    levels: Any = None  # list[int] of level-start blocks
    threshold: float | None = None  # share threshold alpha of the greedy level search
    affinity: Any = None  # (L, L) inter-layer affinity: array/tensor or .npy path
    prototypes: Any = None  # (k, D) attribute bank: array/tensor or .npy/.pt/.pth/.safetensors path
    feature_pool: str = "cls"  # block features from `data`: CLS token or patch mean (official: unknown)
    num_prototypes: int = 200  # k-means clusters when the bank is computed from `data`
    prototype_seed: int = 42  # official KMeans random_state
    prototype_bank: str = "kmeans"  # "random": Gaussian draws at the bank's per-dimension mean/std (ablation)
    sip: bool = True  # semantic-independent prompts (one per level)
    ssp: bool = True  # semantic-shared prompt (every block)
    ap: bool = True  # attribute prompts
    pml: bool = True  # prompt matching loss
    da: bool = True  # decoupled attention (False: joint softmax, prompts attend everywhere)
    prompt_queries: str = "last"  # DA: prompts are queries in the "last" block only (official) or in "all"
    num_attribute_prompts: int = 2  # APs at the last N level starts (> 0)
    ssp_length: int = 10
    ap_length: int = 10  # tokens per AP = tokens selected to build it
    da_scale: float = 0.1  # s in (1 - s) * image-image + s * image-prompt
    top_k: int = 10  # PML targets per image
    ap_mix_scale: float = 0.1  # AP = scale * prototype mixture + (1 - scale) * parameter
    pml_weight: float = 0.5
    implementation: str = "fast"  # the model's default execution, "fast" or "reference" (module docstring)

    def validate(self) -> None:
        super().validate()
        for name in ("prompt_length", "num_prototypes", "num_attribute_prompts", "ssp_length", "ap_length", "top_k"):
            positive_int(name, getattr(self, name))
        if not is_int(self.prototype_seed):
            raise ValueError(f"prototype_seed must be an int, got {self.prototype_seed!r}")
        for name in ABLATION_SWITCHES:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} is an on/off switch: give True or False, got {getattr(self, name)!r}")
        check_implementation(self.implementation)
        choice("prompt_queries", self.prompt_queries, PROMPT_QUERIES)
        choice("prototype_bank", self.prototype_bank, PROTOTYPE_BANKS)
        choice("feature_pool", self.feature_pool, FEATURE_POOLS)
        for name in ("da_scale", "ap_mix_scale"):
            v = getattr(self, name)
            if not _is_real(v) or not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
        if not _is_real(self.pml_weight) or not self.pml_weight >= 0:
            raise ValueError(f"pml_weight must be a number >= 0, got {self.pml_weight!r}")
        if self.threshold is not None and (not _is_real(self.threshold) or not np.isfinite(self.threshold)):
            raise ValueError(f"threshold must be a finite number (e.g. 0.95) or None, got {self.threshold!r}")
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            # it is compared with cosine affinities: outside [-1, 1] it means "one level" or "every block" silently
            raise ValueError(f"threshold is compared with cosine affinities, so it must lie in [-1, 1] (1.0: every "
                             f"block its own level; lower: fewer, longer levels), got {self.threshold!r}")
        if self.levels is not None:
            if isinstance(self.levels, (str, bytes)) or not hasattr(self.levels, "__iter__"):
                raise ValueError(f"levels must be a list of level-start blocks such as [0, 2, 4], got {self.levels!r}")
            if not all(is_int(v) for v in self.levels):
                raise ValueError(f"levels must hold ints (block indices), got {list(self.levels)!r}")
            check_level_order(self.levels)

    @property
    def uses_levels(self) -> bool:
        return self.sip or self.ap

    @property
    def levels_from_data(self) -> bool:
        """No level source but the training images (module docstring: hierarchy sources)."""
        return self.uses_levels and self.levels is None and self.affinity is None \
            and not (self.threshold is not None and self.threshold >= 1.0)


# ----- hierarchy -----
def rescaled_levels(levels: Sequence[int], depth: int) -> list[int]:
    """Level starts of a backbone whose last block is `levels[-1]`, spread over `depth` blocks (last -> depth-1)."""
    return sorted({round(s * (depth - 1) / levels[-1]) for s in levels})


def _affinity_matrix(affinity, depth: int) -> np.ndarray:
    if isinstance(affinity, (str, bytes)) or hasattr(affinity, "__fspath__"):
        A = load_affinity(affinity)
    else:
        A = validate_affinity(affinity.detach().cpu().numpy() if isinstance(affinity, torch.Tensor) else affinity)
    if A.shape[0] != depth:
        raise ValueError(f"the affinity is {A.shape[0]}x{A.shape[0]} but the backbone has {depth} blocks; "
                         "it must come from the same backbone")
    return A


def resolve_levels(cfg: ShipConfig, depth: int) -> tuple[list[int], str]:
    """(level starts, where they came from), by the priority in the module docstring (spec §2-§3)."""
    if cfg.levels is not None:
        return check_level_starts(cfg.levels, depth), "levels"
    if cfg.affinity is not None:
        if cfg.threshold is None:
            raise ValueError("affinity was given without threshold: the levels need both (e.g. threshold=0.95)")
        return semantic_levels(_affinity_matrix(cfg.affinity, depth), cfg.threshold), "affinity"
    if cfg.threshold is not None and cfg.threshold >= 1.0:
        return list(range(depth)), "threshold"
    raise ValueError(f"SHIP needs semantic levels (sip/ap are on): {LEVEL_SOURCES_HELP}")


def resolve_prototypes(cfg: ShipConfig, width: int) -> torch.Tensor:
    """The (k, D) attribute bank (given, or k-means on the last block's features by the data step, spec §4);
    `prototype_bank="random"` then replaces it by `random_bank_like` draws (seeded by `prototype_seed`)."""
    if cfg.prototypes is not None:
        bank = load_prototype_bank(cfg.prototypes, expected_dim=width)
        return random_bank_like(bank, cfg.prototype_seed) if cfg.prototype_bank == "random" else bank
    raise ValueError("attribute prompts (ap=True) need a prototype bank: pass prototypes=<(k, D) array/tensor or "
                     ".npy/.pt/.safetensors path>, or data=<loader of training images> to cluster the frozen "
                     "backbone's last-block features; or switch them off with ap=False")


# ----- prompt construction -----
def mix_attribute_prompt(tokens: torch.Tensor, bank: torch.Tensor, prompt: torch.Tensor,
                         scale: float) -> torch.Tensor:
    """scale * softmax_k(cos(token, bank_k)) @ bank + (1 - scale) * prompt: (B, L, D), (k, D), (L, D) -> (B, L, D)."""
    weights = (F.normalize(tokens, dim=-1) @ F.normalize(bank, dim=-1).T).softmax(dim=-1)
    return scale * (weights @ bank) + (1.0 - scale) * prompt


def _check_backbone(cfg: ShipConfig, vit: VisionTransformer) -> None:
    """Refuse, in one line and before any work, a backbone SHIP cannot run on as configured."""
    for blk in vit.blocks:
        check_block(blk)
    if (cfg.ap or cfg.pml) and getattr(vit, "cls_token", None) is None:
        raise ConfigError("SHIP's attribute prompts and PML pick tokens by the CLS token's attention, but this "
                          "backbone has no class token; use one with class_token=True, or set ap=False, pml=False")
    if cfg.levels is not None:
        check_level_starts(cfg.levels, len(vit.blocks))


def _clear_prompt_cache(module: "SHIP", incompatible_keys) -> None:
    module.prompt_cache.clear()


@register_method("ship")
class SHIP(PeftModel):
    """SHIP on a timm ViT; see the module docstring. Trainable: prompts + head."""

    config_class = ShipConfig
    implementations = IMPLEMENTATIONS

    # ----- hooks -----
    @classmethod
    def data_key(cls, config: ShipConfig) -> dict[str, Any] | None:
        """The level and bank sources `config` lacks (`affinity`, `prototypes`) and their extraction settings."""
        missing = dict(affinity=config.levels_from_data, prototypes=config.ap and config.prototypes is None)
        inputs = [name for name, is_missing in missing.items() if is_missing]
        return dict(inputs=inputs, pool=config.feature_pool, k=config.num_prototypes,
                    kmeans_seed=config.prototype_seed) if inputs else None

    @classmethod
    def data_inputs(cls, vit: VisionTransformer, images, config: ShipConfig) -> dict[str, np.ndarray]:
        """The affinity of the frozen backbone's block features and/or k-means prototypes of the last block's."""
        inputs = cls.data_key(config)["inputs"]
        if "affinity" in inputs and config.threshold is None:
            raise ValueError("levels from data need a threshold (e.g. threshold=0.95), or pass levels=[0, ...]")
        if "affinity" in inputs:
            features = extract_block_features(vit, images, pool=config.feature_pool)
            out, last = dict(affinity=inter_layer_affinity(features)), features[-1]
        else:
            out, last = {}, extract_last_layer_features(vit, images, pool=config.feature_pool)
        if "prototypes" in inputs:
            out["prototypes"] = attribute_prototypes(last, k=config.num_prototypes, seed=config.prototype_seed)
        return out

    @classmethod
    def check_backbone(cls, options: dict[str, Any], vit: VisionTransformer) -> None:
        _check_backbone(dataclasses.replace(cls.config_class(), **options), vit)

    @classmethod
    def bench_options(cls, vit: VisionTransformer, seed: int = 0) -> dict[str, Any]:
        """K=50, the cifar100 levels rescaled to the depth, a random (200, D) prototype bank."""
        g = torch.Generator().manual_seed(seed)
        return dict(prompt_length=50, levels=rescaled_levels(CIFAR100_LEVELS, len(vit.blocks)),
                    prototypes=torch.randn(200, vit.embed_dim, generator=g))

    def __init__(self, vit: VisionTransformer, num_classes: int, config: ShipConfig):
        _check_backbone(config, vit)
        super().__init__(vit, num_classes, config)
        D = self.embed_dim
        if config.uses_levels:
            self.levels, self.level_source = resolve_levels(config, self.depth)
        else:
            self.levels, self.level_source = [], "unused"
        self.ap_starts = attribute_prompt_starts(self.levels, config.num_attribute_prompts) if config.ap else []
        self.plan = BlockPlan.build(self.depth, self.levels, self.ap_starts, config)
        self.implementation = config.implementation  # like timm's `fused_attn`; a call may choose otherwise

        # Official inits (spec §4) on the official shapes: PyTorch's fan rules then give the official bounds.
        self.sip_prompts = nn.ParameterList(
            [nn.Parameter(nn.init.xavier_uniform_(torch.empty(1, config.prompt_length, D)))
             for _ in (self.levels if config.sip else [])])
        self.ssp_prompt = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(config.ssp_length, D))) \
            if config.ssp else None
        self.attribute_prompts = nn.Parameter(nn.init.kaiming_uniform_(
            torch.empty(len(self.ap_starts), config.ap_length, D))) if self.ap_starts else None
        bank = resolve_prototypes(config, D) if self.ap_starts else None
        self.register_buffer("prototype_bank", bank, persistent=False)

        self.loss_weights = {"pml": float(config.pml_weight)} if config.pml else {}
        self.prompt_cache = PromptKVCache()  # inference-time prompt keys/values of the fast path (optional helper)
        self.register_load_state_dict_post_hook(_clear_prompt_cache)

    def train(self, mode: bool = True):
        if mode or mode != self.training:  # entering training: the prompts are about to change
            self.prompt_cache.clear()
        return super().train(mode)

    # ----- prompts -----
    def inserted_prompt(self, kind: str, step: BlockStep, prev_image: torch.Tensor | None = None,
                        prev_logits: torch.Tensor | None = None) -> torch.Tensor:
        """The fresh tokens of prompt `kind` entering `step`'s block: the (1, L, D) parameter of a SIP or the SSP
        (the same for every sample), or an (B, L, D) AP built from the previous block's image tokens and logits."""
        if kind == "sip":
            return self.sip_prompts[step.sip_level]
        if kind == "ssp":
            return self.ssp_prompt.unsqueeze(0)
        return self.attribute_prompt(step.ap_row, prev_image, prev_logits)

    def attribute_prompt(self, row: int, prev_image: torch.Tensor, prev_logits: torch.Tensor) -> torch.Tensor:
        """AP from the previous block's image tokens (B, n, D) and pre-softmax logits (spec §4, "AG")."""
        index = top_attended_tokens(prev_logits, prev_image.shape[1], self.config.ap_length)
        return mix_attribute_prompt(gather_tokens(prev_image, index), self.prototype_bank,
                                    self.attribute_prompts[row], self.config.ap_mix_scale)

    # ----- forward -----
    def forward(self, x: torch.Tensor, return_losses: bool = False, implementation: str | None = None):
        """Logits (and the raw losses); `implementation`: "fast" or "reference" for this call."""
        fused = check_implementation(implementation or self.implementation) == "fast"
        # the fast path computes only the image rows a token-pooled head reads in the last block
        feats, losses = self.run_plan(x, fused, head_rows(self.vit) if fused else None)
        logits = self.forward_head(feats)
        return (logits, losses) if return_losses else logits

    def forward_features(self, x: torch.Tensor, implementation: str | None = None
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Final-normed image tokens (B, n, D) and the raw PML."""
        return self.run_plan(x, check_implementation(implementation or self.implementation) == "fast", None)

    def run_plan(self, x: torch.Tensor, fused: bool, rows: int | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """SHIP's forward (spec §4): the block plan run block by block (`shiplib.layers.ship_block`).

        `fused=False` is the readable path: every row materialised, every logit written out. `fused=True` computes
        only the rows a later step reads, with SDPA and (at inference) the cached prompt keys/values. `rows`: the
        leading image rows returned (final-normed) from the last block; None: every image row.
        """
        plan, pml = self.plan, self.config.pml and self.training
        cache = self.prompt_cache if fused and uses_prompt_cache(self) else None
        cached = cache.lookup(self) if cache is not None else None
        filling = [] if cache is not None and cached is None else None
        out = BlockOutput(self.embed(x), None, None, {})  # no other reference: each block's input is freed in turn
        for step in plan.steps:
            prompts = [self._segment(kind, step, out, cached, fused) for kind in step.prompts]
            read = plan.rows_read(step, rows, pml, skip=CACHED_KINDS if cached else ()) if fused \
                else plan.every_row(step, pml)
            shared = cached[step.index]["shared"] if cached and "ap" not in step.prompts else None
            settings = BlockSettings(step.attention == "joint", step.prompts_query, self.config.da_scale,
                                     self.config.top_k, fused)
            out = ship_block(self.vit.blocks[step.index], out.image, prompts, read, settings, shared)
            if filling is not None:
                filling.append(cache_entry(prompts))
        if filling is not None:
            cache.store(self, filling)
        losses = {"pml": self._pml(out, rows)} if self.config.pml else {}
        return self.vit.norm(out.image[:, :rows]), losses

    def _segment(self, kind: str, step: BlockStep, prev: BlockOutput, cached: list | None,
                 fused: bool) -> PromptSegment:
        """Prompt `kind` entering `step`'s block: cached keys/values, the previous block's outputs, or fresh tokens
        (one row per sample in the readable path)."""
        if cached and kind in CACHED_KINDS:
            return PromptSegment(kind, None, cached[step.index][kind])
        if kind in step.carried:
            return PromptSegment(kind, prev.prompts[kind])
        fresh = PromptRows(self.inserted_prompt(kind, step, prev.image, prev.cls_logits))
        return PromptSegment(kind, fresh if fused else fresh.to_batch(prev.image.shape[0]))

    def _pml(self, last: BlockOutput, rows: int | None) -> torch.Tensor:
        """PML on the last block's outputs, before the final norm (spec §5); 0 in evaluation."""
        img = last.image
        if not self.training:
            return img.new_zeros(())
        outputs = [last.prompts[k] for k in self.plan.steps[-1].prompts]
        prompts = [p.per_sample(p.values, img.shape[0]) for p in outputs]
        targets = img[:, rows:] if rows is not None else gather_tokens(img, last.targets)
        return prompt_matching_loss(torch.cat(prompts, dim=1) if prompts else img[:, :0], targets)

    # ----- accounting -----
    def structure_record(self) -> dict[str, Any]:
        return dict(levels=list(self.levels), level_source=self.level_source)

    def extra_parameter_counts(self, counts: dict[str, int]) -> dict[str, int]:
        """`official_trainable`: the official count, which includes its unused (1, K, D) prompt position embedding.

        Only defined when every part is on (the official code has no switches).
        """
        if not all(getattr(self.config, s) for s in ABLATION_SWITCHES):
            return {}
        return {"official_trainable": counts["trainable"] + self.config.prompt_length * self.embed_dim}

    def extra_repr(self) -> str:
        c = self.config
        on = [s for s in ABLATION_SWITCHES if getattr(c, s)]
        return (f"{super().extra_repr()}, levels={self.levels} ({self.level_source}), K={c.prompt_length}, "
                f"ap_starts={self.ap_starts}, parts={'+'.join(on) or 'none'}, prompt_queries={c.prompt_queries!r}, "
                f"implementation={self.implementation!r}")
