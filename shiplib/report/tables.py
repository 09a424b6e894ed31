"""Result tables: VTAB-1k beside the published numbers, mini-VTAB as mean ± std over seeds.

Every table is a pandas DataFrame of numbers first (accuracies in %), formatted only at the end.
Two reporting protocols are never mixed in one row:
- "last epoch" (`acc_last`): accuracy after the final epoch, the main number (VPT's protocol);
- "max over epochs" (`acc_max_over_epochs`): best accuracy over the evaluated epochs, selected on the
  evaluation split (SHIP's and NOAH's protocol; optimistic when that split is the test set).
Group means are given only when every task of the group has a value; the overall mean in both conventions:
"mean (3g)" = mean of the three group means (the papers' convention) and "mean (N)" = mean over all N tasks.
The benchmark tables show the methods' own (untagged) runs; tagged runs (ablation variants such as `ship+no-sip`,
tune runs such as `ship+lr1e-3`) are included only on request (`include_tagged=True`).
For reading, `footnotes` moves long text columns (source, note) into a separate footnote table and
`format_numbers` renders numbers with fixed decimals (a plain DataFrame: the same text on every machine).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from .. import repro
from ..data.tasks import GROUPS, get_task, list_tasks
from ..engine.defaults import official_settings, published_results
from ..engine.results import load_results, read_result, result_path, run_name
from ..utils.io import atomic_write_text
from ..utils.checks import choice
from ..utils.units import format_seconds

METRICS = {
    "acc_last": "last epoch",
    "acc_max_over_epochs": "max over epochs",
}
METRIC_NOTES = {
    "acc_last": "accuracy after the last epoch (main number)",
    "acc_max_over_epochs": "best accuracy over the evaluated epochs, selected on the evaluation split "
                           "(optimistic when that split is the test set)",
}
#: The methods in display order (tables and figures).
METHODS = ("linear", "full", "vpt_shallow", "vpt_deep", "spt", "sep", "ship")
MEAN_3G = "mean (3g)"
#: The published row whose trainable-parameter counts ship with shiplib (official_settings(), per task).
OFFICIAL_SHIP_ROW = "SHIP official"


def check_metric(metric: str) -> str:
    return choice("metric", metric, METRICS)


def run_label(method: str, tag=None) -> str:
    """`run_name` of a results frame's row, whose missing tag may be None, NaN or ""."""
    return run_name(method, None if tag is None or (isinstance(tag, float) and np.isnan(tag)) or tag == "" else tag)


def task_order(benchmark: str | None) -> list[str]:
    """The benchmark's tasks (None: every registered task), grouped natural → specialized → structured (registry
    order inside a group)."""
    tasks = list_tasks(benchmark=benchmark)
    if not tasks:
        raise ValueError(f"no tasks registered for benchmark {benchmark!r} (vtab1k: VTAB-1k; mini: mini-VTAB, "
                         "registered by shiplib.data.mini_vtab)")
    return [t for g in GROUPS for t in tasks if get_task(t).group == g]


def mean_all_label(benchmark: str) -> str:
    return f"mean ({len(task_order(benchmark))})"


def is_untagged(df: pd.DataFrame) -> pd.Series:
    """Rows of a results frame that are a method's own run (no tag), as opposed to ablation/tune variants."""
    if "tag" not in df:
        return pd.Series(True, index=df.index)
    return df["tag"].isna() | (df["tag"].astype(str) == "")


def grid_rows(df: pd.DataFrame, tag: str | None) -> pd.DataFrame:
    """The rows of one grid of runs in a frame of results or histories: the untagged runs (`tag=None`) or those
    tagged `tag` (a protocol's grid, such as `scaled-e20`), under plain method names (the tag dropped, `run` = the
    method where the frame has runs), so that a grid's tables compare method with method."""
    if df.empty:
        return df
    df = df[is_untagged(df) if tag is None else df["tag"] == tag].assign(tag=None)
    return (df.assign(run=df["method"]) if "run" in df else df).reset_index(drop=True)


def select_runs(df: pd.DataFrame, include_tagged: bool = False, grid_tag: str | None = None) -> pd.DataFrame:
    """`df` without tagged runs unless `include_tagged` (see the module docstring); with `grid_tag`, the runs of
    that tag's grid under plain method names instead (`grid_rows`)."""
    if grid_tag is not None:
        return grid_rows(df, grid_tag)
    if include_tagged or df.empty:
        return df
    return df[is_untagged(df)]


def with_run_column(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["run"] = [run_label(m, t) for m, t in zip(out["method"], out["tag"])]
    return out


def seed_summary(df: pd.DataFrame, metric: str = "acc_last") -> pd.DataFrame:
    """Per (benchmark, run, task): mean, std (ddof=1, NaN for one seed), number of seeds and the seeds."""
    check_metric(metric)
    cols = ["benchmark", "run", "task", "group", "mean", "std", "n_seeds", "seeds"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    runs = with_run_column(df)
    g = runs.groupby(["benchmark", "run", "task", "group"], sort=False)[metric]
    out = g.agg(mean="mean", std="std", n_seeds="count").reset_index()
    out["seeds"] = [sorted(int(s) for s in runs.loc[idx, "seed"]) for idx in g.groups.values()]
    return out[cols]


def group_means(wide: pd.DataFrame, benchmark: str) -> pd.DataFrame:
    """Group means and both overall means of a (rows × task) accuracy frame.

    A group mean is NaN unless every task of the group has a value; the overall means likewise.
    """
    tasks = task_order(benchmark)
    out = pd.DataFrame(index=wide.index)
    groups = [g for g in GROUPS if any(get_task(t).group == g for t in tasks)]
    for g in groups:
        cols = [t for t in tasks if get_task(t).group == g]
        block = wide.reindex(columns=cols)
        out[g] = block.mean(axis=1).where(block.notna().all(axis=1))
    out[MEAN_3G] = out[groups].mean(axis=1).where(out[groups].notna().all(axis=1))
    full = wide.reindex(columns=tasks)
    out[mean_all_label(benchmark)] = full.mean(axis=1).where(full.notna().all(axis=1))
    return out


def _accuracy_wide(summary: pd.DataFrame, tasks: list[str], value: str = "mean") -> pd.DataFrame:
    if summary.empty:
        return pd.DataFrame(columns=tasks, dtype=float)
    wide = summary.pivot(index="run", columns="task", values=value)
    order = list(dict.fromkeys(summary["run"]))
    return wide.reindex(index=order, columns=tasks).astype(float)


def published_protocol(note: str) -> str:
    """The reporting protocol named in a published row's note ("last epoch" / "max over epochs")."""
    text = str(note).lower()
    if text.startswith("last-epoch") or "last epoch" in text:
        return METRICS["acc_last"]
    if "max test accuracy" in text or "max over" in text or "best epoch" in text:
        return METRICS["acc_max_over_epochs"]
    return "see note"


def published_seeds(note: str) -> str:
    """The number of seeds behind a published row, as its note states it ("mean of 5 seeds" -> "5"; "single run",
    "seed 1" -> "1"); "?" when the note does not say."""
    text = str(note).lower()
    m = re.search(r"mean of (\d+) (?:seeds|runs)", text)
    if m:
        return m.group(1)
    if "single run" in text or re.search(r"\bseed \d+\b", text):
        return "1"
    return "?"


def published_table() -> pd.DataFrame:
    """Published VTAB-1k accuracies, one row per method: tasks, group means, protocol, seeds (as the note states
    them), source, note."""
    pub = published_results()
    tasks = task_order("vtab1k")
    wide = pub.pivot(index="method", columns="task", values="accuracy")
    order = list(dict.fromkeys(pub["method"]))
    wide = wide.reindex(index=order, columns=tasks).astype(float)
    meta = pub.groupby("method", sort=False).first().reindex(order)
    out = pd.concat([wide, group_means(wide, "vtab1k")], axis=1)
    settings = official_settings()
    official_params = np.mean([s["official_trainable_parameters"] for s in settings.values()]) / 1e6
    out["params (M)"] = [official_params if m == OFFICIAL_SHIP_ROW else np.nan for m in order]
    out["protocol"] = [published_protocol(n) for n in meta["note"]]
    out["seeds"] = [published_seeds(n) for n in meta["note"]]
    out["source"] = "published: " + meta["source"]
    out["note"] = meta["note"]
    out.index = [f"{m} (published)" for m in order]
    return out


def _params_millions(df: pd.DataFrame, column: str = "params.trainable") -> pd.Series:
    if df.empty or column not in df:
        return pd.Series(dtype=float)
    per_task = with_run_column(df).groupby(["run", "task"], sort=False)[column].mean()
    return per_task.groupby(level="run", sort=False).mean() / 1e6


def _seeds_text(summary: pd.DataFrame) -> pd.Series:
    if summary.empty:
        return pd.Series(dtype=object)

    def text(rows):
        counts = sorted(set(rows["n_seeds"]))
        return "/".join(str(c) for c in counts)

    return summary.groupby("run", sort=False)[["n_seeds"]].apply(text)


def ours_table(df: pd.DataFrame, benchmark: str, metric: str, include_tagged: bool = False) -> pd.DataFrame:
    """Our runs (mean over seeds) for one metric: tasks, group means, params, protocol, seeds (seeds per task),
    source, note. Untagged runs only unless `include_tagged`."""
    tasks = task_order(benchmark)
    df = select_runs(df, include_tagged)
    summary = seed_summary(df[df["benchmark"] == benchmark] if not df.empty else df, metric)
    wide = _accuracy_wide(summary, tasks)
    out = pd.concat([wide, group_means(wide, benchmark)], axis=1)
    out["params (M)"] = _params_millions(df[df["benchmark"] == benchmark] if not df.empty else df).reindex(out.index)
    out["protocol"] = METRICS[metric]
    out["seeds"] = _seeds_text(summary).reindex(out.index)
    out["source"] = "ours: results/"
    out["note"] = METRIC_NOTES[metric] + "; mean over seeds"
    out.index = [f"{run} (ours, {METRICS[metric]})" for run in out.index]
    return out


def vtab1k_table(results_dir="results", protocol: str = "final",
                 metrics=("acc_last", "acc_max_over_epochs"), published: bool = True,
                 include_tagged: bool = False) -> pd.DataFrame:
    """VTAB-1k: our runs (one row per run and metric) followed by the published rows.

    Columns: protocol, "mean (3g)", "mean (19)" first, then the 19 tasks, natural/specialized/structured,
    "params (M)" (mean trainable parameters over tasks, head included), seeds (seeds per task; for published rows as
    their note states it), source, note (long texts: show them with `footnotes`). Works with no results. Our rows are
    the methods' untagged runs; `include_tagged=True` adds ablation variants (`ship+no-sip`, ...).
    """
    df = select_runs(load_results(results_dir, protocol=protocol, benchmark="vtab1k"), include_tagged)
    parts = [ours_table(df, "vtab1k", check_metric(m), include_tagged) for m in metrics] if not df.empty else []
    if published:
        parts.append(published_table())
    table = pd.concat(parts) if parts else ours_table(df, "vtab1k", "acc_last")
    # protocol and means first: visible without scrolling, so no row is compared with another protocol's unawares
    lead = [c for c in ("protocol", MEAN_3G, mean_all_label("vtab1k")) if c in table.columns]
    return table[lead + [c for c in table.columns if c not in lead]]


def benchmark_summary(results_dir="results", benchmark: str = "mini", metric: str = "acc_last",
                      protocol: str = "final", include_tagged: bool = True,
                      grid_tag: str | None = None) -> pd.DataFrame:
    """A benchmark's runs as a long frame: benchmark, run, task, group, mean, std, n_seeds, seeds.

    Every run by default, tagged ones (ablation variants) included: it feeds figures, which choose their runs
    (`plot_task_accuracies` shows the untagged ones unless asked). `include_tagged=False`: the methods' own runs;
    `grid_tag`: the runs of that tag's grid (`select_runs`).
    """
    df = select_runs(load_results(results_dir, protocol=protocol, benchmark=benchmark), include_tagged, grid_tag)
    return seed_summary(df, metric)


def seed_std_of_task_mean(df: pd.DataFrame, metric: str, tasks: list[str]) -> pd.Series:
    """Per run: std over seeds of each seed's mean over `tasks` (only seeds that cover every task; NaN if < 2)."""
    out = {}
    for run, sub in with_run_column(df).groupby("run", sort=False):
        per_seed = sub.pivot_table(index="seed", columns="task", values=metric).reindex(columns=tasks).dropna()
        out[run] = per_seed.mean(axis=1).std() if len(per_seed) > 1 else np.nan
    return pd.Series(out, dtype=float)


def format_mean_std(mean, std, decimals: int = 1) -> str:
    if mean is None or pd.isna(mean):
        return ""
    if std is None or pd.isna(std):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def mini_table(results_dir="results", metric: str = "acc_last", protocol: str = "final",
               decimals: int = 1, include_tagged: bool = False, grid_tag: str | None = None) -> pd.DataFrame:
    """mini-VTAB: one row per run, "mean ± std" over seeds per task, then group means and both overall means
    (the methods' untagged runs; `include_tagged=True` adds ablation variants; `grid_tag`: that tag's grid)."""
    return seed_table(results_dir, "mini", metric, protocol, decimals, include_tagged, grid_tag)


def overview_table(results_dir="results", benchmark: str = "mini", metric: str = "acc_last",
                   protocol: str = "final", decimals: int = 1, grid_tag: str | None = None) -> pd.DataFrame:
    """The compact table of the README: one row per method (`METHODS` order), "mean ± std" over seeds per task
    (short task names), the mean over tasks with the std over seeds of each seed's task mean, the trainable
    parameters with the head (mean over tasks: heads and SHIP's levels differ by task) and the number of runs.
    The methods' untagged runs, or with `grid_tag` the runs of that tag's grid."""
    check_metric(metric)
    df = select_runs(load_results(results_dir, protocol=protocol, benchmark=benchmark), grid_tag=grid_tag)
    tasks = task_order(benchmark)
    summary = seed_summary(df, metric)
    means, stds = _accuracy_wide(summary, tasks, "mean"), _accuracy_wide(summary, tasks, "std")
    runs = [m for m in METHODS if m in means.index] + sorted(set(means.index) - set(METHODS))
    out = pd.DataFrame(index=pd.Index(runs, name="method"))
    for t in tasks:
        out[t.removeprefix(f"{benchmark}_")] = [format_mean_std(means.loc[r, t], stds.loc[r, t], decimals)
                                                for r in runs]
    spread = seed_std_of_task_mean(df, metric, tasks)
    out[f"mean of {len(tasks)}"] = [format_mean_std(means.loc[r, tasks].mean(skipna=False), spread.get(r), decimals)
                                    for r in runs]  # blank unless every task has a result
    trainable = with_run_column(df).groupby(["run", "task"])["params.trainable"].mean().groupby(level="run").mean()
    out["trainable (with head, mean over tasks)"] = [f"{round(trainable[r]):,}" for r in runs]
    out["runs"] = with_run_column(df).groupby("run").size().reindex(runs).astype(int).astype(str)
    return out


def seed_table(results_dir="results", benchmark: str = "mini", metric: str = "acc_last", protocol: str = "final",
               decimals: int = 1, include_tagged: bool = False, grid_tag: str | None = None) -> pd.DataFrame:
    """One row per run, "mean ± std" over seeds per task, then group means and both overall means.

    The overall means are means of the per-task means; "seed std of mean (N)" is the std over seeds of each
    seed's mean over all N tasks (seeds that cover every task); "seeds" the number of seeds per task ("2/3" when
    tasks differ). Rows: the methods' untagged runs; `include_tagged=True` adds tagged runs (ablation variants,
    usually one seed on a few tasks, so without group means); `grid_tag`: the runs of that tag's grid instead.
    """
    check_metric(metric)
    df = select_runs(load_results(results_dir, protocol=protocol, benchmark=benchmark), include_tagged, grid_tag)
    tasks = task_order(benchmark)
    summary = seed_summary(df, metric)
    means, stds = _accuracy_wide(summary, tasks, "mean"), _accuracy_wide(summary, tasks, "std")
    out = pd.DataFrame(index=means.index)
    for t in tasks:
        out[t] = [format_mean_std(m, s, decimals) for m, s in zip(means[t], stds[t])]
    agg = group_means(means, benchmark)
    for col in agg:
        out[col] = agg[col].round(decimals)
    spread = seed_std_of_task_mean(df, metric, tasks) if not df.empty else pd.Series(dtype=float)
    out[f"seed std of {mean_all_label(benchmark)}"] = spread.reindex(out.index).round(decimals)
    out["seeds"] = _seeds_text(summary).reindex(out.index)
    out["protocol"] = METRICS[metric]
    return out


def result_summary(result: dict, committed_dir=None) -> pd.DataFrame:
    """One run's headline numbers as a two-column table (value, meaning).

    With `committed_dir`, an accuracy of a run that the committed results hold with the same settings reads
    "measured <value>, reference <committed value> ±<tolerance> (reproduced)", or "(not reproduced: beyond the
    tolerance)", by `shiplib.repro`'s cross-machine tolerance. The wall time is rendered as `<number> s`. No
    paths, dates or host names.
    """
    committed = committed_twin(result, committed_dir)[1] if committed_dir is not None else None

    def accuracy(metric: str):
        if committed is None:
            return round(result[metric], 2)
        check = repro.compare(metric, "accuracy", result[metric], committed[metric], result["method"])
        tol = repro.tolerance("accuracy", result["method"]).describe()
        verdict = "reproduced" if check.ok else "not reproduced: beyond the tolerance"
        return f"measured {result[metric]:.2f}, reference {committed[metric]:.2f} {tol} ({verdict})"

    best = "" if committed is not None else f"; best at epoch {result['max_epoch']}"
    params = result.get("parameters") or {}
    rows = [
        ("task", result["task"], f"benchmark {result['benchmark']}, group {result.get('group')}"),
        ("run", run_label(result["method"], result.get("tag")),
         f"seed {result['seed']}, protocol {result['protocol']}"),
        ("epochs", result["epochs"], f"train {result['train_split']} ({result.get('train_size')} images), "
                                     f"evaluate {result['eval_split']} ({result.get('eval_size')} images)"),
        ("acc_last (%)", accuracy("acc_last"), METRIC_NOTES["acc_last"]),
        ("acc_max_over_epochs (%)", accuracy("acc_max_over_epochs"), METRIC_NOTES["acc_max_over_epochs"] + best),
        ("trainable parameters", params.get("trainable"), f"{params.get('head')} of them in the head; "
                                                          f"{params.get('total')} in total"),
        ("wall time", format_seconds(result.get("wall_time_s")),
         f"device {result.get('device')}, threads {result.get('threads')}"),
    ]
    return pd.DataFrame(rows, columns=["item", "value", "meaning"]).set_index("item")


def comparable_published(task: str, metric: str) -> pd.DataFrame:
    """Published accuracies for a VTAB-1k task under the same protocol as `metric` (empty for other tasks)."""
    check_metric(metric)
    pub = published_results()
    pub = pub[pub["task"] == task].copy()
    pub["protocol"] = [published_protocol(n) for n in pub["note"]]
    return pub[pub["protocol"] == METRICS[metric]][["method", "accuracy", "protocol", "note"]].reset_index(drop=True)


def task_comparison(result: dict) -> pd.DataFrame:
    """A run's two accuracies beside the published ones for its task, each labelled with its protocol.

    Compare only rows with the same protocol; published rows exist for VTAB-1k tasks only.
    """
    pub = published_results()
    pub = pub[pub["task"] == result["task"]]
    if pub.empty:
        return pd.DataFrame(columns=["accuracy", "protocol", "note"]).rename_axis(
            f"no published numbers for {result['task']} ({result['benchmark']})")
    label = run_label(result["method"], result.get("tag"))
    rows = [dict(method=f"{label} (this run, seed {result['seed']})", accuracy=result[m], protocol=METRICS[m],
                 note=METRIC_NOTES[m]) for m in METRICS]
    for _, r in pub.iterrows():
        rows.append(dict(method=f"{r['method']} (published)", accuracy=r["accuracy"],
                         protocol=published_protocol(r["note"]), note=r["note"]))
    frame = pd.DataFrame(rows)
    order = {p: i for i, p in enumerate(METRICS.values())}
    return frame.sort_values("protocol", key=lambda s: s.map(order).fillna(len(order)), kind="stable") \
        .set_index("method")


def committed_twin(result: dict, committed_dir="results") -> tuple[str, dict | None]:
    """The committed result of the same (task, run, seed, protocol) as `result` and made with the same settings,
    as (its path as shown, the result or None)."""
    path = result_path(committed_dir, result["benchmark"], result["task"],
                       run_name(result["method"], result.get("tag")), result["seed"], result["protocol"])
    shown = display_path(path, committed_dir)
    if not path.is_file():
        return shown, None
    committed = read_result(path)
    return shown, committed if committed.get("identity") == result.get("identity") else None


def committed_comparison(result: dict, committed_dir="results") -> pd.DataFrame:
    """This run against the committed run with the same settings, within `shiplib.repro`'s cross-machine
    tolerances: reference value, tolerance and verdict per quantity (the same table on every machine that
    reproduces the run; this run's own numbers are in its result file and `result_summary`)."""
    shown, committed = committed_twin(result, committed_dir)
    if committed is None:
        return repro.comparison_table([]).rename_axis(f"no committed run with the same settings at {shown}")
    checks = repro.result_comparisons(result, committed)
    return repro.comparison_table(checks).rename_axis(f"{shown}: reproduced {repro.all_reproduced(checks)}")


def display_path(path, root) -> str:
    """`path` as `<name of root>/<path inside root>` (e.g. results/mini/…/seed1.json): never an absolute path."""
    path, root = Path(path), Path(root)
    try:
        inside = path.resolve().relative_to(root.resolve())
    except ValueError:
        return path.name
    return (Path(root.resolve().name) / inside).as_posix()


def footnotes(table: pd.DataFrame, columns=("source", "note"), label: str = "ref") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Move long text columns out of a table for reading: returns (table, notes).

    `table` loses `columns` and gains a short `label` column ("[1]", "[2]", … numbered by first appearance; rows
    with the same texts share a number); `notes` holds the texts in full, one row per number (show it with
    `pd.set_option("display.max_colwidth", None)`). Columns not in the table are skipped.
    """
    cols = [c for c in columns if c in table.columns]
    if not cols:
        return table.copy(), pd.DataFrame(columns=list(columns)).rename_axis(label)
    keys = [tuple("" if pd.isna(v) else str(v) for v in row) for row in table[cols].itertuples(index=False)]
    numbers = {k: f"[{i}]" for i, k in enumerate(dict.fromkeys(keys), 1)}
    out = table.drop(columns=cols)
    out[label] = [numbers[k] for k in keys]
    notes = pd.DataFrame(list(numbers), columns=cols, index=pd.Index(list(numbers.values()), name=label))
    return out, notes


def format_numbers(frame: pd.DataFrame, decimals: int = 1, na_rep: str = "–") -> pd.DataFrame:
    """A copy of `frame` for reading: every float cell as text with `decimals` decimals, missing values as
    `na_rep`, other cells unchanged. A plain DataFrame (a Styler's HTML carries a random id), so the output is the
    same text on every machine."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return na_rep if np.isnan(v) else f"{v:.{decimals}f}"
        if v is None or (not isinstance(v, (str, list, tuple, dict)) and pd.isna(v)):
            return na_rep
        return v

    return frame.apply(lambda col: col.map(cell)).astype(object)


def markdown_table(frame: pd.DataFrame, index: bool = True) -> str:
    """A GitHub-flavoured markdown table of `frame` (cells as printed; no extra dependency)."""
    df = frame.reset_index() if index else frame
    cells = [[("" if pd.isna(v) else str(v)) if not isinstance(v, str) else v for v in row]
             for row in df.itertuples(index=False)]
    head = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def write_tables(results_dir="results", out_dir="results/tables", protocol: str = "final",
                 metrics=("acc_last", "acc_max_over_epochs"), decimals: int = 1, include_tagged: bool = False) -> list:
    """Render the VTAB-1k and mini-VTAB tables as CSV and markdown files (written atomically); returns the paths."""
    out, paths = Path(out_dir), []
    frames = {f"vtab1k_{protocol}": vtab1k_table(results_dir, protocol=protocol, metrics=list(metrics),
                                                 include_tagged=include_tagged)}
    for m in metrics:
        frames[f"mini_{protocol}_{m}"] = mini_table(results_dir, metric=m, protocol=protocol, decimals=decimals,
                                                    include_tagged=include_tagged)
    for name, frame in frames.items():
        paths.append(atomic_write_text(out / f"{name}.csv", frame.to_csv()))
        paths.append(atomic_write_text(out / f"{name}.md", markdown_table(frame)))
    return paths
