"""The README's key figures as committed files: `docs/figures/<name>.png` plus `<name>.csv` with the data plotted.

Each figure has one function that returns (figure, data) from what its notebook already holds, so that a notebook
cell is one line::

    write_figure(*loss_curves_figure(history), "loss_curves")

`README_FIGURES` names the figures and the notebook that writes each; `committed_data(name)` recomputes a figure's
data from the committed inputs (results/, the mini ViT and mini-VTAB data) exactly as that notebook does with its
default parameters, and `csv_differences` compares it with the committed CSV: exactly (after `FLOAT_FORMAT`), or
for numbers re-computed by a model (the affinities) within `shiplib.repro`'s tolerance for their kind.

Files are reproducible: a fixed style (not the caller's theme) for the figure functions and for saving, a fixed
dpi, no PNG metadata that changes (no "Software" version), CSV floats in `FLOAT_FORMAT`, and atomic writes (a
temporary file in the same folder, then `os.replace`).
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from cycler import cycler

from ..bench import load_bench
from ..repro import tolerance as repro_tolerance, within
from ..utils.paths import find_repo_root
from . import figures
from .ablations import ablation_paired_frame, ablation_results, rounded
from .affinity import task_affinities
from .claims import MAIN_GRID, grid_tag
from .histories import history_frame
from .notebook import pick_tasks
from .tables import benchmark_summary

#: Where the README figures live (relative to the repository root, the notebooks' working folder).
FIGURES_DIR = "docs/figures"
#: Resolution of the written PNGs (a PAGE_WIDTH-inch figure is about 1000 px wide).
DPI = 100
#: Float format of the written CSVs (6 significant digits: stable text for the same numbers).
FLOAT_FORMAT = "%.6g"


@dataclass(frozen=True)
class ReadmeFigure:
    name: str
    notebook: str          # the notebook (repository-relative) whose run writes the figure
    caption: str
    tolerance: str | None  # a `shiplib.repro` kind for the float columns; None: exactly equal after FLOAT_FORMAT


#: The figures the README shows, in README order.
README_FIGURES: dict[str, ReadmeFigure] = {f.name: f for f in (
    ReadmeFigure("affinity_heatmaps", "notebooks/affinity.ipynb",
                 "Inter-layer affinity of the frozen mini ViT on the first task of each mini-VTAB group "
                 "(paper Fig. 1(b))", "affinity"),
    ReadmeFigure("loss_curves", "notebooks/loss_curves.ipynb",
                 "Training cross-entropy and loss per epoch, VPT-deep vs SHIP on mini_mnist (paper Fig. 3)", None),
    ReadmeFigure("mini_results", "notebooks/results.ipynb",
                 "mini-VTAB test accuracy (last epoch) per task and method on the scaled grid, mean ± std over "
                 "seeds", None),
    ReadmeFigure("ablations", "notebooks/ablations.ipynb",
                 "SHIP's ablations on mini-VTAB: each variant minus full SHIP, paired over (task, seed), 95 % CI",
                 None),
    ReadmeFigure("efficiency", "notebooks/efficiency.ipynb",
                 "Eval and training-step time of SHIP (fast path, reference) vs the plain timm ViT-B/16 "
                 "(saved benchmark)", None),
)}

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


# ----- style: the same figure whatever theme the caller has set -----
def readme_rc() -> dict:
    """rcParams of the README figures: seaborn's "whitegrid" style and "notebook" context (what `setup_notebook`
    sets), DejaVu Sans (shipped with matplotlib), white background, matplotlib's default text rendering."""
    return {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook"),
            "axes.prop_cycle": cycler(color=sns.color_palette("deep")),
            "font.family": ["sans-serif"], "font.sans-serif": ["DejaVu Sans"],
            "figure.facecolor": "white", "savefig.facecolor": "white", "savefig.edgecolor": "white",
            "savefig.transparent": False, "text.hinting": "force_autohint", "text.hinting_factor": 8,
            "text.antialiased": True, "text.kerning_factor": 0, "path.simplify": True}


@contextlib.contextmanager
def readme_style():
    with plt.rc_context(readme_rc()):
        yield


# ----- writing -----
def frame_to_csv(data: pd.DataFrame) -> str:
    """The CSV text written for a figure's data: no index, floats in FLOAT_FORMAT, "\\n" line ends."""
    return data.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


def _atomic_write(path: Path, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def png_bytes(fig, dpi: int = DPI) -> bytes:
    """The PNG of `fig` as `write_figure` writes it (fixed style, dpi and metadata)."""
    buf = io.BytesIO()
    with readme_style():
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.1, facecolor="white",
                    metadata={"Software": None})
    return buf.getvalue()


def write_figure(fig, data: pd.DataFrame, name: str, folder: str | os.PathLike | None = FIGURES_DIR,
                 dpi: int = DPI) -> Path | None:
    """Write `<folder>/<name>.png` (the figure) and `<folder>/<name>.csv` (`data`, the values plotted), each
    atomically; return the PNG's path. (fig, data) come first so that `write_figure(*loss_curves_figure(h),
    "loss_curves")` works. `folder=None` writes nothing (returns None), e.g. for a notebook run with
    non-default parameters. The figure stays open (a notebook still shows it)."""
    if folder is None:
        return None
    if not _NAME.match(name):
        raise ValueError(f"figure name must be a plain file name (letters, digits, _ . -), got {name!r}")
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame (the values plotted), got {type(data).__name__}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{name}.png"
    _atomic_write(png, png_bytes(fig, dpi))
    _atomic_write(folder / f"{name}.csv", frame_to_csv(data).encode("utf-8"))
    return png


# ----- the data of each figure (pure functions of the notebook's inputs) -----
def affinity_data(affinities: dict) -> pd.DataFrame:
    """Affinity matrices in long form: task, i, j, affinity (row-major per task, tasks in the given order)."""
    rows = []
    for task, A in affinities.items():
        A = np.asarray(A, dtype=np.float64)
        ii, jj = np.indices(A.shape)
        rows.append(pd.DataFrame(dict(task=task, i=ii.ravel(), j=jj.ravel(), affinity=A.ravel())))
    if not rows:
        raise ValueError("no affinity matrices")
    return pd.concat(rows, ignore_index=True)


def affinity_matrices(data: pd.DataFrame) -> dict:
    """The inverse of `affinity_data`: {task: (L, L) float64 matrix}."""
    out = {}
    for task, sub in data.groupby("task", sort=False):
        n = int(sub["i"].max()) + 1
        A = np.full((n, n), np.nan)
        A[sub["i"].to_numpy(int), sub["j"].to_numpy(int)] = sub["affinity"].to_numpy(float)
        out[task] = A
    return out


def loss_curves_data(history: pd.DataFrame, columns=("ce", "loss")) -> pd.DataFrame:
    """The history rows plotted: task, run, seed, epoch and the plotted columns, sorted."""
    cols = ["task", "run", "seed", "epoch", *columns]
    return history[cols].sort_values(["task", "run", "seed", "epoch"]).reset_index(drop=True)


def mini_results_data(summary: pd.DataFrame, runs=None) -> pd.DataFrame:
    """Per task (benchmark order) and run (METHODS order): mean and std over seeds and the number of seeds.
    `runs`: None keeps the untagged method runs (as `plot_task_accuracies`)."""
    runs = figures.method_order([r for r in summary["run"] if "+" not in r] if runs is None else runs)
    sub = summary[summary["run"].isin(runs)]
    tasks = figures._task_list(sub)
    sub = sub.assign(_t=sub["task"].map(tasks.index), _r=sub["run"].map(runs.index)).sort_values(["_t", "_r"])
    return sub[["task", "group", "run", "mean", "std", "n_seeds"]].astype({"n_seeds": int}).reset_index(drop=True)


#: (mode, variant) -> the key of a `run_bench` result (its `samples_s` key is the same without "_s").
BENCH_TIMES = {("eval", "timm"): "timm_eval_s", ("eval", "ship"): "eval_s",
               ("eval", "ship (reference)"): "reference_eval_s", ("train", "timm"): "timm_train_floor_s",
               ("train", "ship"): "train_s", ("train", "ship (reference)"): "reference_train_s"}


def efficiency_data(bench: dict) -> pd.DataFrame:
    """Seconds per batch from a saved benchmark (`shiplib.bench.load_bench`): mode, variant, median_s (the
    benchmark's median), min_s and max_s over the timed repeats, n_repeats. Train "timm" is the plain blocks'
    forward+backward floor."""
    rows = []
    for (mode, variant), key in BENCH_TIMES.items():
        if key not in bench:
            continue
        samples = bench.get("samples_s", {}).get(key[:-2], [bench[key]])
        rows.append(dict(mode=mode, variant=variant, median_s=float(bench[key]), min_s=float(min(samples)),
                         max_s=float(max(samples)), n_repeats=len(samples)))
    if not rows:
        raise ValueError("no timings in the benchmark result (expected keys such as eval_s, train_s)")
    return pd.DataFrame(rows)


# ----- one function per README figure: (figure, data) from the notebook's inputs -----
def affinity_heatmaps_figure(affinities: dict):
    """Fig. 1(b): heat maps of the given {task: affinity} (the notebook's `heat` tasks)."""
    data = affinity_data(affinities)
    with readme_style():
        fig = figures.plot_affinity_heatmaps(affinity_matrices(data))
    return fig, data


def loss_curves_figure(history: pd.DataFrame, columns=("ce", "loss")):
    """Fig. 3: training curves of a `history_frame`, one panel per column."""
    data = loss_curves_data(history, columns)
    with readme_style():
        fig = figures.plot_loss_curves(data, columns)
    return fig, data


METRIC_TITLES = {"acc_last": "last epoch", "acc_max_over_epochs": "max over epochs"}


def mini_results_figure(summary: pd.DataFrame, metric: str = "acc_last", protocol: str = "final"):
    """mini-VTAB accuracy per task and method from `benchmark_summary(results_dir, "mini", metric, protocol)`
    (`metric` and `protocol` only name what the summary holds, in the title)."""
    data = mini_results_data(summary)
    split = {"final": "test", "tune": "val200"}.get(protocol, protocol)
    title = f"mini-VTAB {split} accuracy, {METRIC_TITLES.get(metric, metric)} (dot: mean, bar: ± std over seeds)"
    with readme_style():
        fig = figures.plot_task_accuracies(data, title=title)
    return fig, data


def ablations_data(results: pd.DataFrame, metric: str = "acc_last") -> pd.DataFrame:
    """`ablation_paired_frame` with the differences rounded to 1e-6 points: a mean of equal accuracies is 0, not
    the ±1e-16 that another summation order leaves."""
    data = ablation_paired_frame(results, metric)
    cols = ["mean_diff", "ci_low", "ci_high"]
    data[cols] = rounded(data[cols].astype(float), 6)
    return data


def ablations_figure(results: pd.DataFrame, metric: str = "acc_last"):
    """Every ablation variant's paired difference to full SHIP with its CI, from `ablation_results` (seeds as run)."""
    data = ablations_data(results, metric)
    seeds = sorted(results["seed"].unique()) if not results.empty else []
    title = f"SHIP ablations: accuracy at the {METRIC_TITLES.get(metric, metric)}, seeds {', '.join(map(str, seeds))}"
    with readme_style():
        fig = figures.plot_ablation_forest(data, title=title)
    return fig, data


def efficiency_figure(bench: dict):
    """Eval and training-step seconds per batch of a saved SHIP benchmark (`shiplib.bench.load_bench`)."""
    data = efficiency_data(bench)
    med = data.set_index(["mode", "variant"])["median_s"]
    size = bench.get("image_size", ["?"])[0]
    title = (f"{bench.get('backbone', '?')}, {size} px, batch {bench.get('batch', '?')}, "
             f"{bench.get('threads', '?')} threads, {bench.get('device', '?')}")
    ratios = []
    if ("eval", "timm") in med and ("eval", "ship") in med:
        ratios.append(f"SHIP eval = {med['eval', 'ship'] / med['eval', 'timm']:.2f} × timm")
    if ("train", "ship (reference)") in med and ("train", "ship") in med:
        ratios.append(f"training step {med['train', 'ship (reference)'] / med['train', 'ship']:.2f} × faster "
                      "than the reference")
    with readme_style():
        fig = figures.plot_bench_times(data, title=title + ("\n" + "; ".join(ratios) if ratios else ""))
    return fig, data


# ----- checking the committed files -----
def committed_data(name: str, root: str | os.PathLike | None = None, data_root=None) -> pd.DataFrame:
    """A README figure's data recomputed from the committed inputs, as its notebook computes it with default
    parameters (`root`: the repository, default: the one around the working folder)."""
    root = Path(root) if root is not None else find_repo_root()
    if root is None:
        raise FileNotFoundError("not inside the shiplib repository: pass root")
    if name == "affinity_heatmaps":
        data_root = data_root if data_root is not None else root / "data" / "mini-vtab"
        return affinity_data(task_affinities(pick_tasks("mini", 1), max_images=250, data_root=data_root))
    if name == "loss_curves":
        return loss_curves_data(history_frame(root / "results", task="mini_mnist", runs=["vpt_deep", "ship"]))
    if name == "mini_results":
        return mini_results_data(benchmark_summary(root / "results", "mini", "acc_last", "final",
                                                   grid_tag=grid_tag(MAIN_GRID)))
    if name == "ablations":
        return ablations_data(ablation_results(root / "results", "mini", seeds=(1, 2, 3)))
    if name == "efficiency":
        return efficiency_data(load_bench(root / "results" / "bench" / "ship_vit_base_patch16_224.json"))
    raise KeyError(f"unknown README figure {name!r}; known: {', '.join(README_FIGURES)}")


def csv_differences(csv_path: str | os.PathLike, data: pd.DataFrame, tolerance: str | None = None,
                    limit: int = 5) -> list[str]:
    """How a written CSV differs from `data` (empty: they agree; at most `limit` lines). `tolerance=None`: the
    text must equal `frame_to_csv(data)`; else a `shiplib.repro` kind: same columns, rows and non-float values,
    and each float within that kind's tolerance of the file's value (`shiplib.repro.within`)."""
    path = Path(csv_path)
    if not path.is_file():
        return [f"{path} does not exist"]
    text, want = path.read_text(encoding="utf-8"), frame_to_csv(data)
    if tolerance is None:
        got_lines, want_lines = text.splitlines(), want.splitlines()
        out = ([f"{len(got_lines)} lines in the file, {len(want_lines)} computed"]
               if len(got_lines) != len(want_lines) else [])
        out += [f"line {k + 1}: file {g!r} != computed {w!r}"
                for k, (g, w) in enumerate(zip(got_lines, want_lines)) if g != w]
        return out[:limit]
    describe = repro_tolerance(tolerance).describe()
    got, exp = pd.read_csv(io.StringIO(text)), pd.read_csv(io.StringIO(want))
    if list(got.columns) != list(exp.columns):
        return [f"columns {list(got.columns)} in the file, {list(exp.columns)} computed"]
    if len(got) != len(exp):
        return [f"{len(got)} rows in the file, {len(exp)} computed"]
    out = []
    for col in exp.columns:
        g, e = got[col], exp[col]
        if pd.api.types.is_float_dtype(e) or pd.api.types.is_float_dtype(g):
            g, e = g.to_numpy(float), e.to_numpy(float)
            bad = [k for k in range(len(e)) if not (np.isnan(g[k]) and np.isnan(e[k]) or within(tolerance, e[k], g[k]))]
            out += [f"row {k}, {col}: file {g[k]!r} vs computed {e[k]!r} (tolerance {describe})" for k in bad]
        else:
            bad = (g.astype(str) != e.astype(str)).to_numpy()
            out += [f"row {k}, {col}: file {g.iloc[k]!r} != computed {e.iloc[k]!r}" for k in np.flatnonzero(bad)]
    return out[:limit]


def check_readme_figure(name: str, folder: str | os.PathLike | None = None, data: pd.DataFrame | None = None,
                        **kw) -> list[str]:
    """Differences between `<folder>/<name>.csv` (default: the repository's docs/figures) and the data
    recomputed now (`committed_data`) or given."""
    spec = README_FIGURES[name]
    if folder is None:
        root = find_repo_root()
        if root is None:
            raise FileNotFoundError("not inside the shiplib repository: pass folder")
        folder = root / FIGURES_DIR
    data = committed_data(name, **kw) if data is None else data
    return csv_differences(Path(folder) / f"{name}.csv", data, spec.tolerance)
