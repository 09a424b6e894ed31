"""Figures and tables of a mini backbone's card (`data/checkpoints/vit_mini_*.json`): its pretraining curves, the
linear-probe evidence and the inter-layer affinity (`notebooks/pretrain_mini.ipynb`, `notebooks/distill_mini.ipynb`).

Imported separately from `shiplib.report` (it loads matplotlib). Each plot function draws one new figure and
returns it; the caller shows or saves it.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure


def training_history(card: dict) -> pd.DataFrame:
    """The card's per-epoch pretraining history, epochs counted from 1."""
    hist = pd.DataFrame(card["history"])
    hist["epoch"] += 1
    return hist


def training_curves(card: dict) -> tuple[Figure, pd.DataFrame]:
    """Per epoch, side by side: the loss (one curve per target for a distilled backbone), train/test accuracy when
    the card has them (supervised pretraining) and the learning rate; returns the figure and the history."""
    hist = training_history(card)
    targets = [c for c in hist.columns if c.startswith("loss_")]
    has_acc = {"train_acc", "test_acc"} <= set(hist.columns)
    fig, axes = plt.subplots(1, 2 + has_acc, figsize=(13 if has_acc else 9, 3.4))
    if targets:
        long = hist.melt(id_vars="epoch", value_vars=targets, var_name="target", value_name="loss")
        long["target"] = long["target"].str.removeprefix("loss_")
        sns.lineplot(data=long, x="epoch", y="loss", hue="target", marker="o", ax=axes[0])
        axes[0].set_title("distillation losses (per target)")
    else:
        smoothing = (card.get("training") or {}).get("label_smoothing")
        loss_title = "training loss" + (f" (label smoothing {smoothing})" if smoothing else "")
        sns.lineplot(data=hist, x="epoch", y="train_loss", marker="o", ax=axes[0]).set_title(loss_title)
    if has_acc:
        acc_long = hist.melt(id_vars="epoch", value_vars=["train_acc", "test_acc"], var_name="split",
                             value_name="accuracy %")
        sns.lineplot(data=acc_long, x="epoch", y="accuracy %", hue="split", marker="o",
                     ax=axes[1]).set_title("accuracy")
    sns.lineplot(data=hist, x="epoch", y="lr", marker="o", ax=axes[-1]).set_title("learning rate at epoch end")
    fig.tight_layout()
    return fig, hist


def probe_accuracy_plot(table: pd.DataFrame) -> Figure:
    """Test accuracy of the linear probe per task, pretrained vs random-init backbone (`evidence.probe_table`)."""
    long = table.drop(index="mean").reset_index().melt(id_vars="task", value_vars=["pretrained", "random_init"],
                                                      var_name="backbone", value_name="test accuracy %")
    fig = plt.figure(figsize=(12, 3.6))
    sns.barplot(data=long, x="task", y="test accuracy %", hue="backbone")
    plt.xticks(rotation=60, ha="right")
    plt.title("linear probe on mini-VTAB (frozen CLS features)")
    fig.tight_layout()
    return fig


def adjacent_affinity_table(affinity: dict) -> pd.DataFrame:
    """Affinity of each pair of adjacent blocks (columns "1-2", "2-3", …), one row per backbone."""
    depth = len(next(iter(affinity["matrices"].values())))
    return pd.DataFrame(affinity["adjacent"], index=[f"{i}-{i + 1}" for i in range(1, depth)]).T


def affinity_heatmaps(affinity: dict) -> tuple[Figure, pd.DataFrame]:
    """The card's block-affinity matrices (one heatmap per backbone, blocks counted from 1) and the
    adjacent-block table (`adjacent_affinity_table`)."""
    matrices = affinity["matrices"]
    fig, axes = plt.subplots(1, len(matrices), figsize=(5.5 * len(matrices), 4.4), squeeze=False)
    for ax, (name, matrix) in zip(axes[0], matrices.items()):
        ticks = range(1, len(matrix) + 1)
        sns.heatmap(np.array(matrix), vmin=min(0.0, np.min(matrix)), vmax=1, cmap="viridis", square=True, ax=ax,
                    xticklabels=ticks, yticklabels=ticks)
        ax.set_title(f"{name}: block affinity on {affinity['task']}")
    fig.tight_layout()
    return fig, adjacent_affinity_table(affinity)
