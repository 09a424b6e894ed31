"""Affinity data, feature maps and figures: real tiny backbone and task, shapes, values and axes."""
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from shiplib.backbones import create_backbone  # noqa: E402
from shiplib.data import build_dataset  # noqa: E402
from shiplib.hierarchy import (extract_block_features, inter_layer_affinity, save_affinity,  # noqa: E402
                               semantic_levels)
from shiplib.report import (adjacent_frame, adjacent_stats_frame, adjacent_stats_table, affinity_range,  # noqa: E402
                            history_frame, layer_feature_maps, levels_frame, load_affinity_dir, sample_images,
                            task_affinities)
from shiplib.report import figures  # noqa: E402


def toy_affinity(depth: int, dip: int, seed: int) -> np.ndarray:
    """A valid cosine-affinity matrix: block features on a random walk with a jump at `dip`."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(size=(depth, 16)) * 0.3
    steps[dip] += 3.0
    f = np.cumsum(steps, axis=0) + 5.0
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    A = f @ f.T
    np.fill_diagonal(A, 1.0)
    return ((A + A.T) / 2).astype(np.float32)


@pytest.fixture
def affinities():
    return {f"task{i}": toy_affinity(6, dip=i + 1, seed=i) for i in range(3)}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_task_affinities_equal_the_hierarchy_pipeline(tiny_task_root, tiny_vit_file):
    got = task_affinities(["svhn"], backbone=str(tiny_vit_file), img_size=32, data_root=tiny_task_root)
    vit = create_backbone(str(tiny_vit_file))
    ds = build_dataset("svhn", "train800val200", root=tiny_task_root, img_size=32)
    want = inter_layer_affinity(extract_block_features(vit, DataLoader(ds, batch_size=7), progress=False))
    np.testing.assert_allclose(got["svhn"], want, atol=1e-6)
    assert got["svhn"].shape == (4, 4)


def test_missing_task_data_fails_before_loading_a_backbone(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        task_affinities(["svhn"], backbone="no-such-backbone", data_root=tmp_path)


def test_affinity_dir_round_trip_and_errors(tmp_path, affinities):
    for task, A in affinities.items():
        save_affinity(tmp_path / f"{task}.npy", A)
    loaded = load_affinity_dir(tmp_path)
    assert list(loaded) == sorted(affinities)
    np.testing.assert_array_equal(loaded["task1"], affinities["task1"])
    assert list(load_affinity_dir(tmp_path, tasks=["task2"])) == ["task2"]
    with pytest.raises(FileNotFoundError, match="affinity folder not found"):
        load_affinity_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no <task>.npy"):
        load_affinity_dir(tmp_path / "empty")


def test_adjacent_and_levels_frames(affinities):
    adj = adjacent_frame(affinities)
    assert len(adj) == 3 * 5 and adj.loc[(adj.task == "task0") & (adj.block == 2), "affinity"].item() == \
        pytest.approx(affinities["task0"][2, 3])
    stats = adjacent_stats_frame(affinities)
    per_pair = np.stack([np.diagonal(A, 1) for A in affinities.values()])
    np.testing.assert_allclose(stats["mean"], per_pair.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["var"], per_pair.var(0), rtol=1e-5, atol=1e-12)
    lv = levels_frame(affinities, [0.5, 0.99, 1.0])
    assert len(lv) == 9
    for _, row in lv.iterrows():
        assert row["levels"] == semantic_levels(affinities[row["task"]], row["threshold"])
        assert row["n_levels"] == len(row["levels"]) and len(row["block_level"]) == 6
    assert lv[lv.threshold == 1.0]["n_levels"].eq(6).all()
    lo, hi = affinity_range(affinities)
    assert lo < hi < 1.0


def test_adjacent_stats_table_has_one_number_format(affinities):
    """Rows mean/std/var, one column per adjacent pair, every cell with 3 decimals, however small the variance."""
    table = adjacent_stats_table(affinities)
    assert list(table.index) == ["mean", "std", "var"] and list(table.columns) == [f"{i}→{i + 1}" for i in range(5)]
    cells = [v for row in table.itertuples(index=False) for v in row]
    assert all(isinstance(v, str) and re.fullmatch(r"\d\.\d{3}", v) for v in cells), table
    stats = adjacent_stats_frame(affinities)
    assert table.loc["mean"].tolist() == [f"{v:.3f}" for v in stats["mean"]]


def test_feature_maps_shapes_values_and_determinism(tiny_task_root, tiny_vit_file):
    vit = create_backbone(str(tiny_vit_file))
    s = sample_images("svhn", n=3, data_root=tiny_task_root, img_size=32, seed=1)
    assert s["images"].shape == (3, 3, 32, 32) and len(s["raw"]) == 3 and s["raw"][0].shape == (32, 32, 3)
    again = sample_images("svhn", n=3, data_root=tiny_task_root, img_size=32, seed=1)
    assert s["indices"] == again["indices"] and torch.equal(s["images"], again["images"])
    pca = layer_feature_maps(vit, s["images"], kind="pca")
    assert pca.shape == (3, 4, 4, 4, 3) and pca.min() >= 0 and pca.max() <= 1
    np.testing.assert_array_equal(pca, layer_feature_maps(vit, s["images"], kind="pca"))
    norm = layer_feature_maps(vit, s["images"], layers=[1, 3], kind="norm")
    tokens = vit.forward_intermediates(s["images"], indices=[1, 3], norm=False, intermediates_only=True)
    np.testing.assert_allclose(norm[:, 1], tokens[1].norm(dim=1).detach().numpy(), rtol=1e-5)
    cos = layer_feature_maps(vit, s["images"], kind="cos_next")
    want = torch.nn.functional.cosine_similarity(
        *vit.forward_intermediates(s["images"], indices=[0, 1], norm=False, intermediates_only=True), dim=1)
    assert cos.shape == (3, 3, 4, 4)
    np.testing.assert_allclose(cos[:, 0], want.detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="outside the backbone"):
        layer_feature_maps(vit, s["images"], layers=[4])
    with pytest.raises(ValueError, match="kind must be one of"):
        layer_feature_maps(vit, s["images"], kind="tsne")
    with pytest.raises(ValueError, match="n must be in"):
        sample_images("svhn", n=0, data_root=tiny_task_root, img_size=32)


def colorbars(fig) -> list:
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def image_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def fits_page(fig) -> bool:
    return fig.get_figwidth() <= figures.PAGE_WIDTH + 1e-9 and fig.get_layout_engine() is not None


def test_block_ticks_stay_sparse():
    assert figures.block_ticks(4) == [0, 1, 2, 3]
    assert figures.block_ticks(12) == [0, 2, 4, 6, 8, 10]
    assert figures.block_ticks(12, max_labels=4) == [0, 3, 6, 9]
    assert len(figures.block_ticks(24)) <= 7


def test_affinity_figures(affinities):
    fig = figures.plot_affinity_heatmaps(affinities, ncols=2)
    assert [ax.get_title() for ax in image_axes(fig) if ax.get_title()] == list(affinities)
    (cbar,) = colorbars(fig)  # one shared colour bar, labelled
    assert cbar.get_ylabel() == "affinity A[i, j]"
    assert fits_page(fig)
    big = {f"t{i}": toy_affinity(12, dip=3 + i, seed=i) for i in range(3)}
    fig = figures.plot_affinity_heatmaps(big)
    for ax in image_axes(fig):
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "2", "4", "6", "8", "10"]
    assert fits_page(fig)
    fig = figures.plot_adjacent_affinity(affinities)
    mean_line = [ln for ln in fig.axes[0].lines if ln.get_label() == "mean over tasks"][0]
    np.testing.assert_allclose(mean_line.get_ydata(), adjacent_stats_frame(affinities)["mean"], rtol=1e-6)
    assert fits_page(fig) and fig.axes[0].get_legend() is None and fig.legends  # legend below, off the data
    fig = figures.plot_levels(affinities, [0.5, 0.99])
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["α = 0.5", "α = 0.99"]
    fig = figures.plot_levels(big, [0.5, 0.9, 0.95, 0.99, 1.0])
    assert fits_page(fig)
    for ax in image_axes(fig):
        assert len(ax.get_xticklabels()) <= 4
    # the number of levels is written at the end of each row
    first = image_axes(fig)[0]
    lv = levels_frame(big, [0.5])
    assert [t.get_text() for t in first.texts if t.get_text() != "n"][-3:] == [str(n) for n in lv["n_levels"]]


def test_feature_map_figure(tiny_task_root, tiny_vit_file):
    vit = create_backbone(str(tiny_vit_file))
    s = sample_images("svhn", n=2, data_root=tiny_task_root, img_size=32)
    for kind, cols in (("pca", 4), ("norm", 4), ("cos_next", 3)):
        maps = layer_feature_maps(vit, s["images"], kind=kind)
        fig = figures.plot_feature_maps(maps, s["raw"], kind=kind, labels=s["labels"])
        assert len(image_axes(fig)) == 2 * (cols + 1)
        bars = colorbars(fig)
        if kind == "pca":
            assert bars == []  # RGB: no scale
        else:
            (cbar,) = bars  # one per figure, labelled, spanning the maps' common range
            assert cbar.get_ylabel() == figures.FEATURE_MAP_UNITS[kind]
            lo, hi = cbar._colorbar.mappable.get_clim()
            assert (lo, hi) == pytest.approx((maps.min(), maps.max()))
        assert fits_page(fig)
    wide = np.random.default_rng(0).random((3, 12, 4, 4)).astype(np.float32)  # 12 blocks + input
    fig = figures.plot_feature_maps(wide, [np.zeros((32, 32, 3))] * 3, kind="norm")
    assert fits_page(fig) and len(colorbars(fig)) == 1


def test_one_colour_per_method_everywhere():
    from shiplib.methods import list_methods

    colors = figures.METHOD_COLORS
    assert set(list_methods()) <= set(figures.METHODS) <= set(colors)
    rgb = np.array([matplotlib.colors.to_rgb(colors[m]) for m in figures.METHODS])
    dist = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(len(rgb)) * 9
    assert dist.min() > 0.25, "two methods have near-identical colours"
    pal = figures.method_palette(["ship+no-sip", "ship", "ship (reference)", "vpt_deep", "ship+K=5"])
    assert pal["ship"] == colors["ship"] and pal["vpt_deep"] == colors["vpt_deep"]
    assert pal["ship (reference)"] != colors["ship"]  # the method's colour, lighter
    assert pal["ship+no-sip"] != pal["ship+K=5"] and not {pal["ship+no-sip"], pal["ship+K=5"]} & set(colors.values())
    assert figures.method_order(["ship", "full", "ship+no-sip", "linear", "other"]) == \
        ["linear", "full", "ship", "ship+no-sip", "other"]


def line_colors(ax) -> dict:
    return {ln.get_label(): matplotlib.colors.to_hex(ln.get_color()) for ln in ax.lines}


def test_curve_and_ablation_figures(tmp_path, write_fake_result):
    from shiplib.engine.results import read_result
    from shiplib.report import ablation_results, ablation_summary, seed_summary
    from shiplib.engine import load_results

    path = write_fake_result("svhn", "ship", 1, 80.0)
    write_fake_result("svhn", "ship", 2, 82.0)
    write_fake_result("svhn", "vpt_deep", 1, 70.0)
    for tag, acc in (("no-sip", 75.0), ("K=5", 79.0), ("K=40", 81.0)):
        write_fake_result("svhn", "ship", 1, acc, tag=tag)
    fig = figures.plot_run_curves(read_result(path))
    assert len(fig.axes) == 2
    assert fits_page(fig) and all(ax.get_legend() is not None for ax in fig.axes)
    hist = history_frame(tmp_path / "results", task="svhn", runs=["ship", "vpt_deep"])
    fig = figures.plot_loss_curves(hist, columns=("ce", "loss", "pml"))  # pml is all-NaN here: dropped
    assert len(fig.axes) == 2 and fits_page(fig)
    assert [ax.get_ylabel() for ax in fig.axes] == ["cross-entropy", "loss"]  # short labels
    handles, labels = fig.axes[0].get_legend_handles_labels()  # one legend, method colours
    assert fig.axes[1].get_legend() is None
    assert {lab: matplotlib.colors.to_hex(h.get_color()) for h, lab in zip(handles, labels)} == \
        {"ship (2 seeds)": figures.METHOD_COLORS["ship"], "vpt_deep (1 seed)": figures.METHOD_COLORS["vpt_deep"]}
    with pytest.raises(ValueError, match="no histories"):
        figures.plot_loss_curves(hist.iloc[:0])
    summary = seed_summary(load_results(tmp_path / "results"))
    fig = figures.plot_task_accuracies(summary)  # untagged runs only: ship, vpt_deep (METHODS order)
    assert fig.axes[0].get_xlabel() == "accuracy (%)" and fits_page(fig)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["vpt_deep", "ship"]
    points = {c.get_label(): c for c in fig.axes[0].containers}
    assert matplotlib.colors.to_hex(points["ship"].lines[0].get_color()) == figures.METHOD_COLORS["ship"]
    assert points["ship"].lines[0].get_xdata()[0] == pytest.approx(81.0)
    summary = ablation_summary(ablation_results(tmp_path / "results", benchmark="vtab1k"))
    fig = figures.plot_ablation(summary, "components")
    assert fig.axes[0].patches[0].get_height() == pytest.approx(75.0 - 81.0)
    fig = figures.plot_ablation(summary, "prompt_length")
    assert fig.axes[0].get_xlabel() == "prompt_length"
    with pytest.raises(ValueError, match="no results for ablation factor"):
        figures.plot_ablation(summary, "da_scale")
    out = figures.save_figure(fig, tmp_path / "fig" / "k.png")
    assert out.stat().st_size > 0


def test_task_accuracies_with_a_run_on_fewer_tasks(tmp_path, write_fake_result):
    from shiplib.report import benchmark_summary
    from shiplib.report.figures import plot_task_accuracies

    for seed in (1, 2):
        write_fake_result("mini_mnist", "ship", seed, 50.0 + seed)
        write_fake_result("mini_textures", "ship", seed, 40.0 + seed)
    write_fake_result("mini_mnist", "ship", 1, 55.0, tag="no-sip")
    summary = benchmark_summary(tmp_path / "results", "mini")
    fig = plot_task_accuracies(summary)  # default: no ablation variants
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["mini_mnist", "mini_textures"]
    assert [[c.get_label() for c in ax.containers] for ax in fig.axes[:2]] == [["ship"], ["ship"]]
    fig = plot_task_accuracies(summary, runs=["ship", "ship+no-sip"])
    mnist, textures = fig.axes[:2]
    assert [c.get_label() for c in mnist.containers] == ["ship", "ship+no-sip"]
    assert [c.get_label() for c in textures.containers] == ["ship"]  # the variant has no result there
    assert mnist.containers[0].lines[0].get_xdata()[0] == pytest.approx(51.5)
    with pytest.raises(ValueError, match="no results of the runs"):
        plot_task_accuracies(summary, runs=["spt"])


def test_efficiency_figures():
    import pandas as pd

    methods = ["ship", "linear", "vpt_deep", "ship (reference)"]
    table = pd.DataFrame(dict(method=methods, trainable_params=[1e4, 4e3, 1.2e4, 1e4],
                              train_gflops_per_image=[0.2, 0.1, 0.18, 0.25], eval_images_per_s=[900, 1000, 950, 600],
                              train_images_per_s=[300, 500, 280, 200], train_mem_mb=[30, 10, 25, 50]))
    fig = figures.plot_efficiency(table, title="t")
    assert fits_page(fig)
    bars = fig.axes[0]
    assert [t.get_text() for t in bars.get_yticklabels()] == ["linear", "vpt_deep", "ship", "ship (reference)"]
    assert [matplotlib.colors.to_hex(p.get_facecolor()) for p in bars.patches] == \
        [figures.method_color(m) for m in ["linear", "vpt_deep", "ship", "ship (reference)"]]
    times = pd.DataFrame(dict(mode=["eval", "eval", "train", "train"], variant=["timm", "ship"] * 2,
                              median_s=[1.0, 1.1, 2.0, 2.5], min_s=[0.9, 1.0, 1.9, 2.4], max_s=[1.1, 1.2, 2.1, 2.6]))
    fig = figures.plot_bench_times(times)
    assert fits_page(fig) and len(fig.axes) == 2
    assert [p.get_width() for p in fig.axes[1].patches] == [2.0, 2.5]
    assert [matplotlib.colors.to_hex(p.get_facecolor()) for p in fig.axes[0].patches] == \
        [figures.METHOD_COLORS["timm"], figures.METHOD_COLORS["ship"]]


def test_run_curves_show_evaluations_only_where_they_were_measured(write_fake_result):
    """Evaluated at epochs 0 and 9 of 10: the eval curves are two points with no line between them (a line would
    draw accuracies that were never measured); the per-epoch training curves are lines over all 10 epochs."""
    from shiplib.engine.results import read_result

    result = read_result(write_fake_result("svhn", "ship", 1, 80.0, epochs=10))
    for h in result["history"][1:-1]:
        h.update(eval_acc=None, eval_loss=None)  # as a run with eval_every=10 records them
    fig = figures.plot_run_curves(result)
    for ax in fig.axes:
        curves = {ln.get_label(): ln for ln in ax.lines if not ln.get_label().startswith("_")}
        evals = [ln for label, ln in curves.items() if label.startswith("eval_")]
        trains = [ln for label, ln in curves.items() if label in ("loss", "ce", "train_acc")]
        assert len(evals) == 1 and trains
        assert list(evals[0].get_xdata()) == [0, 9] and evals[0].get_linestyle() == "None"
        assert evals[0].get_marker() not in (None, "None", "")
        assert all(len(ln.get_xdata()) == 10 and ln.get_linestyle() == "-" for ln in trains)
