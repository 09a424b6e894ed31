"""Figures (seaborn/matplotlib). Each function takes data (frames/arrays from this package) and returns a Figure.

Every figure fits a notebook page (at most `PAGE_WIDTH` inches wide: about 1000 px at JupyterLab's 100 dpi), uses
constrained layout, keeps legends off the data, and colours methods with the one map `METHOD_COLORS`.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .ablations import REFERENCE
from .affinity import adjacent_frame, adjacent_stats_frame, levels_frame
from .histories import smoothed_steps
from .tables import METHODS, run_label, task_order

#: Widest figure, in inches (JupyterLab shows figures at 100 dpi: ~1000 px, a page's width).
PAGE_WIDTH = 10.0

#: One colour per method, used by every figure that colours methods (Okabe-Ito based: distinct hues and lightness,
#: readable with the common colour-vision deficiencies). "timm" is the plain backbone in efficiency figures.
METHOD_COLORS = {
    "linear": "#7f7f7f",       # grey
    "full": "#e69f00",         # orange
    "vpt_shallow": "#56b4e9",  # sky blue
    "vpt_deep": "#0047ab",     # dark blue
    "spt": "#009e73",          # bluish green
    "sep": "#cc79a7",          # reddish purple
    "ship": "#d55e00",         # vermillion
    "timm": "#222222",         # near black
}
#: Colours for runs that are not a method of METHOD_COLORS (e.g. ablation variants "ship+no-sip"), in order.
EXTRA_COLORS = ("#8c510a", "#f0e442", "#000000", "#9ad0f5", "#b2df8a", "#fb9a99", "#6a3d9a", "#b15928",
                "#a6cee3", "#33a02c", "#fdbf6f", "#cab2d6")
REFERENCE_SUFFIX = " (reference)"


def _lighten(color, amount: float = 0.45) -> str:
    """`color` mixed with white (amount 0: unchanged, 1: white)."""
    rgb = np.array(mcolors.to_rgb(color))
    return mcolors.to_hex(rgb + (1.0 - rgb) * amount)


def method_color(name: str) -> str | None:
    """The colour of a method (`METHOD_COLORS`), of "<method> (reference)" (the method's colour, lighter), or None."""
    if name in METHOD_COLORS:
        return METHOD_COLORS[name]
    if name.endswith(REFERENCE_SUFFIX) and name[:-len(REFERENCE_SUFFIX)] in METHOD_COLORS:
        return _lighten(METHOD_COLORS[name[:-len(REFERENCE_SUFFIX)]])
    return None


def method_palette(names) -> dict:
    """{name: colour} for runs/methods: `method_color` where known, else the next of EXTRA_COLORS."""
    out, extra = {}, 0
    for name in dict.fromkeys(names):
        color = method_color(name)
        if color is None:
            color, extra = EXTRA_COLORS[extra % len(EXTRA_COLORS)], extra + 1
        out[name] = color
    return out


def method_order(names) -> list:
    """Names in METHODS order (by their base method: "ship+tag" and "ship (reference)" follow "ship"), stably."""
    def key(name):
        base = name.split("+")[0].removesuffix(REFERENCE_SUFFIX)
        return METHODS.index(base) if base in METHODS else len(METHODS)

    return sorted(dict.fromkeys(names), key=key)


def _figure(nrows: int = 1, ncols: int = 1, figsize=(PAGE_WIDTH, 3.6), **kw):
    fig, axes = plt.subplots(nrows, ncols, figsize=(min(figsize[0], PAGE_WIDTH), figsize[1]), squeeze=False,
                             layout="constrained", **kw)
    return fig, axes


def _grid(n: int, ncols: int, size=(3.3, 3.0), **kw):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = _figure(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), **kw)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def block_ticks(depth: int, max_labels: int = 7) -> list[int]:
    """Block indices to label on an axis of `depth` blocks: every block up to `max_labels`, else every k-th."""
    step = max(1, math.ceil(depth / max_labels))
    return list(range(0, depth, step))


def _set_block_ticks(ax, depth: int, axis: str = "x", max_labels: int = 7, fontsize: float = 9):
    """Sparse, horizontal block labels at the cell centres of a heat map."""
    shown = block_ticks(depth, max_labels)
    set_ticks = ax.set_xticks if axis == "x" else ax.set_yticks
    set_ticks([i + 0.5 for i in shown], [str(i) for i in shown], fontsize=fontsize, rotation=0)


def save_figure(fig, path: str | os.PathLike, dpi: int = 150) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


# ----- affinity (Fig. 1) -----
def plot_affinity_heatmaps(affinities: dict, ncols: int = 3, vmin: float | None = None, annot: bool = False):
    """One heat map per task of the inter-layer affinity A[i, j] (shared colour scale, one colour bar)."""
    if not affinities:
        raise ValueError("no affinity matrices to plot")
    lo = vmin if vmin is not None else min(float(np.min(A)) for A in affinities.values())
    n = len(affinities)
    fig, axes = _grid(n, ncols, size=(3.0, 2.9))
    shown = list(axes.flat[:n])
    for ax, (task, A) in zip(shown, affinities.items()):
        A = np.asarray(A)
        sns.heatmap(A, vmin=lo, vmax=1.0, cmap="viridis", square=True, annot=annot, fmt=".2f", cbar=False,
                    annot_kws=dict(fontsize=6), ax=ax)
        _set_block_ticks(ax, A.shape[0], "x")
        _set_block_ticks(ax, A.shape[0], "y")
        ax.set_title(task, fontsize=11)
        ax.set_xlabel("block j", fontsize=10)
        ax.set_ylabel("block i", fontsize=10)
    fig.colorbar(shown[0].collections[0], ax=shown, shrink=0.85, label="affinity A[i, j]")
    fig.suptitle("inter-layer affinity: mean cosine of block outputs over images", fontsize=12)
    return fig


def plot_adjacent_affinity(affinities: dict):
    """Adjacent-layer affinity A[i, i+1]: per task and mean ± std (left), variance over tasks (right)."""
    per_task, stats = adjacent_frame(affinities), adjacent_stats_frame(affinities)
    fig, axes = _figure(1, 2, figsize=(PAGE_WIDTH, 3.9))
    ax1, ax2 = axes[0]
    sns.lineplot(data=per_task, x="block", y="affinity", hue="task", alpha=0.5, linewidth=1, ax=ax1)
    ax1.plot(stats["block"], stats["mean"], color="black", linewidth=2.2, label="mean over tasks")
    ax1.fill_between(stats["block"], stats["mean"] - stats["std"], stats["mean"] + stats["std"], color="black",
                     alpha=0.12, label="± std")
    ax1.set_xticks(stats["block"], stats["pair"])
    ax1.set(xlabel="adjacent blocks", ylabel="A[i, i+1]", title=f"adjacent-layer affinity ({len(affinities)} tasks)")
    handles, labels = ax1.get_legend_handles_labels()
    ax1.get_legend().remove()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    sns.barplot(data=stats, x="pair", y="var", color="#7f7f7f", ax=ax2)
    ax2.set(xlabel="adjacent blocks", ylabel="variance over tasks", title="variance over tasks")
    ax2.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    return fig


def plot_levels(affinities: dict, thresholds, ncols: int = 3):
    """Semantic levels at several thresholds: one panel per threshold, rows = tasks, cells = each block's level
    (the number in a cell), with the number of levels at the end of each row."""
    frame = levels_frame(affinities, thresholds)
    alphas = list(dict.fromkeys(frame["threshold"]))
    depth = len(frame["block_level"].iloc[0])
    ncols = max(1, min(ncols, len(alphas)))
    cell = min(0.22, (PAGE_WIDTH - 1.9) / ncols / (depth + 1.5))
    fig, axes = _grid(len(alphas), ncols=ncols, size=(cell * (depth + 1.5) + 0.1, cell * len(affinities) + 1.0))
    top = int(frame["n_levels"].max())
    cmap = sns.color_palette("tab20", n_colors=max(top, 2))
    for k, (ax, alpha) in enumerate(zip(axes.flat, alphas)):
        sub = frame[frame["threshold"] == alpha].set_index("task")
        grid = np.array(sub["block_level"].tolist())
        sns.heatmap(grid, cmap=cmap, vmin=-0.5, vmax=len(cmap) - 0.5, annot=grid, annot_kws=dict(fontsize=6.5),
                    cbar=False, linewidths=0.5, linecolor="white",
                    yticklabels=list(sub.index) if k % ncols == 0 else False, ax=ax)
        ax.tick_params(axis="y", labelsize=9, rotation=0)
        for r, n_levels in enumerate(sub["n_levels"]):
            ax.text(depth + 0.25, r + 0.5, str(n_levels), va="center", ha="left", fontsize=8)
        ax.text(depth + 0.25, -0.15, "n", va="bottom", ha="left", fontsize=8, fontstyle="italic")
        _set_block_ticks(ax, depth, "x", max_labels=4, fontsize=8)
        ax.set_title(f"α = {alpha:g}", fontsize=10, pad=12)
        ax.set_xlabel("block", fontsize=9)
    fig.get_layout_engine().set(wspace=0.06, hspace=0.04)
    fig.suptitle("semantic levels (greedy chain): cell = the block's level, n = number of levels", fontsize=11)
    return fig


FEATURE_MAP_TITLES = {"pca": "patch tokens: first 3 principal components as RGB (fitted per block)",
                      "norm": "patch-token L2 norm", "cos_next": "cosine of each patch token with the next block's"}
#: Colour-bar labels of the scalar feature maps.
FEATURE_MAP_UNITS = {"norm": "L2 norm of the patch token", "cos_next": "cosine with the next block"}


def plot_feature_maps(maps: np.ndarray, raw_images=None, layers=None, kind: str = "pca", labels=None,
                      title: str | None = None):
    """Rows = images, columns = (input,) layers; `maps` and `layers` as given to `layer_feature_maps`.
    Scalar maps ("norm", "cos_next") share one colour scale over the figure, with a labelled colour bar."""
    n_img, n_layers = maps.shape[:2]
    layers = list(layers) if layers is not None else list(range(n_layers + (kind == "cos_next")))
    col_names = ([f"{a}→{b}" for a, b in zip(layers, layers[1:])] if kind == "cos_next"
                 else [f"block {i}" for i in layers])
    extra = 1 if raw_images is not None else 0
    ncols = n_layers + extra
    cbar_width = 0.0 if kind == "pca" else 0.9
    cell = min(1.1, (PAGE_WIDTH - 0.4 - cbar_width) / ncols)
    fig, axes = _figure(n_img, ncols, figsize=(cell * ncols + 0.4 + cbar_width, cell * n_img + 0.6))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    lo, hi = (float(np.min(maps)), float(np.max(maps))) if kind != "pca" else (None, None)
    image = None
    for r in range(n_img):
        if extra:
            axes[r, 0].imshow(raw_images[r])
            if labels is not None:
                axes[r, 0].set_ylabel(f"y = {labels[r]}", fontsize=7)
            if r == 0:
                axes[r, 0].set_title("input", fontsize=7)
        for c in range(n_layers):
            ax = axes[r, c + extra]
            image = ax.imshow(maps[r, c], cmap=None if kind == "pca" else "magma", vmin=lo, vmax=hi)
            if r == 0:
                ax.set_title(col_names[c], fontsize=7)
    if kind != "pca" and image is not None:
        cbar = fig.colorbar(image, ax=axes[:, extra:], shrink=0.9, aspect=15, pad=0.01)
        cbar.set_label(FEATURE_MAP_UNITS[kind], fontsize=8)
        cbar.ax.tick_params(labelsize=7)
    fig.suptitle(f"{title}: {FEATURE_MAP_TITLES[kind]}" if title else FEATURE_MAP_TITLES[kind], fontsize=9)
    return fig


# ----- training curves -----
#: Short axis labels and panel titles of history columns (full descriptions: histories.HISTORY_LABELS).
CURVE_AXIS_LABELS = {"loss": "loss", "ce": "cross-entropy", "pml": "PML (raw)", "train_acc": "accuracy (%)",
                     "eval_acc": "accuracy (%)", "eval_loss": "cross-entropy", "lr": "learning rate"}
CURVE_TITLES = {"loss": "training loss (CE + weighted aux. losses)", "ce": "training cross-entropy",
                "pml": "prompt matching loss (raw)", "train_acc": "training accuracy",
                "eval_acc": "evaluation accuracy", "eval_loss": "evaluation cross-entropy", "lr": "learning rate"}


def _legend_below(ax, ncol: int, fontsize: float = 8):
    """The axes' legend centred below it (outside the data; constrained layout makes room)."""
    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, fontsize=fontsize,
              frameon=False)


def _measured_curves(ax, hist: pd.DataFrame, columns) -> None:
    """Per-epoch training curves as lines; evaluation curves (`eval_*`) as markers at the evaluated epochs only: a
    line between two evaluations would draw values that were never measured."""
    for col in [c for c in columns if c in hist and hist[c].notna().any()]:
        points = hist[["epoch", col]].dropna()
        if col.startswith("eval_"):
            ax.plot(points["epoch"], points[col], linestyle="none", marker="o", label=f"{col} (evaluated epochs)")
        else:
            ax.plot(points["epoch"], points[col], marker=".", label=col)


def plot_run_curves(result: dict):
    """One run: training losses (left) and training/evaluation accuracy (right) per epoch; evaluations are
    points at the epochs where the model was evaluated."""
    hist = pd.DataFrame(result["history"])
    fig, axes = _figure(1, 2, figsize=(PAGE_WIDTH, 4.0))
    ax1, ax2 = axes[0]
    _measured_curves(ax1, hist, ("loss", "ce", "pml", "eval_loss"))
    ax1.set(xlabel="epoch", ylabel="loss", title="losses (train: epoch mean; eval: CE)")
    _legend_below(ax1, ncol=2)
    _measured_curves(ax2, hist, ("train_acc", "eval_acc"))
    ax2.set(xlabel="epoch")
    ax2.axhline(result["acc_last"], color="grey", linestyle="--", linewidth=1,
                label=f"acc_last {result['acc_last']:.2f}")
    ax2.scatter([result["max_epoch"]], [result["acc_max_over_epochs"]], s=150, facecolors="none", edgecolors="red",
                zorder=5,  # a ring around the evaluation it picks, which stays visible
                label=f"max {result['acc_max_over_epochs']:.2f} (epoch {result['max_epoch']})")
    ax2.set(ylabel="accuracy (%)", title=f"accuracy (eval split: {result['eval_split']})")
    _legend_below(ax2, ncol=2)
    fig.suptitle(f"{result['task']} · {run_label(result['method'], result.get('tag'))} · "
                 f"seed {result['seed']}")
    return fig


def plot_loss_curves(history: pd.DataFrame, columns=("ce", "loss"), errorbar="sd"):
    """Training curves per run (mean over seeds, band = `errorbar`), one panel per column (paper Fig. 3)."""
    if history.empty:
        raise ValueError("no histories to plot: no result files matched (check results_dir, task and runs)")
    columns = [c for c in columns if history[c].notna().any()]
    fig, axes = _figure(1, len(columns), figsize=(4.6 * len(columns) + 0.4, 3.6))
    runs = method_order(history["run"])
    seeds = history.groupby("run")["seed"].nunique()
    labels = {r: f"{r} ({seeds[r]} seed{'s' if seeds[r] > 1 else ''})" for r in runs}
    palette = {labels[r]: c for r, c in method_palette(runs).items()}
    data = history.assign(run=history["run"].map(labels))
    for k, (ax, col) in enumerate(zip(axes[0], columns)):
        sns.lineplot(data=data, x="epoch", y=col, hue="run", hue_order=[labels[r] for r in runs], palette=palette,
                     errorbar=errorbar, ax=ax, legend=k == 0)
        ax.set_ylabel(CURVE_AXIS_LABELS.get(col, col))
        ax.set_title(CURVE_TITLES.get(col, col), fontsize=11)
    if axes[0, 0].get_legend() is not None:
        axes[0, 0].get_legend().set_title(None)
    tasks = ", ".join(dict.fromkeys(history["task"]))
    fig.suptitle(f"{tasks}: training curves (line: mean over seeds; band: {errorbar})", fontsize=12)
    return fig


def plot_step_curves(steps: pd.DataFrame, window: int = 10):
    """Per optimiser step (paper Fig. 3 at step resolution): training cross-entropy (left) and the learning rate
    (right) against the fraction of training done, one line per run (mean over seeds; band: min to max over seeds,
    drawn only with several seeds). Each seed's cross-entropy is smoothed by a centred running mean over `window`
    steps, since single mini-batches of 64 images are noisy."""
    if steps.empty:
        raise ValueError("no per-step values to plot: no result file with per-step logging matched")
    fig, axes = _figure(1, 2, figsize=(PAGE_WIDTH, 3.6))
    runs = method_order(steps["run"])
    palette = method_palette(runs)
    curves = smoothed_steps(steps, window)
    for run in runs:
        per_step, n = curves[run], curves[run].attrs["seeds"]
        label = f"{run} ({n} seed{'s' if n > 1 else ''})"
        axes[0, 0].plot(per_step["fraction"], per_step["mean"], color=palette[run], label=label, linewidth=1.2)
        if n > 1:
            axes[0, 0].fill_between(per_step["fraction"], per_step["lo"], per_step["hi"], color=palette[run],
                                    alpha=0.2, linewidth=0)
        axes[0, 1].plot(per_step["fraction"], per_step["lr"], color=palette[run], label=label, linewidth=1.2)
    axes[0, 0].set(xlabel="fraction of training", ylabel=CURVE_AXIS_LABELS.get("ce", "ce"),
                   title=f"training cross-entropy (running mean of {window} steps)")
    axes[0, 1].set(xlabel="fraction of training", ylabel="learning rate", title="learning rate per step")
    _legend_below(axes[0, 0], ncol=1)
    _legend_below(axes[0, 1], ncol=1)
    fig.suptitle(f"{', '.join(dict.fromkeys(steps['task']))}: per optimiser step", fontsize=12)
    return fig


# ----- results and ablations -----
def _task_list(summary: pd.DataFrame) -> list:
    """Tasks of a summary in their benchmark's order (natural → specialized → structured), else as they come."""
    present = list(dict.fromkeys(summary["task"]))
    benchmarks = list(dict.fromkeys(summary["benchmark"])) if "benchmark" in summary else []
    if len(benchmarks) == 1:
        try:
            order = task_order(benchmarks[0])
        except ValueError:
            return present
        return [t for t in order if t in present] + [t for t in present if t not in order]
    return present


def plot_task_accuracies(summary: pd.DataFrame, title: str = "", runs=None, ncols: int = 4):
    """Per-task mean accuracy of each run (dot) ± std over seeds (bar), from `seed_summary`/`benchmark_summary`:
    one panel per task with its own accuracy axis, runs as rows in METHODS order, coloured by `method_palette`.

    `runs`: run names to show (None: the untagged method runs, i.e. no ablation variants "method+tag").
    """
    if summary.empty:
        raise ValueError("no results to plot")
    runs = method_order([r for r in summary["run"] if "+" not in r] if runs is None else runs)
    summary = summary[summary["run"].isin(runs)]
    if summary.empty:
        raise ValueError(f"no results of the runs {runs} to plot")
    tasks = _task_list(summary)
    palette = method_palette(runs)
    ncols = max(1, min(ncols, len(tasks)))
    row_height = 0.24 * len(runs) + 1.0
    fig, axes = _grid(len(tasks), ncols, size=((PAGE_WIDTH - 0.6) / ncols, row_height), sharey=True)
    for k, (ax, task) in enumerate(zip(axes.flat, tasks)):
        sub = summary[summary["task"] == task].set_index("run")
        for y, run in enumerate(runs):
            if run not in sub.index:
                continue
            mean, std = float(sub.at[run, "mean"]), sub.at[run, "std"]
            ax.errorbar([mean], [y], xerr=[0.0 if pd.isna(std) else float(std)], fmt="o", color=palette[run],
                        ecolor=palette[run], markersize=6, capsize=2.5, elinewidth=1.4, label=run)
        ax.set_title(task, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        ax.xaxis.set_major_locator(plt.MaxNLocator(4))
        ax.margins(x=0.15)
        ax.grid(axis="y", visible=False)
        if k + ncols >= len(tasks):  # the lowest panel of its column
            ax.set_xlabel("accuracy (%)", fontsize=9)
    axes[0, 0].set_yticks(range(len(runs)), runs)
    axes[0, 0].set_ylim(len(runs) - 0.5, -0.5)
    for ax in axes.flat:
        ax.tick_params(axis="y", labelsize=9)
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


def plot_ablation(summary: pd.DataFrame, factor: str):
    """Named variants (components, prototype banks): Δ accuracy vs the reference per task; numeric sweeps: accuracy
    vs the factor's value per task (dashed: the reference run with its per-task default)."""
    sub = summary[summary["factor"] == factor]
    if sub.empty:
        raise ValueError(f"no results for ablation factor {factor!r}")
    ref = summary[summary["variant"] == REFERENCE].set_index("task")["mean"]
    fig, axes = _figure(1, 1, figsize=(8.0, 3.8))
    ax = axes[0, 0]
    tasks = list(dict.fromkeys(sub["task"]))
    palette = dict(zip(tasks, sns.color_palette(n_colors=len(tasks))))
    if not pd.to_numeric(sub["value"], errors="coerce").notna().all():
        sns.barplot(data=sub, x="variant", y="delta", hue="task", palette=palette, ax=ax)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set(ylabel="Δ accuracy vs SHIP (points)", xlabel="", title=f"{factor.replace('_', ' ')} ablation")
    else:
        sub = sub.astype({"value": float})
        sns.lineplot(data=sub, x="value", y="mean", hue="task", palette=palette, marker="o", ax=ax)
        for task, color in palette.items():
            if task in ref:
                ax.axhline(ref[task], color=color, linestyle="--", linewidth=0.8)
        ax.set(xlabel=factor, ylabel="accuracy (%)", title=f"{factor} (dashed: SHIP with its default)")
    ax.legend(title="task", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title_fontsize=9,
              frameon=False)
    return fig


def plot_ablation_forest(paired: pd.DataFrame, title: str = ""):
    """Every variant's paired difference to full SHIP (dot) with its 95 % CI (bar), from `ablation_paired_frame`:
    one row per variant, grouped and coloured by factor; the label gives wins/ties/losses over the pairs."""
    if paired.empty:
        raise ValueError("no ablation results to plot")
    factors = list(dict.fromkeys(paired["factor"]))
    palette = dict(zip(factors, sns.color_palette("deep", n_colors=len(factors))))
    fig, axes = _figure(1, 1, figsize=(PAGE_WIDTH * 0.8, 0.26 * len(paired) + 1.2))
    ax = axes[0, 0]
    for y, row in enumerate(paired.itertuples(index=False)):
        ax.errorbar([row.mean_diff], [y], xerr=[[row.mean_diff - row.ci_low], [row.ci_high - row.mean_diff]],
                    fmt="o", color=palette[row.factor], ecolor=palette[row.factor], markersize=5, capsize=2.5,
                    elinewidth=1.4, label=row.factor.replace("_", " "))
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(paired)),
                  [f"{r.variant}  ({r.wins}/{r.ties}/{r.losses})" for r in paired.itertuples(index=False)], fontsize=9)
    ax.set_ylim(len(paired) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("variant − full SHIP, accuracy points (dot: mean over (task, seed) pairs; bar: 95 % bootstrap CI)",
                  fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), title="factor", loc="upper left", bbox_to_anchor=(1.01, 1.0),
              fontsize=8, title_fontsize=9, frameon=False)
    if title:
        ax.set_title(title, fontsize=11)
    return fig


# ----- efficiency -----
def plot_efficiency(table: pd.DataFrame, title: str = ""):
    """Per method (rows of `shiplib.bench.efficiency_table`): images/s in eval and in training, peak memory of a
    training step, and training FLOPs per image against trainable parameters; methods coloured by `method_palette`."""
    methods = method_order(table["method"])
    palette = method_palette(methods)
    fig, axes = _figure(2, 2, figsize=(PAGE_WIDTH, 6.6))
    bars = [(axes[0, 0], "eval_images_per_s", "eval images / s (higher: faster)"),
            (axes[0, 1], "train_images_per_s", "training images / s (higher: faster)"),
            (axes[1, 0], "train_mem_mb", "peak memory of a training step (MB)")]
    for k, (ax, col, label) in enumerate(bars):
        sns.barplot(data=table, y="method", x=col, hue="method", order=methods, hue_order=methods, palette=palette,
                    saturation=1.0, legend=False, ax=ax)
        ax.set(xlabel=label, ylabel="")
        ax.tick_params(axis="y", labelsize=9)
        if k == 1:
            ax.set_yticklabels([])
    ax = axes[1, 1]
    for method in methods:
        row = table[table["method"] == method]
        ax.scatter(row["trainable_params"], row["train_gflops_per_image"], color=palette[method], s=60,
                   label=method, edgecolor="white", linewidth=0.5, zorder=3)
    ax.set_xscale("log")
    ax.set(xlabel="trainable parameters (with head)", ylabel="GFLOPs / image, train step")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


#: Display names of the variants in `plot_bench_times` (keys: `method_color` names).
BENCH_VARIANT_LABELS = {"timm": "plain timm ViT", "ship": "SHIP (fast path)", "ship (reference)": "SHIP (reference)"}


def plot_bench_times(times: pd.DataFrame, title: str = ""):
    """Seconds per batch of the plain timm ViT, SHIP's fast path and SHIP's reference implementation, in eval and
    for a training step (bar: median over repeats, whisker: min-max), from a frame with columns
    mode ("eval"/"train"), variant (`BENCH_VARIANT_LABELS` keys), median_s, min_s, max_s."""
    modes = [m for m in ("eval", "train") if m in set(times["mode"])]
    if not modes:
        raise ValueError("no eval or train timings to plot")
    fig, axes = _figure(1, len(modes), figsize=(PAGE_WIDTH, 2.9), sharex=True)
    xlabels = {"eval": "seconds per batch, eval (inference)",
               "train": "seconds per training step (timm: fwd+bwd floor)"}
    xmax = float(times["max_s"].max()) * 1.3
    for k, (ax, mode) in enumerate(zip(axes[0], modes)):
        sub = times[times["mode"] == mode]
        variants = [v for v in BENCH_VARIANT_LABELS if v in set(sub["variant"])]
        sub = sub.set_index("variant").loc[variants]
        y = np.arange(len(variants))
        colors = [method_color(v) or "#7f7f7f" for v in variants]
        ax.barh(y, sub["median_s"], color=colors, height=0.6)
        err = np.vstack([sub["median_s"] - sub["min_s"], sub["max_s"] - sub["median_s"]])
        ax.errorbar(sub["median_s"], y, xerr=err, fmt="none", ecolor="black", capsize=3, elinewidth=1)
        for yi, (v, row) in zip(y, sub.iterrows()):
            ax.text(row["max_s"] + 0.02 * xmax, yi, f"{row['median_s']:.2f} s", va="center", fontsize=9)
        ax.set_yticks(y, [BENCH_VARIANT_LABELS[v] for v in variants] if k == 0 else [""] * len(variants))
        ax.set_ylim(len(variants) - 0.5, -0.5)
        ax.set_xlabel(xlabels[mode], fontsize=10)
        ax.set_xlim(0, xmax)
        ax.grid(axis="y", visible=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
