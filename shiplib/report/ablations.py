"""SHIP ablations from their results: per-variant summaries, paired differences to the reference and tables.

The variants and running them: `shiplib.launch.ablations`.
"""
from __future__ import annotations

import pandas as pd

from ..engine import load_results
from ..engine.results import run_name
from ..launch.ablations import (ABLATION_VARIANTS, FACTORS, METHOD, REFERENCE, get_variant, grid_variant_tag,
                                select_variants)
from .paired import paired_comparison
from .tables import check_metric, format_mean_std, task_order


def ablation_results(results_dir="results", benchmark: str = "mini", protocol: str = "final",
                     seeds=None, grid_tag: str | None = None) -> pd.DataFrame:
    """Result rows of the reference `ship` run and of every known variant, with factor, variant and value columns
    (only `seeds` when given, so that the reference is averaged over the seeds the variants ran with).

    `grid_tag`: the ablations of a tagged grid (`scaled-e20`): its `ship+<grid_tag>` runs are the reference and
    the variants are tagged `grid_variant_tag(variant, grid_tag)`; the rows read as the committed grid's do."""
    df = load_results(results_dir, protocol=protocol, benchmark=benchmark)
    if seeds is not None and not df.empty:
        df = df[df["seed"].isin([int(s) for s in seeds])]
    cols = ["factor", "variant", "value", "task", "seed", "acc_last", "acc_max_over_epochs", "n_levels"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df = df[df["method"] == METHOD].copy()
    if "n_levels" not in df:
        df["n_levels"] = None
    known = {grid_variant_tag(v.tag, grid_tag): v for v in ABLATION_VARIANTS}
    is_ref = df["tag"].isna() | (df["tag"] == "") if grid_tag is None else df["tag"] == grid_tag
    df = df[is_ref | df["tag"].isin(list(known))]
    is_ref = is_ref[df.index]
    df["factor"] = [("reference" if r else known[t].factor) for r, t in zip(is_ref, df["tag"])]
    df["variant"] = [(REFERENCE if r else known[t].tag) for r, t in zip(is_ref, df["tag"])]
    df["value"] = [(None if r else known[t].value) for r, t in zip(is_ref, df["tag"])]
    return df[cols + [c for c in df.columns if c.startswith("opt.") or c.startswith("params.")]].reset_index(drop=True)


def ablation_summary(results: pd.DataFrame, metric: str = "acc_last") -> pd.DataFrame:
    """Per (factor, variant, task): mean, std and number of seeds, the difference to the reference's mean, and the
    number of semantic levels the variant's model had."""
    check_metric(metric)
    cols = ["factor", "variant", "value", "task", "mean", "std", "n_seeds", "delta", "levels"]
    if results.empty:
        return pd.DataFrame(columns=cols)
    g = results.groupby(["factor", "variant", "task"], sort=False, dropna=False)
    out = g[metric].agg(mean="mean", std="std", n_seeds="count").reset_index()
    out["value"] = g["value"].first().values
    out["levels"] = pd.to_numeric(g["n_levels"].first(), errors="coerce").values  # a task's levels do not vary by seed
    ref = out[out["variant"] == REFERENCE].set_index("task")["mean"]
    out["delta"] = out["mean"] - out["task"].map(ref)
    return out[cols]


def ablation_runs(results: pd.DataFrame) -> pd.DataFrame:
    """`ablation_results` rows as runs (`ship` for the reference, `ship+<variant>`), for the paired comparisons."""
    return results.assign(method=METHOD, tag=[None if v == REFERENCE else v for v in results["variant"]])


def ablation_paired(results: pd.DataFrame, tag: str, metric: str = "acc_last", **kw):
    """`shiplib.report.paired_comparison` of variant `tag` − the reference over the (task, seed) cells both have."""
    return paired_comparison(ablation_runs(results), run_name(METHOD, tag), METHOD, metric, **kw)


def rounded(x, decimals: int):
    """`x` (a number or a pandas object) rounded, with -0.0 as 0.0: a difference that rounds to zero reads 0.0
    whatever the sign of its float noise."""
    return (x.round(decimals) if isinstance(x, (pd.Series, pd.DataFrame)) else round(float(x), decimals)) + 0.0


def ablation_paired_frame(results: pd.DataFrame, metric: str = "acc_last", factors=None) -> pd.DataFrame:
    """Per variant with results (in `ABLATION_VARIANTS` order, optionally only `factors`): its paired difference to
    the reference over the (task, seed) cells both have (`ablation_paired`), the 95 % bootstrap CI, wins/ties/losses
    and the numbers of pairs and tasks."""
    cols = ["factor", "variant", "value", "mean_diff", "ci_low", "ci_high", "wins", "ties", "losses", "n_pairs",
            "n_tasks"]
    present = set(results["variant"]) if not results.empty else set()
    rows = []
    for v in select_variants(factors=factors):
        if v.tag in present and REFERENCE in present:
            c = ablation_paired(results, v.tag, metric)
            rows.append(dict(factor=v.factor, variant=v.tag, value=str(v.value),
                             **{k: getattr(c, k) for k in cols[3:]}))
    return pd.DataFrame(rows, columns=cols)


def ablation_table(summary: pd.DataFrame, factor: str = "components", decimals: int = 1,
                   results: pd.DataFrame | None = None, metric: str = "acc_last") -> pd.DataFrame:
    """Rows: the reference and the factor's variants; columns: "mean ± std" per task, mean over tasks, Δ mean;
    with `results` (`ablation_results`) also the paired difference to the reference over (task, seed) cells, its
    95 % bootstrap CI and wins/ties/losses.

    Only tasks on which some variant of the factor has a result are shown; the means over tasks are given only for
    rows with a value on every task the reference has.
    """
    if factor not in FACTORS:
        raise ValueError(f"unknown ablation factor {factor!r}; valid: {', '.join(FACTORS)}")
    sub = summary[(summary["variant"] == REFERENCE) | (summary["factor"] == factor)]
    if sub.empty:
        return pd.DataFrame()
    order = [REFERENCE] + [v.tag for v in ABLATION_VARIANTS if v.factor == factor]
    order = [v for v in order if v in set(sub["variant"])]
    variant_tasks = set(sub.loc[sub["variant"] != REFERENCE, "task"])
    rank = {t: i for i, t in enumerate(task_order(None))}
    tasks = sorted((t for t in dict.fromkeys(sub["task"]) if t in variant_tasks or not variant_tasks),
                   key=lambda t: rank.get(t, len(rank)))  # tasks with variants, in the tables' task order
    sub = sub[sub["task"].isin(tasks)]
    means = sub.pivot(index="variant", columns="task", values="mean").reindex(index=order, columns=tasks)
    stds = sub.pivot(index="variant", columns="task", values="std").reindex(index=order, columns=tasks)
    out = pd.DataFrame(index=order)
    out["value"] = pd.Series([None if v == REFERENCE else get_variant(v).value for v in order], index=order,
                             dtype=object)  # object: K stays 5, not 5.0
    if factor == "threshold":  # what α does: the number of semantic levels on each task
        levels = sub.pivot(index="variant", columns="task", values="levels").reindex(index=order, columns=tasks)
        out["levels per task"] = [" / ".join("–" if pd.isna(n) else str(int(n)) for n in row)
                                  for row in levels.itertuples(index=False)]
    for t in tasks:
        out[t] = [format_mean_std(m, s, decimals) for m, s in zip(means[t], stds[t])]
    ref_tasks = [t for t in tasks if pd.notna(means.loc[REFERENCE, t])] if REFERENCE in means.index else tasks
    complete = means[ref_tasks].notna().all(axis=1) if ref_tasks else means.notna().all(axis=1)
    task_mean = means[ref_tasks or tasks].mean(axis=1).where(complete)
    out["mean over tasks"] = task_mean.round(decimals)
    out["Δ vs reference"] = rounded(task_mean - task_mean.get(REFERENCE, float("nan")), decimals)
    if results is not None:
        paired = ablation_paired_frame(results[results["task"].isin(tasks)], metric, [factor]).set_index("variant")

        def per_variant(cell):  # the reference row has no difference to itself
            return [None if v == REFERENCE else cell(paired.loc[v]) for v in order]

        out["paired Δ"] = per_variant(lambda r: rounded(r.mean_diff, decimals))
        out["95% CI"] = per_variant(lambda r: f"[{rounded(r.ci_low, decimals):.{decimals}f}, "
                                              f"{rounded(r.ci_high, decimals):.{decimals}f}]")
        out["W/T/L"] = per_variant(lambda r: f"{r.wins}/{r.ties}/{r.losses}")
    out.index.name = factor
    return out
