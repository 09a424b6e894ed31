"""Result tables: VTAB-1k beside the published numbers, mini-VTAB as mean ± std over seeds.

Every table is a pandas DataFrame of numbers first (accuracies in %), formatted only at the end.
Two reporting protocols are never mixed in one row:
- "last epoch" (`acc_last`): accuracy after the final epoch, the main number (VPT's protocol);
- "max over epochs" (`acc_max_over_epochs`): best accuracy over the evaluated epochs, selected on the
  evaluation split (SHIP's and NOAH's protocol; optimistic when that split is the test set).
Group means are given only when every task of the group has a value; the overall mean in both conventions:
"mean (3g)" = mean of the three group means (the papers' convention) and "mean (N)" = mean over all N tasks.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..data.tasks import GROUPS, get_task, list_tasks
from ..engine.defaults import official_settings, published_results
from ..engine.results import load_results

METRICS = {
    "acc_last": "last epoch",
    "acc_max_over_epochs": "max over epochs",
}
METRIC_NOTES = {
    "acc_last": "accuracy after the last epoch (main number)",
    "acc_max_over_epochs": "best accuracy over the evaluated epochs, selected on the evaluation split "
                           "(optimistic when that split is the test set)",
}
MEAN_3G = "mean (3g)"
#: The published row whose trainable-parameter counts ship with shiplib (official_settings(), per task).
OFFICIAL_SHIP_ROW = "SHIP official"


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    return metric


def run_label(method: str, tag=None) -> str:
    """`method` or `method+tag`, as in the results folder."""
    return method if tag is None or (isinstance(tag, float) and np.isnan(tag)) or tag == "" else f"{method}+{tag}"


def task_order(benchmark: str) -> list[str]:
    """The benchmark's tasks, grouped natural → specialized → structured (registry order inside a group)."""
    tasks = list_tasks(benchmark=benchmark)
    if not tasks:
        raise ValueError(f"no tasks registered for benchmark {benchmark!r} (vtab1k: VTAB-1k; mini: mini-VTAB, "
                         "registered by shiplib.data.mini_vtab)")
    return [t for g in GROUPS for t in tasks if get_task(t).group == g]


def mean_all_label(benchmark: str) -> str:
    return f"mean ({len(task_order(benchmark))})"


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


def published_table() -> pd.DataFrame:
    """Published VTAB-1k accuracies, one row per method: tasks, group means, protocol, source, note."""
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
    out["seeds"] = ""
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


def ours_table(df: pd.DataFrame, benchmark: str, metric: str) -> pd.DataFrame:
    """Our runs (mean over seeds) for one metric: tasks, group means, params, protocol, seeds."""
    tasks = task_order(benchmark)
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
                 metrics=("acc_last", "acc_max_over_epochs"), published: bool = True) -> pd.DataFrame:
    """VTAB-1k: our runs (one row per run and metric) followed by the published rows.

    Columns: the 19 tasks, natural/specialized/structured, "mean (3g)", "mean (19)", "params (M)" (mean trainable
    parameters over tasks, head included), protocol, seeds (seeds per task), source, note. Works with no results.
    """
    df = load_results(results_dir, protocol=protocol, benchmark="vtab1k")
    parts = [ours_table(df, "vtab1k", check_metric(m)) for m in metrics] if not df.empty else []
    if published:
        parts.append(published_table())
    if not parts:
        return ours_table(df, "vtab1k", "acc_last")
    return pd.concat(parts)


def benchmark_summary(results_dir="results", benchmark: str = "mini", metric: str = "acc_last",
                      protocol: str = "final") -> pd.DataFrame:
    """A benchmark's runs as a long frame: benchmark, run, task, group, mean, std, n_seeds, seeds."""
    df = load_results(results_dir, protocol=protocol, benchmark=benchmark)
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
               decimals: int = 1) -> pd.DataFrame:
    """mini-VTAB: one row per run, "mean ± std" over seeds per task, then group means and both overall means."""
    return seed_table(results_dir, "mini", metric, protocol, decimals)


def seed_table(results_dir="results", benchmark: str = "mini", metric: str = "acc_last", protocol: str = "final",
               decimals: int = 1) -> pd.DataFrame:
    """One row per run, "mean ± std" over seeds per task, then group means and both overall means.

    The overall means are means of the per-task means; "seed std of mean (N)" is the std over seeds of each
    seed's mean over all N tasks (seeds that cover every task).
    """
    check_metric(metric)
    df = load_results(results_dir, protocol=protocol, benchmark=benchmark)
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


def result_summary(result: dict) -> pd.DataFrame:
    """One run's headline numbers as a two-column table (value, meaning)."""
    params = result.get("parameters") or {}
    rows = [
        ("task", result["task"], f"benchmark {result['benchmark']}, group {result.get('group')}"),
        ("run", run_label(result["method"], result.get("tag")), f"seed {result['seed']}, protocol {result['protocol']}"),
        ("epochs", result["epochs"], f"train {result['train_split']} ({result.get('train_size')} images), "
                                     f"evaluate {result['eval_split']} ({result.get('eval_size')} images)"),
        ("acc_last (%)", round(result["acc_last"], 2), METRIC_NOTES["acc_last"]),
        ("acc_max_over_epochs (%)", round(result["acc_max_over_epochs"], 2),
         METRIC_NOTES["acc_max_over_epochs"] + f"; best at epoch {result['max_epoch']}"),
        ("trainable parameters", params.get("trainable"), f"{params.get('head')} of them in the head; "
                                                          f"{params.get('total')} in total"),
        ("wall time (s)", round(float(result.get("wall_time_s", float("nan"))), 1), f"device {result.get('device')}"),
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
    label = run_label(result["method"], result.get("tag"))
    rows = [dict(method=f"{label} (this run, seed {result['seed']})", accuracy=result[m], protocol=METRICS[m],
                 note=METRIC_NOTES[m]) for m in METRICS]
    pub = published_results()
    for _, r in pub[pub["task"] == result["task"]].iterrows():
        rows.append(dict(method=f"{r['method']} (published)", accuracy=r["accuracy"],
                         protocol=published_protocol(r["note"]), note=r["note"]))
    frame = pd.DataFrame(rows)
    order = {p: i for i, p in enumerate(METRICS.values())}
    return frame.sort_values("protocol", key=lambda s: s.map(order).fillna(len(order)), kind="stable") \
        .set_index("method")


def committed_comparison(result: dict, committed_dir="results") -> pd.DataFrame:
    """This run beside the committed result of the same (task, run, seed, protocol), if there is one: both
    accuracies, their difference, and whether the two runs had the same identity (every setting that matters)."""
    from ..engine.results import read_result, result_path

    path = result_path(committed_dir, result["benchmark"], result["task"], result["method"], result["seed"],
                       result["protocol"], tag=result.get("tag"))
    if not path.is_file():
        return pd.DataFrame(columns=["this run", "committed", "difference"]).rename_axis(f"no committed {path}")
    committed = read_result(path)
    same = committed.get("identity") == result.get("identity")
    rows = {m: dict(this_run=result[m], committed=committed[m], difference=result[m] - committed[m]) for m in METRICS}
    frame = pd.DataFrame(rows).T.rename(columns={"this_run": "this run"})
    return frame.rename_axis(f"{path} (same settings: {same})")


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
                 metrics=("acc_last", "acc_max_over_epochs"), decimals: int = 1) -> list:
    """Render the VTAB-1k and mini-VTAB tables as CSV and markdown files (written atomically); returns the paths."""
    from pathlib import Path

    from ..utils.io import atomic_write_text

    out, paths = Path(out_dir), []
    frames = {f"vtab1k_{protocol}": vtab1k_table(results_dir, protocol=protocol, metrics=list(metrics))}
    for m in metrics:
        frames[f"mini_{protocol}_{m}"] = mini_table(results_dir, metric=m, protocol=protocol, decimals=decimals)
    for name, frame in frames.items():
        paths.append(atomic_write_text(out / f"{name}.csv", frame.to_csv()))
        paths.append(atomic_write_text(out / f"{name}.md", markdown_table(frame)))
    return paths
