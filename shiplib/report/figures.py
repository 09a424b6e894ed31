"""Figures (seaborn/matplotlib). Each function takes data (frames/arrays from this package) and returns a Figure."""
from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .affinity import adjacent_frame, adjacent_stats_frame, levels_frame
from .histories import HISTORY_LABELS


def _grid(n: int, ncols: int, size=(3.6, 3.2)):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def save_figure(fig, path: str | os.PathLike, dpi: int = 150) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


# ----- affinity (Fig. 1) -----
def plot_affinity_heatmaps(affinities: dict, ncols: int = 3, vmin: float | None = None, annot: bool = False):
    """One heat map per task of the inter-layer affinity A[i, j] (shared colour scale)."""
    if not affinities:
        raise ValueError("no affinity matrices to plot")
    lo = vmin if vmin is not None else min(float(np.min(A)) for A in affinities.values())
    fig, axes = _grid(len(affinities), ncols)
    for ax, (task, A) in zip(axes, affinities.items()):
        sns.heatmap(np.asarray(A), vmin=lo, vmax=1.0, cmap="viridis", square=True, annot=annot, fmt=".2f",
                    cbar_kws=dict(shrink=0.8), ax=ax)
        ax.set(title=task, xlabel="block j", ylabel="block i")
    fig.suptitle("inter-layer affinity (mean cosine of block outputs over images)")
    fig.tight_layout()
    return fig


def plot_adjacent_affinity(affinities: dict):
    """Adjacent-layer affinity A[i, i+1]: per task and mean ± std (left), variance over tasks (right)."""
    per_task, stats = adjacent_frame(affinities), adjacent_stats_frame(affinities)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8))
    sns.lineplot(data=per_task, x="block", y="affinity", hue="task", alpha=0.45, linewidth=1, ax=ax1)
    ax1.plot(stats["block"], stats["mean"], color="black", linewidth=2.2, label="mean over tasks")
    ax1.fill_between(stats["block"], stats["mean"] - stats["std"], stats["mean"] + stats["std"], color="black",
                     alpha=0.12, label="± std")
    ax1.set(xticks=stats["block"], xticklabels=stats["pair"], xlabel="adjacent blocks",
            ylabel="A[i, i+1]", title=f"adjacent-layer affinity ({len(affinities)} tasks)")
    ax1.legend(fontsize=7, ncol=2)
    sns.barplot(data=stats, x="pair", y="var", color="tab:blue", ax=ax2)
    ax2.set(xlabel="adjacent blocks", ylabel="variance over tasks", title="variance of adjacent-layer affinity")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    return fig


def plot_levels(affinities: dict, thresholds, ncols: int = 3):
    """Semantic levels at several thresholds: one panel per threshold, rows = tasks, cells = each block's level."""
    frame = levels_frame(affinities, thresholds)
    alphas = list(dict.fromkeys(frame["threshold"]))
    fig, axes = _grid(len(alphas), ncols=ncols, size=(3.6, 0.32 * len(affinities) + 1.2))
    top = int(frame["n_levels"].max())
    cmap = sns.color_palette("tab20", n_colors=max(top, 2))
    for ax, alpha in zip(axes, alphas):
        sub = frame[frame["threshold"] == alpha].set_index("task")
        grid = np.array(sub["block_level"].tolist())
        sns.heatmap(grid, cmap=cmap, vmin=-0.5, vmax=len(cmap) - 0.5, annot=grid, annot_kws=dict(fontsize=7),
                    cbar=False, linewidths=0.5,
                    linecolor="white", yticklabels=[f"{t} ({n})" for t, n in zip(sub.index, sub["n_levels"])], ax=ax)
        ax.set(title=f"α = {alpha:g}", xlabel="block (number = level)", ylabel="")
    fig.suptitle("semantic levels (greedy chain); (n) = number of levels")
    fig.tight_layout()
    return fig


FEATURE_MAP_TITLES = {"pca": "patch tokens: first 3 principal components as RGB (fitted per block)",
                      "norm": "patch-token L2 norm", "cos_next": "cosine of each patch token with the next block's"}


def plot_feature_maps(maps: np.ndarray, raw_images=None, layers=None, kind: str = "pca", labels=None,
                      title: str | None = None):
    """Rows = images, columns = (input,) layers; `maps` and `layers` as given to `layer_feature_maps`."""
    n_img, n_layers = maps.shape[:2]
    layers = list(layers) if layers is not None else list(range(n_layers + (kind == "cos_next")))
    col_names = ([f"{a}→{b}" for a, b in zip(layers, layers[1:])] if kind == "cos_next"
                 else [f"block {i}" for i in layers])
    extra = 1 if raw_images is not None else 0
    fig, axes = plt.subplots(n_img, n_layers + extra, figsize=(1.1 * (n_layers + extra), 1.2 * n_img),
                             squeeze=False)
    lo, hi = (float(np.min(maps)), float(np.max(maps))) if kind != "pca" else (None, None)
    for r in range(n_img):
        if extra:
            axes[r, 0].imshow(raw_images[r])
            axes[r, 0].set_title("input" + (f" (y={labels[r]})" if labels is not None else ""), fontsize=7)
        for c in range(n_layers):
            ax = axes[r, c + extra]
            ax.imshow(maps[r, c], cmap=None if kind == "pca" else "magma", vmin=lo, vmax=hi)
            if r == 0:
                ax.set_title(col_names[c], fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{title}: {FEATURE_MAP_TITLES[kind]}" if title else FEATURE_MAP_TITLES[kind], fontsize=9)
    fig.tight_layout()
    return fig


# ----- training curves -----
def plot_run_curves(result: dict):
    """One run: training losses (left) and training/evaluation accuracy (right) per epoch."""
    hist = pd.DataFrame(result["history"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    loss_cols = [c for c in ("loss", "ce", "pml", "eval_loss") if c in hist and hist[c].notna().any()]
    long = hist.melt(id_vars="epoch", value_vars=loss_cols, var_name="curve").dropna()
    sns.lineplot(data=long, x="epoch", y="value", hue="curve", marker=".", ax=ax1)
    ax1.set(ylabel="loss", title="losses (training: per-epoch mean; eval: CE)")
    acc = hist.melt(id_vars="epoch", value_vars=[c for c in ("train_acc", "eval_acc") if c in hist],
                    var_name="curve").dropna()
    sns.lineplot(data=acc, x="epoch", y="value", hue="curve", marker="o", ax=ax2)
    ax2.axhline(result["acc_last"], color="grey", linestyle="--", linewidth=1,
                label=f"acc_last {result['acc_last']:.2f}")
    ax2.scatter([result["max_epoch"]], [result["acc_max_over_epochs"]], color="red", zorder=5,
                label=f"max over epochs {result['acc_max_over_epochs']:.2f} (epoch {result['max_epoch']})")
    ax2.set(ylabel="accuracy (%)", title=f"accuracy (eval split: {result['eval_split']})")
    ax2.legend(fontsize=7)
    fig.suptitle(f"{result['task']} · {result['method']}{'+' + result['tag'] if result.get('tag') else ''} · "
                 f"seed {result['seed']}")
    fig.tight_layout()
    return fig


def plot_loss_curves(history: pd.DataFrame, columns=("ce", "loss"), errorbar="sd"):
    """Training curves per run (mean over seeds, band = `errorbar`), one panel per column (paper Fig. 3)."""
    if history.empty:
        raise ValueError("no histories to plot: no result files matched (check results_dir, task and runs)")
    columns = [c for c in columns if history[c].notna().any()]
    fig, axes = plt.subplots(1, len(columns), figsize=(5.5 * len(columns), 3.8), squeeze=False)
    seeds = history.groupby("run")["seed"].nunique()
    labels = {r: f"{r} ({n} seed{'s' if n > 1 else ''})" for r, n in seeds.items()}
    data = history.assign(run=history["run"].map(labels))
    for ax, col in zip(axes[0], columns):
        sns.lineplot(data=data, x="epoch", y=col, hue="run", errorbar=errorbar, ax=ax)
        ax.set(ylabel=HISTORY_LABELS.get(col, col), title=HISTORY_LABELS.get(col, col))
    tasks = ", ".join(dict.fromkeys(history["task"]))
    fig.suptitle(f"{tasks}: training curves (line: mean over seeds; band: {errorbar})")
    fig.tight_layout()
    return fig


# ----- results and ablations -----
def plot_task_accuracies(summary: pd.DataFrame, title: str = ""):
    """Bar chart of per-task mean accuracy per run (error bars: std over seeds), from `seed_summary`."""
    if summary.empty:
        raise ValueError("no results to plot")
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * summary["task"].nunique() * summary["run"].nunique() ** 0.5), 4))
    sns.barplot(data=summary, x="task", y="mean", hue="run", ax=ax)
    runs, tasks = list(dict.fromkeys(summary["run"])), list(dict.fromkeys(summary["task"]))
    for container, run in zip(ax.containers, runs):
        # a run without results on some tasks has fewer bars: they follow the task order of the others
        sub = summary[summary["run"] == run].set_index("task").reindex(tasks).dropna(subset=["mean"])
        xs = [bar.get_x() + bar.get_width() / 2 for bar in container]
        if len(xs) != len(sub):
            continue
        ax.errorbar(xs, sub["mean"], yerr=sub["std"].fillna(0), fmt="none", ecolor="black", capsize=2, lw=0.8)
    ax.set(ylabel="accuracy (%)", xlabel="", title=title)
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    return fig


def plot_ablation(summary: pd.DataFrame, factor: str):
    """Components: Δ accuracy vs the reference per task; sweeps: accuracy vs the factor's value per task
    (dashed: the reference run with its per-task default)."""
    from .ablations import REFERENCE

    sub = summary[summary["factor"] == factor]
    if sub.empty:
        raise ValueError(f"no results for ablation factor {factor!r}")
    ref = summary[summary["variant"] == REFERENCE].set_index("task")["mean"]
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    if factor == "components":
        sns.barplot(data=sub, x="variant", y="delta", hue="task", ax=ax)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set(ylabel="Δ accuracy vs SHIP (points)", xlabel="", title="component ablation")
    else:
        sub = sub.astype({"value": float})
        sns.lineplot(data=sub, x="value", y="mean", hue="task", marker="o", ax=ax)
        for color, task in zip(sns.color_palette(), list(dict.fromkeys(sub["task"]))):
            if task in ref:
                ax.axhline(ref[task], color=color, linestyle="--", linewidth=0.8)
        ax.set(xlabel=factor, ylabel="accuracy (%)", title=f"{factor} (dashed: SHIP with its default)")
    fig.tight_layout()
    return fig


# ----- efficiency -----
def plot_efficiency(table: pd.DataFrame, title: str = ""):
    """Per method (rows of `shiplib.bench.efficiency_table`): images/s in eval and training, peak memory of a
    training step, and training FLOPs per image against trainable parameters."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    speed = table.melt(id_vars="method", value_vars=["eval_images_per_s", "train_images_per_s"],
                       var_name="mode", value_name="images / s")
    speed["mode"] = speed["mode"].str.split("_").str[0]
    sns.barplot(data=speed, y="method", x="images / s", hue="mode", ax=axes[0])
    sns.barplot(data=table, y="method", x="train_mem_mb", color="C2", ax=axes[1])
    axes[1].set_xlabel("peak memory of a training step (MB)")
    sns.scatterplot(data=table, x="trainable_params", y="train_gflops_per_image", hue="method", s=80, ax=axes[2])
    axes[2].set_xscale("log")
    axes[2].set_xlabel("trainable parameters (with head)")
    axes[2].set_ylabel("GFLOPs per image, train step")
    axes[2].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
