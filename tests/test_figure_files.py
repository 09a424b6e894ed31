"""README figures in docs/figures: each committed PNG is sensible, its notebook writes it, and its CSV is the data the
package computes now from the committed inputs (results/, the mini ViT, mini-VTAB data)."""
import matplotlib

matplotlib.use("Agg")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from shiplib.report import figure_files as ff  # noqa: E402
from shiplib.report import history_frame  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / ff.FIGURES_DIR
NAMES = list(ff.README_FIGURES)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_registry_names_the_five_figures_and_their_notebooks():
    assert NAMES == ["affinity_heatmaps", "loss_curves", "mini_results", "ablations", "efficiency"]
    assert {n: f.notebook for n, f in ff.README_FIGURES.items()} == {
        "affinity_heatmaps": "notebooks/affinity.ipynb", "loss_curves": "notebooks/loss_curves.ipynb",
        "mini_results": "notebooks/results.ipynb", "ablations": "notebooks/ablations.ipynb",
        "efficiency": "notebooks/efficiency.ipynb"}
    for spec in ff.README_FIGURES.values():
        assert (REPO / spec.notebook).is_file() and spec.caption


@pytest.mark.parametrize("name", NAMES)
def test_committed_png_is_a_sensible_png(name):
    path = FOLDER / f"{name}.png"
    assert path.is_file(), f"{path} is missing: run {ff.README_FIGURES[name].notebook}"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        width, height = im.size
    # written at ff.DPI from a figure at most PAGE_WIDTH inches wide: fits a page, not a thumbnail
    assert 500 <= width <= 1100 and 200 <= height <= 900, (width, height)
    assert 10_000 < path.stat().st_size < 1_000_000


@pytest.mark.parametrize("name", NAMES)
def test_notebook_writes_the_figure(name):
    """Fails until the notebook has its `write_figure(..., "<name>")` cell."""
    spec = ff.README_FIGURES[name]
    nb = json.loads((REPO / spec.notebook).read_text(encoding="utf-8"))
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    assert any("write_figure(" in c and (f'"{name}"' in c or f"'{name}'" in c) for c in cells), \
        f'{spec.notebook} has no code cell calling write_figure(..., "{name}")'


@pytest.mark.parametrize("name", ["loss_curves", "mini_results", "ablations", "efficiency"])
def test_csv_equals_the_data_computed_now(name):
    assert ff.README_FIGURES[name].tolerance is None  # exact: read from committed files, no model run
    assert ff.check_readme_figure(name) == []


def test_affinity_csv_matches_recomputed_affinities():
    """The mini ViT on the first 250 training images of 3 committed tasks (about 15 s on 2 cores)."""
    assert ff.README_FIGURES["affinity_heatmaps"].tolerance == "affinity"
    data = ff.committed_data("affinity_heatmaps")
    assert list(dict.fromkeys(data["task"])) == ["mini_mnist", "mini_ihc_dab", "mini_dsprites_loc"]
    assert len(data) == 3 * 12 * 12
    assert ff.check_readme_figure("affinity_heatmaps", data=data) == []


def perturbed_copy(tmp_path, name, row, column, delta):
    frame = pd.read_csv(FOLDER / f"{name}.csv")
    frame.loc[row, column] = frame.loc[row, column] + delta
    path = tmp_path / f"{name}.csv"
    path.write_text(ff.frame_to_csv(frame), encoding="utf-8")
    return path


@pytest.mark.parametrize("name,column", [("loss_curves", "ce"), ("mini_results", "mean"),
                                         ("efficiency", "median_s")])
def test_a_changed_value_is_reported(tmp_path, name, column):
    data = ff.committed_data(name)
    assert ff.csv_differences(FOLDER / f"{name}.csv", data) == []
    diffs = ff.csv_differences(perturbed_copy(tmp_path, name, 3, column, 0.01), data)
    assert len(diffs) == 1 and diffs[0].startswith("line 5:")  # header is line 1, row 3 is line 5
    shorter = tmp_path / "short.csv"
    shorter.write_text("".join((FOLDER / f"{name}.csv").read_text().splitlines(keepends=True)[:-1]))
    assert any("lines in the file" in d for d in ff.csv_differences(shorter, data))
    assert ff.csv_differences(tmp_path / "missing.csv", data) == [f"{tmp_path / 'missing.csv'} does not exist"]


def test_affinity_comparison_uses_the_repro_tolerance(tmp_path):
    from shiplib.repro import tolerance

    atol = tolerance("affinity").atol
    committed = pd.read_csv(FOLDER / "affinity_heatmaps.csv")  # stands in for a recomputation (no model run)
    far = perturbed_copy(tmp_path, "affinity_heatmaps", 17, "affinity", 10 * atol)
    (diff,) = ff.csv_differences(far, committed, "affinity")
    assert diff.startswith("row 17, affinity")
    near = perturbed_copy(tmp_path, "affinity_heatmaps", 17, "affinity", atol / 10)
    assert ff.csv_differences(near, committed, "affinity") == []
    renamed = committed.assign(task=committed["task"].str.replace("mini_mnist", "mini_svhn"))
    assert any("task" in d for d in ff.csv_differences(FOLDER / "affinity_heatmaps.csv", renamed, "affinity"))


def test_write_figure_is_deterministic_atomic_and_theme_independent(tmp_path):
    import seaborn as sns

    history = history_frame(REPO / "results", task="mini_mnist", runs=["vpt_deep", "ship"])
    first = ff.write_figure(*ff.loss_curves_figure(history), "curves", folder=tmp_path / "a")
    with plt.rc_context():
        sns.set_theme(context="poster", style="darkgrid", palette="bright", font_scale=1.3)  # a caller's theme
        second = ff.write_figure(*ff.loss_curves_figure(history), "curves", folder=tmp_path / "b")
    assert first == tmp_path / "a" / "curves.png"
    assert first.read_bytes() == second.read_bytes()
    assert (tmp_path / "a" / "curves.csv").read_text() == (tmp_path / "b" / "curves.csv").read_text()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["curves.csv", "curves.png"]  # no temp files
    assert first.stat().st_mode & 0o777 == 0o644
    # an existing file is replaced whole
    fig, data = ff.loss_curves_figure(history)
    ff.write_figure(fig, data.iloc[:3], "curves", folder=tmp_path / "a")
    assert len(pd.read_csv(tmp_path / "a" / "curves.csv")) == 3


def test_write_figure_arguments(tmp_path):
    fig, data = ff.efficiency_figure(json.loads((REPO / "results/bench/ship_vit_base_patch16_224.json").read_text()))
    assert ff.write_figure(fig, data, "efficiency", folder=None) is None  # a notebook run that must not write
    with pytest.raises(ValueError, match="plain file name"):
        ff.write_figure(fig, data, "../escape", folder=tmp_path)
    with pytest.raises(TypeError, match="DataFrame"):
        ff.write_figure(fig, "efficiency", data, folder=tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyError, match="unknown README figure"):
        ff.committed_data("nope")


def test_figure_data_is_what_is_plotted():
    import numpy as np

    affinities = {"a": np.array([[1.0, 0.5], [0.5, 1.0]]), "b": np.array([[1.0, 0.25], [0.25, 1.0]])}
    fig, data = ff.affinity_heatmaps_figure(affinities)
    assert list(data.columns) == ["task", "i", "j", "affinity"] and len(data) == 8
    assert data.loc[(data.task == "b") & (data.i == 0) & (data.j == 1), "affinity"].item() == 0.25
    np.testing.assert_array_equal(ff.affinity_matrices(data)["a"], affinities["a"])
    heat = [ax for ax in fig.axes if ax.get_title() == "b"][0]
    np.testing.assert_array_equal(np.asarray(heat.collections[0].get_array()).reshape(2, 2), affinities["b"])

    bench = json.loads((REPO / "results/bench/ship_vit_base_patch16_224.json").read_text())
    fig, data = ff.efficiency_figure(bench)
    assert data.set_index(["mode", "variant"]).loc[("train", "ship (reference)"), "median_s"] == \
        bench["reference_train_s"]
    train_ax = fig.axes[1]
    assert [p.get_width() for p in train_ax.patches] == data[data["mode"] == "train"]["median_s"].tolist()
