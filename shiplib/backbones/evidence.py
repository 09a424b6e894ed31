"""Evidence that the mini backbone learned transferable features, recorded in its card.

Two measurements on mini-VTAB, each for the pretrained and for a randomly initialised backbone:
- linear probe: frozen final-normed CLS features -> standardised -> logistic regression whose C is chosen
  on train800 -> val200, refitted on train800val200 and scored on test;
- inter-layer affinity (docs/ship_computation.md §2) of the block-output CLS tokens on one task.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer

from ..data.folder import build_dataset
from ..data.tasks import list_tasks
from ..hierarchy import extract_block_features, inter_layer_affinity
from ..utils.io import atomic_write_json, sha256_file
from ..utils.progress import progress_bar
from .loading import create_backbone, load_state_dict_file
from .mini import checkpoint_dir, create_mini_vit, mini_card_path, mini_checkpoint_path
from .pretrain_mini import evaluate_classifier, fmnist_tensors

#: Inverse regularisation strengths tried on val200 (features are standardised, so one grid fits all tasks).
PROBE_C_GRID = (0.01, 0.1, 1.0, 10.0)


def _vit_img_size(vit: VisionTransformer) -> int:
    size = vit.patch_embed.img_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def split_tensors(task: str, split: str, img_size: int, root: str | os.PathLike | None = None,
                  preset: str = "ship") -> tuple[torch.Tensor, np.ndarray]:
    """One split of a folder-layout task as `(images (N, 3, S, S) float, labels (N,) int64)`."""
    ds = build_dataset(task, split, root=root, preset=preset, img_size=img_size)
    xs = [ds[i][0] for i in progress_bar(range(len(ds)), desc=f"{task}/{split}", unit="img", leave=False)]
    return torch.stack(xs), np.asarray(ds.targets, dtype=np.int64)


@torch.no_grad()
def pooled_features(vit: VisionTransformer, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """The frozen ViT's pre-logits features (final-normed CLS token for `global_pool="token"`), (N, D)."""
    was_training = vit.training
    vit.eval()
    try:
        out = [vit.forward_head(vit.forward_features(x), pre_logits=True) for x in images.split(batch_size)]
    finally:
        vit.train(was_training)
    return torch.cat(out).float().numpy()


def linear_probe(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                 test: tuple[np.ndarray, np.ndarray], c_grid: Sequence[float] = PROBE_C_GRID,
                 seed: int = 0) -> dict:
    """Pick C on (train, val), refit on train+val, score test; accuracies in %."""
    # deferred: scikit-learn takes about a second to import and only the probes need it
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def fit(x, y, c):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000, random_state=seed)).fit(x, y)

    val_acc = {c: 100.0 * fit(*train, c).score(*val) for c in c_grid}
    best = max(c_grid, key=lambda c: (val_acc[c], -c))  # ties go to the stronger regularisation
    x_all, y_all = np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]])
    test_acc = 100.0 * fit(x_all, y_all, best).score(*test)
    return dict(test_acc=round(test_acc, 2), val_acc=round(val_acc[best], 2), C=best)


def probe_task(backbones: Mapping[str, VisionTransformer], task: str, root: str | os.PathLike | None = None,
               seed: int = 0) -> dict:
    """Linear-probe test accuracy of every backbone on one task (all backbones share one input size)."""
    sizes = {_vit_img_size(v) for v in backbones.values()}
    if len(sizes) != 1:
        raise ValueError(f"backbones take different image sizes {sorted(sizes)}; probe them separately")
    img_size = sizes.pop()
    data = {s: split_tensors(task, s, img_size, root) for s in ("train800", "val200", "test")}
    row = {}
    for name, vit in backbones.items():
        feats = {s: (pooled_features(vit, x), y) for s, (x, y) in data.items()}
        row[name] = linear_probe(feats["train800"], feats["val200"], feats["test"], seed=seed)
    row["test_images"] = int(len(data["test"][1]))
    return row


def layer_affinity(vit: VisionTransformer, task: str, split: str = "train800val200",
                   root: str | os.PathLike | None = None) -> np.ndarray:
    """Spec §2 affinity (per-image cosine of block-output CLS tokens, averaged) on one task split, (L, L)."""
    x, _ = split_tensors(task, split, _vit_img_size(vit), root)
    return inter_layer_affinity(extract_block_features(vit, x, pool="cls", batch_size=256, progress=False))


#: The seed of the random-init baseline the evidence records.
RANDOM_INIT_SEED = 0


def compute_evidence(pretrained: VisionTransformer, random_init: VisionTransformer,
                     tasks: Sequence[str] | None = None, affinity_task: str | None = None,
                     root: str | os.PathLike | None = None, seed: int = 0) -> dict:
    """Linear probes on `tasks` (default: every registered mini-VTAB task) and the affinity on one task.

    `random_init` is described as drawn after `torch.manual_seed(RANDOM_INIT_SEED)`, as
    `pretrained_and_random_mini` draws it."""
    import sklearn  # deferred (see linear_probe); recorded with the evidence

    tasks = list(tasks) if tasks is not None else list_tasks("mini")
    if not tasks:
        raise ValueError("no tasks to probe: mini-VTAB has no registered tasks (shiplib/data/mini_vtab.py) "
                         "and none were given")
    affinity_task = affinity_task or tasks[0]
    backbones = {"pretrained": pretrained, "random_init": random_init}
    rows = {t: probe_task(backbones, t, root, seed) for t in progress_bar(tasks, desc="linear probes", unit="task")}
    mean = {k: round(float(np.mean([rows[t][k]["test_acc"] for t in tasks])), 2) for k in backbones}
    # float64 before rounding, so the JSON holds 0.7835 rather than float32's 0.7835000157
    affinity = {k: layer_affinity(v, affinity_task, root=root).astype(np.float64) for k, v in backbones.items()}
    return dict(
        protocol=dict(
            features="frozen backbone, final LayerNorm applied, CLS token (pre-logits), eval mode",
            preprocessing="ship preset (bicubic resize to the backbone's input size, mean=std=0.5)",
            probe="StandardScaler + sklearn LogisticRegression (lbfgs, max_iter=3000); C chosen on "
                  f"train800 -> val200 from {list(PROBE_C_GRID)}, refitted on train800val200, scored on test",
            random_init=f"same architecture, timm's default init after torch.manual_seed({RANDOM_INIT_SEED})",
            affinity="per-image cosine of block-output CLS tokens (before the final norm), averaged over the "
                     "train800val200 images (shiplib.hierarchy.inter_layer_affinity)",
        ),
        linear_probe=dict(tasks=rows, mean_test_acc=mean),
        affinity=dict(task=affinity_task, split="train800val200",
                      matrices={k: np.round(a, 4).tolist() for k, a in affinity.items()},
                      adjacent={k: np.round(np.diagonal(a, 1), 4).tolist() for k, a in affinity.items()}),
        computed_with=dict(torch=torch.__version__, sklearn=sklearn.__version__, python=platform.python_version(),
                           date=_dt.date.today().isoformat()),
    )


def add_evidence_to_card(evidence: dict, card_path: str | os.PathLike | None = None,
                         checkpoint_path: str | os.PathLike | None = None, name: str = "mini") -> dict:
    """Store `evidence` under the card's `evidence` key (atomic rewrite); returns the new card.

    The card's sha256 must still match the checkpoint, so the evidence is tied to these exact weights. Paths not
    given: the committed mini backbone `name` (`shiplib.backbones.mini.MINI_CHECKPOINTS`).
    """
    card_path = Path(card_path or mini_card_path(name=name))
    if not card_path.is_file():
        raise FileNotFoundError(f"card {card_path} does not exist: pretrain the backbone first "
                                "(notebooks/pretrain_mini.ipynb)")
    card = json.loads(card_path.read_text())
    checkpoint_path = Path(checkpoint_path
                           or card_path.with_name(card.get("file", mini_checkpoint_path(name=name).name)))
    digest = sha256_file(checkpoint_path)
    if digest != card.get("sha256"):
        raise ValueError(f"{checkpoint_path} has sha256 {digest} but the card {card_path} records "
                         f"{card.get('sha256')}: the evidence would describe other weights. Re-run the pretraining "
                         "so checkpoint and card agree.")
    card["evidence"] = evidence
    atomic_write_json(card_path, card)
    return card


def pretrained_and_random_mini(seed: int = RANDOM_INIT_SEED,
                               name: str = "mini") -> tuple[VisionTransformer, VisionTransformer]:
    """The committed mini backbone `name` and a same-architecture random one (seeded), both headless."""
    torch.manual_seed(seed)
    return create_backbone(name), create_backbone(name, pretrained=False)


def load_card(card_path: str | os.PathLike | None = None, name: str = "mini") -> dict:
    """The card of the mini backbone `name` (JSON next to the checkpoint), or the one at `card_path`."""
    card_path = Path(card_path or mini_card_path(name=name))
    if not card_path.is_file():
        raise FileNotFoundError(f"card {card_path} does not exist: pretrain the backbone first "
                                "(notebooks/pretrain_mini.ipynb with train=True)")
    return json.loads(card_path.read_text())


def verify_checkpoint(card: dict, checkpoint_path: str | os.PathLike | None = None) -> str:
    """The checkpoint's sha256 when it equals the card's; ValueError otherwise."""
    checkpoint_path = Path(checkpoint_path or checkpoint_dir() / card["file"])
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint_path} does not exist")
    digest = sha256_file(checkpoint_path)
    if digest != card.get("sha256"):
        raise ValueError(f"{checkpoint_path} has sha256 {digest}, the card says {card.get('sha256')}: "
                         "the file was changed or truncated (git lfs?); re-run the pretraining")
    return digest


def checkpoint_test_accuracy(card: dict, checkpoint_path: str | os.PathLike | None = None,
                             every: int = 1) -> float:
    """Top-1 % of the checkpoint (with its Fashion-MNIST head) on Fashion-MNIST test, every `every`-th image."""
    model = create_mini_vit(num_classes=card["architecture"]["num_classes"])
    model.load_state_dict(load_state_dict_file(checkpoint_path or checkpoint_dir() / card["file"]))
    x, y = fmnist_tensors("test", size=card["architecture"]["img_size"])
    return evaluate_classifier(model, x[::every], y[::every])


def probe_table(card: dict):
    """The card's linear-probe evidence as a DataFrame (one row per task, plus the mean)."""
    import pandas as pd  # deferred: only this table needs pandas

    ev = card.get("evidence")
    if not ev:
        raise KeyError("the card has no `evidence` yet: run compute_evidence + add_evidence_to_card")
    rows = [dict(task=t, pretrained=r["pretrained"]["test_acc"], random_init=r["random_init"]["test_acc"],
                 test_images=r["test_images"]) for t, r in ev["linear_probe"]["tasks"].items()]
    df = pd.DataFrame(rows)
    df["gain"] = (df["pretrained"] - df["random_init"]).round(2)
    mean = dict(task="mean", pretrained=round(df["pretrained"].mean(), 2),
                random_init=round(df["random_init"].mean(), 2), test_images=int(df["test_images"].sum()))
    mean["gain"] = round(mean["pretrained"] - mean["random_init"], 2)
    return pd.concat([df, pd.DataFrame([mean])], ignore_index=True).set_index("task")
