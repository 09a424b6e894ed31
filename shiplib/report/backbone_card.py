"""Figures and tables of the mini backbone's card (`data/checkpoints/vit_mini_fmnist.json`): its pretraining
curves, the linear-probe evidence and the inter-layer affinity (`notebooks/pretrain_mini.ipynb`).

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
    """Loss, train/test accuracy and learning rate per epoch, side by side; returns the figure and the history."""
    hist = training_history(card)
    smoothing = (card.get("training") or {}).get("label_smoothing")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    loss_title = "training loss" + (f" (label smoothing {smoothing})" if smoothing else "")
    sns.lineplot(data=hist, x="epoch", y="train_loss", marker="o", ax=axes[0]).set_title(loss_title)
    acc_long = hist.melt(id_vars="epoch", value_vars=["train_acc", "test_acc"], var_name="split",
                         value_name="accuracy %")
    sns.lineplot(data=acc_long, x="epoch", y="accuracy %", hue="split", marker="o", ax=axes[1]).set_title("accuracy")
    sns.lineplot(data=hist, x="epoch", y="lr", marker="o", ax=axes[2]).set_title("learning rate at epoch end")
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
