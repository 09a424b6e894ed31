"""Affinity data for the paper's Fig. 1: per-task inter-layer affinities, adjacent-layer statistics, levels.

Affinities are computed exactly as a SHIP run computes them (frozen backbone, block features pooled by `pool`,
on the training split of the final protocol), or read from a folder of `<task>.npy` matrices.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from torch.utils.data import DataLoader

from ..backbones import create_backbone
from ..data import build_dataset, get_task
from ..engine.defaults import BENCHMARK_DEFAULTS
from ..hierarchy import (adjacent_affinity_stats, extract_block_features, inter_layer_affinity, level_of_block,
                         load_affinity, threshold_sweep)
from .tables import format_numbers


def benchmark_backbone(task: str, backbone=None, img_size: int | None = None) -> tuple:
    """(backbone spec, image size) of a task's benchmark unless given."""
    defaults = BENCHMARK_DEFAULTS[get_task(task).benchmark]
    return backbone or defaults["backbone"], img_size or defaults["img_size"]


def task_backbone(task: str, backbone=None, pretrained: bool = True):
    """The frozen backbone (eval mode) used for a task: `backbone`, else its benchmark's default."""
    spec, _ = benchmark_backbone(task, backbone)
    return create_backbone(spec, pretrained=pretrained).eval()


# A run's training split and preprocessing: the data SHIP computes its levels from.
AFFINITY_SPLIT, AFFINITY_PRESET, AFFINITY_BATCH = "train800val200", "ship", 128


def task_affinities(tasks, backbone=None, pool: str = "cls", max_images: int | None = None, data_root=None,
                    img_size: int | None = None) -> dict:
    """{task: (L, L) affinity} of the frozen pretrained backbone on each task's training split of a run.

    `backbone`/`img_size` default to the task's benchmark defaults (the mini ViT at 32 px for mini tasks).
    """
    models, out = {}, {}
    for task in tasks:
        spec, size = benchmark_backbone(task, backbone, img_size)
        dataset = build_dataset(task, AFFINITY_SPLIT, root=data_root, preset=AFFINITY_PRESET,
                                img_size=size)  # fails first if absent
        if (str(spec), size) not in models:
            models[(str(spec), size)] = create_backbone(spec, pretrained=True).eval()
        loader = DataLoader(dataset, batch_size=AFFINITY_BATCH, shuffle=False)
        feats = extract_block_features(models[(str(spec), size)], loader, pool=pool, max_images=max_images,
                                       progress=False)
        out[task] = inter_layer_affinity(feats)
    return out


def load_affinity_dir(folder: str | os.PathLike, tasks=None) -> dict:
    """{task: affinity} from `<folder>/<task>.npy` files (all of them, or the named tasks), validated."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"affinity folder not found: {folder} (expected <task>.npy files in it)")
    if tasks is None:
        tasks = sorted(p.stem for p in folder.glob("*.npy"))
        if not tasks:
            raise FileNotFoundError(f"no <task>.npy affinity files in {folder}")
    return {t: load_affinity(folder / f"{t}.npy") for t in tasks}


def adjacent_frame(affinities: dict) -> pd.DataFrame:
    """Long frame of A[i, i+1] per task: task, pair ("i→i+1"), block i, affinity."""
    stats = adjacent_affinity_stats(affinities)
    rows = [dict(task=t, block=i, pair=f"{i}→{i + 1}", affinity=float(v))
            for t, vals in zip(stats["tasks"], stats["per_task"]) for i, v in enumerate(vals)]
    return pd.DataFrame(rows)


def adjacent_stats_frame(affinities: dict, ddof: int = 0) -> pd.DataFrame:
    """Per adjacent pair: mean, variance and std over tasks of A[i, i+1] (paper Fig. 1(c))."""
    stats = adjacent_affinity_stats(affinities, ddof=ddof)
    n = len(stats["mean"])
    return pd.DataFrame(dict(block=range(n), pair=[f"{i}→{i + 1}" for i in range(n)], mean=stats["mean"],
                             var=stats["var"], std=stats["std"], tasks=len(stats["tasks"])))


def adjacent_stats_table(affinities: dict, decimals: int = 3) -> pd.DataFrame:
    """Fig. 1(c)'s numbers for reading: mean, std and variance over tasks (rows) of A[i, i+1] per adjacent pair
    (columns), every cell with `decimals` decimals: one number format for the whole table (pandas would pick one
    per column, mixing 0.93 with 9.49e-01). Three decimals by default: other CPUs compute affinities within
    ±1e-4 (`shiplib.repro`)."""
    frame = adjacent_stats_frame(affinities).set_index("pair")[["mean", "std", "var"]].T
    return format_numbers(frame, decimals)


def levels_frame(affinities: dict, thresholds) -> pd.DataFrame:
    """Semantic levels per task and threshold: level starts, number of levels, and each block's level."""
    rows = []
    for task, A in affinities.items():
        depth = np.asarray(A).shape[0]
        for alpha, starts in threshold_sweep(A, thresholds).items():
            rows.append(dict(task=task, threshold=alpha, levels=starts, n_levels=len(starts),
                             block_level=level_of_block(starts, depth)))
    return pd.DataFrame(rows)


def affinity_range(affinities: dict) -> tuple[float, float]:
    """Smallest and largest off-diagonal affinity over all tasks (to pick thresholds that split something)."""
    vals = [np.asarray(A)[~np.eye(np.asarray(A).shape[0], dtype=bool)] for A in affinities.values()]
    allv = np.concatenate(vals)
    return float(allv.min()), float(allv.max())
