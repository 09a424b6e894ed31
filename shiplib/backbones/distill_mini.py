"""Pretrain the mini backbone by distilling EfficientNet-Lite0 on offline views, resumable epoch by epoch.

Three targets, each with its own linear head on the student's final-normed tokens (the heads are dropped at
export; only the ViT is kept):
- `pooled`: the CLS token predicts the teacher's pooled ImageNet features (cosine, standardised targets);
- `spatial`: every patch token predicts the teacher's stride-16 feature at its place (cosine per token);
- `pixel`: the CLS token predicts the view's 4x4 colour thumbnail (MSE), which keeps the colour and position
  information that the teacher's pooling and ImageNet invariances discard.
"""
from __future__ import annotations

import math
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.io import atomic_save_safetensors, atomic_write_json, sha256_file
from ..utils.seed import derived_seed, seed_everything
from .distill_cache import CacheSpec, build_cache, load_cache
from .mini import MINI_ARCH, create_mini_vit
from .pretrain_images import PHOTOS
from .recipe_loop import RecipeModules, RecipeTraining, StepWarmupCosine, run_epochs, train_steps
from .teacher import TEACHER_SOURCE

DISTILLED_NAME = "vit_mini_distill"
#: The backbone name this recipe's checkpoint is loaded by.
BACKBONE_NAME = "mini_distill"
THUMBNAIL = 4


@dataclass
class DistillConfig:
    """The recipe (defaults: the committed checkpoint) and its knobs."""
    views: int = 49152
    view_seed: int = 0
    photo: float = 0.5
    fmnist: float = 0.25
    fractal: float = 0.25
    epochs: int = 12
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr: float = 1e-5
    w_pooled: float = 1.0
    w_spatial: float = 1.0
    w_pixel: float = 1.0
    drop_path_rate: float = 0.0
    seed: int = 0
    threads: int | None = None

    def __post_init__(self):
        if (min(self.w_pooled, self.w_spatial, self.w_pixel) < 0
                or not (self.w_pooled or self.w_spatial or self.w_pixel)):
            raise ValueError("loss weights w_pooled, w_spatial, w_pixel must be >= 0 and not all 0, got "
                             f"{self.w_pooled}, {self.w_spatial}, {self.w_pixel}")
        if self.epochs < 1 or self.batch_size < 1 or self.views < self.batch_size:
            raise ValueError(f"need epochs >= 1 and views >= batch_size >= 1; got epochs={self.epochs}, "
                             f"views={self.views}, batch_size={self.batch_size}")

    def cache_spec(self) -> CacheSpec:
        return CacheSpec(views=self.views, view_seed=self.view_seed, photo=self.photo, fmnist=self.fmnist,
                         fractal=self.fractal)

    def recipe(self) -> dict:
        """Everything but `threads` (which changes speed, not the weights)."""
        return {k: v for k, v in asdict(self).items() if k != "threads"}


class DistillHeads(nn.Module):
    """Linear read-outs from the student's tokens to the three targets."""

    def __init__(self, dim: int, pooled_dim: int, spatial_dim: int):
        super().__init__()
        self.pooled = nn.Linear(dim, pooled_dim)
        self.spatial = nn.Linear(dim, spatial_dim)
        self.pixel = nn.Linear(dim, 3 * THUMBNAIL * THUMBNAIL)


def student_inputs(views: torch.Tensor) -> torch.Tensor:
    """(N, 32, 32, 3) uint8 -> (N, 3, 32, 32) in [-1, 1] (the `ship` preset: mean = std = 0.5)."""
    return views.permute(0, 3, 1, 2).float().div(255.0).sub(0.5).div(0.5)


def _standardise(x: torch.Tensor, dim) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.float()
    return x.mean(dim, keepdim=True), x.std(dim, keepdim=True).clamp_min(1e-4)


def distill_losses(vit, heads: DistillHeads, x: torch.Tensor, pooled: torch.Tensor, spatial: torch.Tensor,
                   cfg: DistillConfig) -> dict[str, torch.Tensor]:
    """The three losses for one batch (targets already standardised; spatial as (B, H*W, C))."""
    tokens = vit.forward_features(x)
    cls, patches = tokens[:, 0], tokens[:, vit.num_prefix_tokens:]
    out = {}
    if cfg.w_pooled:
        out["pooled"] = 1 - F.cosine_similarity(heads.pooled(cls), pooled, dim=-1).mean()
    if cfg.w_spatial:
        out["spatial"] = 1 - F.cosine_similarity(heads.spatial(patches), spatial, dim=-1).mean()
    if cfg.w_pixel:
        thumb = F.adaptive_avg_pool2d(x, THUMBNAIL).flatten(1)
        out["pixel"] = F.mse_loss(heads.pixel(cls), thumb)
    return out


def distill_mini(cfg: DistillConfig | None = None, work_dir: str | Path = "runs/distill/main",
                 cache_dir: str | Path = "runs/distill/cache",
                 stop_after: int | None = None) -> tuple[nn.Module, list[dict], float]:
    """Train (or resume) and return `(student ViT, history, seconds spent)`; export with `export_distilled`.

    The teacher's targets are shared by every recipe with the same views (`cache_dir`).
    `stop_after=n` ends after epoch n (resume by calling again with the same config).
    """
    cfg = cfg or DistillConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cache = load_cache(build_cache(cache_dir, cfg.cache_spec()))
    n = len(cache["student"])
    pooled_mu, pooled_sd = _standardise(cache["pooled"], 0)
    spatial = cache["spatial"].flatten(2).transpose(1, 2)  # (N, H*W, C), float16
    spatial_mu, spatial_sd = _standardise(spatial[: min(n, 4096)].reshape(-1, spatial.shape[-1]), 0)

    seed_everything(cfg.seed)
    vit = create_mini_vit(num_classes=0, drop_path_rate=cfg.drop_path_rate)
    grid = vit.patch_embed.grid_size
    if spatial.shape[1] != grid[0] * grid[1]:
        raise ValueError(f"the teacher's map has {spatial.shape[1]} places but the student {grid[0]}x{grid[1]} "
                         "patches: render the teacher's views at 16x the student's grid (CacheSpec.teacher_size)")
    heads = DistillHeads(vit.embed_dim, cache["pooled"].shape[1], spatial.shape[-1])
    modules = RecipeModules(dict(vit=vit, heads=heads))
    opt = modules.optimizer(cfg.lr, cfg.weight_decay)
    training = RecipeTraining(modules, opt, StepWarmupCosine(cfg.lr, cfg.min_lr, cfg.epochs, cfg.warmup_epochs))

    def batch_loss(idx, gen):
        x = student_inputs(cache["student"][idx])
        sp = (spatial[idx].float() - spatial_mu) / spatial_sd
        flip = torch.rand(len(idx), generator=gen) < 0.5  # the teacher's map is flipped with the view
        x[flip] = x[flip].flip(-1)
        side = int(math.isqrt(sp.shape[1]))
        sp = sp.view(len(idx), side, side, -1)
        sp[flip] = sp[flip].flip(2)
        losses = distill_losses(vit, heads, x, (cache["pooled"][idx].float() - pooled_mu) / pooled_sd,
                                sp.flatten(1, 2), cfg)
        return sum(getattr(cfg, f"w_{k}") * v for k, v in losses.items()), {k: v.item() for k, v in losses.items()}

    def one_epoch(epoch: int) -> dict:
        gen = torch.Generator().manual_seed(derived_seed(cfg.seed, epoch, 3))
        torch.manual_seed(derived_seed(cfg.seed, epoch, 1))  # drop path draws from the global RNG
        vit.train()
        order = torch.randperm(n, generator=gen)
        sums = train_steps(training, epoch, order, cfg.batch_size, lambda idx: batch_loss(idx, gen),
                           desc=f"epoch {epoch + 1}/{cfg.epochs}")
        return {**{f"loss_{k}": v / (n // cfg.batch_size) for k, v in sums.items()}, "lr": opt.param_groups[0]["lr"]}

    history, elapsed = run_epochs(work_dir, training, cfg.recipe(), one_epoch, stop_after,
                                  elapsed=cache["teacher_seconds"])
    return vit, history, elapsed


def export_distilled(vit: nn.Module, cfg: DistillConfig, history: list[dict], elapsed: float,
                     checkpoint_path: str | Path, card_path: str | Path) -> dict:
    """Write the ViT's safetensors (no head) and its JSON card; an unfinished run says so in the card."""
    if not history:
        raise ValueError("no finished epoch to export")
    checkpoint_path, card_path = Path(checkpoint_path), Path(card_path)
    atomic_save_safetensors(vit.state_dict(), checkpoint_path, metadata={"name": DISTILLED_NAME})
    spec = cfg.cache_spec()
    card = dict(
        name=DISTILLED_NAME,
        description="12-block narrow ViT (patch 4, 32 px) distilled from ImageNet EfficientNet-Lite0 on offline "
                    "photo crops, colourised Fashion-MNIST and fractals, with a colour-thumbnail target; the "
                    "offline default backbone for mini-VTAB. Not the paper's ViT-B/16 in21k.",
        architecture=dict(timm_class="timm.models.vision_transformer.VisionTransformer", **MINI_ARCH, num_classes=0),
        parameters=int(sum(p.numel() for p in vit.parameters())),
        teacher=dict(model="timm tf_efficientnet_lite0", source=TEACHER_SOURCE, input_size=spec.teacher_size,
                     targets="pooled pre-logits features (1280) and the stride-16 stage map (8x8 for 128 px)"),
        data=dict(
            views=spec.views, view_seed=spec.view_seed, shares=spec.weights(),
            sources=dict(
                photo={k: dict(loader=v[0], licence=v[1]) for k, v in PHOTOS.items()},
                fmnist="Fashion-MNIST train split (Debian package dataset-fashion-mnist, MIT), one item at a random "
                       "scale and position, foreground and background in random colours",
                fractal="iterated-function-system fractals (2-4 random contractive affine maps), generated"),
            excluded="no mini-VTAB image: MNIST and the skimage photographs mini-VTAB crops (brick, grass, gravel, "
                     "hubble_deep_field, coins, coffee, chelsea, immunohistochemistry) are not used",
            preprocessing=f"views rendered at {spec.teacher_size} px for the teacher, box-averaged to 32 px for the "
                          "student, mean = std = 0.5; horizontal flips (the teacher's map flipped alike)"),
        training=dict(asdict(cfg), optimizer="AdamW", schedule="per-step warm-up + cosine",
                      losses="w_pooled * (1 - cos) + w_spatial * (1 - cos per token) + w_pixel * MSE(4x4 thumbnail)"),
        epochs=cfg.epochs, epochs_completed=len(history), complete=len(history) == cfg.epochs, seed=cfg.seed,
        history=history, wall_time_minutes=round(elapsed / 60, 1),
        machine=dict(cpu_threads=torch.get_num_threads(), torch=torch.__version__, python=platform.python_version()),
        file=checkpoint_path.name, sha256=sha256_file(checkpoint_path),
        licence="weights: same licence as shiplib; teacher Apache-2.0; data licences per source above",
    )
    atomic_write_json(card_path, card)
    return card


def distill_and_export(cfg: DistillConfig | None = None, work_dir: str | Path = "runs/distill/main",
                       stop_after: int | None = None, evidence: bool = True,
                       cache_dir: str | Path = "runs/distill/cache") -> dict:
    """Train or resume, export weights and card as `mini_distill`, then add the transfer evidence to the card."""
    from .evidence import add_evidence_to_card, compute_evidence, pretrained_and_random_mini
    from .mini import mini_card_path, mini_checkpoint_path

    cfg = cfg or DistillConfig()
    vit, history, elapsed = distill_mini(cfg, work_dir=work_dir, cache_dir=cache_dir, stop_after=stop_after)
    ckpt, card_path = mini_checkpoint_path(name=BACKBONE_NAME), mini_card_path(name=BACKBONE_NAME)
    card = export_distilled(vit, cfg, history, elapsed, ckpt, card_path)
    if evidence:  # from the exported file, as every card's evidence is computed (and checked by the tests)
        card = add_evidence_to_card(compute_evidence(*pretrained_and_random_mini(seed=0, name=BACKBONE_NAME)),
                                    card_path, ckpt)
    return card


if __name__ == "__main__":  # pragma: no cover - `python -m shiplib.backbones.distill_mini`
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=DistillConfig.epochs)
    ap.add_argument("--views", type=int, default=DistillConfig.views)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work-dir", default="runs/distill/main")
    ap.add_argument("--stop-after", type=int, default=None, help="end after epoch N (run again to resume)")
    ap.add_argument("--no-evidence", action="store_true", help="skip the linear probes and affinities")
    a = ap.parse_args()
    out = distill_and_export(DistillConfig(epochs=a.epochs, views=a.views, threads=a.threads), a.work_dir,
                             a.stop_after, evidence=not a.no_evidence)
    print(f"{out['name']}: {out['epochs_completed']}/{out['epochs']} epochs, sha256 {out['sha256'][:12]}")
