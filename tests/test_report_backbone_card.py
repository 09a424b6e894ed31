"""The mini backbone card's figures and tables (shiplib.report.backbone_card), on the committed card and on a
small hand-made one."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from shiplib.backbones import evidence as ev  # noqa: E402
from shiplib.report.backbone_card import (adjacent_affinity_table, affinity_heatmaps, probe_accuracy_plot,  # noqa: E402
                                          training_curves, training_history)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def small_card() -> dict:
    history = [dict(epoch=e, train_loss=2.0 - e, train_acc=50.0 + 10 * e, test_acc=48.0 + 9 * e, lr=1e-3 / (e + 1),
                    seconds=1.0) for e in range(3)]
    matrix = np.eye(3) * 0.5 + 0.5
    affinity = dict(task="mini_x", matrices={"pretrained": matrix.tolist(), "random_init": (matrix * 0.9).tolist()},
                    adjacent={"pretrained": [0.5, 0.5], "random_init": [0.45, 0.45]})
    tasks = {t: dict(pretrained=dict(test_acc=80.0 + i), random_init=dict(test_acc=40.0 + i), test_images=100)
             for i, t in enumerate(("mini_a", "mini_b"))}
    return dict(history=history, training=dict(label_smoothing=0.1),
                evidence=dict(affinity=affinity, linear_probe=dict(tasks=tasks)))


def test_training_curves_show_loss_accuracy_and_lr_per_epoch():
    card = small_card()
    hist = training_history(card)
    assert list(hist["epoch"]) == [1, 2, 3] and [h["epoch"] for h in card["history"]] == [0, 1, 2]  # not mutated
    fig, shown = training_curves(card)
    assert shown.equals(hist)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["training loss (label smoothing 0.1)", "accuracy", "learning rate at epoch end"]
    assert [len(line.get_xdata()) for line in fig.axes[0].get_lines()] == [3]
    assert {t.get_text() for t in fig.axes[1].get_legend().get_texts()} == {"train_acc", "test_acc"}
    assert tuple(fig.get_size_inches()) == (13, 3.4)


def test_probe_plot_has_a_bar_per_task_and_backbone():
    table = ev.probe_table(small_card())
    fig = probe_accuracy_plot(table)
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 1) for p in ax.patches if p.get_height() > 0)
    assert heights == [40.0, 41.0, 80.0, 81.0]  # the mean row is not plotted
    assert [t.get_text() for t in ax.get_xticklabels()] == ["mini_a", "mini_b"]


def test_affinity_heatmaps_and_adjacent_table():
    aff = small_card()["evidence"]["affinity"]
    fig, adjacent = affinity_heatmaps(aff)
    heatmaps = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in heatmaps] == ["pretrained: block affinity on mini_x",
                                                   "random_init: block affinity on mini_x"]
    assert [t.get_text() for t in heatmaps[0].get_xticklabels()] == ["1", "2", "3"]
    assert adjacent.equals(adjacent_affinity_table(aff))
    assert list(adjacent.columns) == ["1-2", "2-3"] and list(adjacent.index) == ["pretrained", "random_init"]
    assert adjacent.loc["random_init", "2-3"] == 0.45


def test_distillation_curves_show_one_loss_per_target_and_the_lr():
    history = [dict(epoch=e, loss_pooled=0.7 - 0.1 * e, loss_spatial=0.6 - 0.1 * e, loss_pixel=0.08 - 0.01 * e,
                    lr=1e-3 / (e + 1), seconds=1.0) for e in range(4)]
    fig, hist = training_curves(dict(history=history, training=dict(w_pixel=1.0)))
    assert [ax.get_title() for ax in fig.axes] == ["distillation losses (per target)", "learning rate at epoch end"]
    assert {t.get_text() for t in fig.axes[0].get_legend().get_texts()} == {"pooled", "spatial", "pixel"}
    assert [len(line.get_xdata()) for line in fig.axes[0].get_lines()][:3] == [4, 4, 4]
    assert list(hist["epoch"]) == [1, 2, 3, 4]


@pytest.mark.parametrize("name", ["mini_fmnist", "mini_distill"])
def test_the_committed_cards_draw(name):
    from shiplib.backbones import mini_card_path

    if not mini_card_path(name=name).is_file():
        pytest.skip(f"{mini_card_path(name=name).name} is not built")
    card = ev.load_card(name=name)
    fig, hist = training_curves(card)
    assert len(hist) == card["epochs_completed"] and len(fig.axes) == (3 if "test_accuracy" in card else 2)
    if "evidence" in card:
        table = ev.probe_table(card)
        assert len(probe_accuracy_plot(table).axes[0].patches) >= 2 * (len(table) - 1)
        _, adjacent = affinity_heatmaps(card["evidence"]["affinity"])
        depth = len(next(iter(card["evidence"]["affinity"]["matrices"].values())))
        assert adjacent.shape == (len(card["evidence"]["affinity"]["matrices"]), depth - 1)
