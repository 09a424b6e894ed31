"""Paired comparison of two runs over the (task, seed) cells both have: mean difference, bootstrap CI, W/T/L.

Works on any benchmark's long result frame (`shiplib.engine.results.load_results`): a "run" is a method with
an optional tag (`ship`, `vpt_deep`, `ship+no-ap`), as in the result tables.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..utils.checks import choice
from .tables import check_metric, with_run_column

RESAMPLING = ("pairs", "tasks")


@dataclass(frozen=True)
class PairedComparison:
    """`a - b` over matched cells; the CI is a percentile bootstrap of the mean difference."""
    a: str
    b: str
    metric: str
    n_pairs: int
    n_tasks: int
    mean_a: float
    mean_b: float
    mean_diff: float
    ci_low: float
    ci_high: float
    confidence: float
    wins: int
    ties: int
    losses: int
    resample: str
    n_boot: int
    unmatched: int

    def sentence(self, decimals: int = 1) -> str:
        f = f"{{:.{decimals}f}}"
        verdict = ("higher" if self.ci_low > 0 else "lower" if self.ci_high < 0 else "not different (the CI spans 0)")
        return (f"{self.a} − {self.b}: {f.format(self.mean_diff)} points, {self.confidence:.0%} CI "
                f"[{f.format(self.ci_low)}, {f.format(self.ci_high)}] over {self.n_pairs} (task, seed) pairs "
                f"({self.n_tasks} tasks); wins/ties/losses {self.wins}/{self.ties}/{self.losses}: {self.a} is "
                f"{verdict}.")


def matched_pairs(results: pd.DataFrame, a: str, b: str, metric: str = "acc_last",
                  keys: tuple[str, ...] = ("task", "seed")) -> tuple[pd.DataFrame, int]:
    """One row per cell both runs have (columns `keys`, `a`, `b`), and the number of cells only one has.
    `metric`: an accuracy of `shiplib.report.METRICS`, or any other numeric column of `results`."""
    if metric not in results.columns:
        check_metric(metric)
    runs = with_run_column(results)
    known = sorted(set(runs["run"]))
    for name in (a, b):
        if name not in known:
            raise KeyError(f"no results for run {name!r}; runs present: {', '.join(known) or 'none'}")
    wide = {}
    for name in (a, b):
        part = runs[runs["run"] == name]
        dup = part.duplicated(list(keys))
        if dup.any():
            raise ValueError(f"run {name!r} has several results for the same {keys}: "
                             f"{part.loc[dup, list(keys)].to_dict('records')[:3]}; pass one benchmark/protocol")
        wide[name] = part.set_index(list(keys))[metric]
    joined = pd.concat(wide, axis=1, join="outer")
    unmatched = int(joined.isna().any(axis=1).sum())
    return joined.dropna().reset_index(), unmatched


@dataclass(frozen=True)
class Bootstrap:
    """The percentile bootstrap of the mean difference: `resample="pairs"` draws (task, seed) cells, `"tasks"`
    whole tasks (all their seeds together), the wider interval when seeds of one task are correlated."""

    n_boot: int = 10000
    confidence: float = 0.95
    resample: str = "pairs"
    seed: int = 0

    def __post_init__(self) -> None:
        choice("resample", self.resample, RESAMPLING)
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.n_boot < 100:
            raise ValueError(f"n_boot={self.n_boot} is too few for a percentile interval; use at least 1000")


def paired_comparison(results: pd.DataFrame, a: str, b: str, metric: str = "acc_last", tie: float = 0.0,
                      bootstrap: Bootstrap = Bootstrap()) -> PairedComparison:
    """Compare run `a` with run `b` on the (task, seed) cells both have; a difference within `tie` points is a
    tie, the confidence interval is `bootstrap`'s."""
    n_boot, confidence, resample = bootstrap.n_boot, bootstrap.confidence, bootstrap.resample
    pairs, unmatched = matched_pairs(results, a, b, metric)
    if pairs.empty:
        raise ValueError(f"runs {a!r} and {b!r} share no (task, seed) cell; run both on the same tasks and seeds")
    diff = (pairs[a] - pairs[b]).to_numpy(float)
    rng = np.random.default_rng(bootstrap.seed)
    if resample == "pairs":
        boots = diff[rng.integers(0, len(diff), (n_boot, len(diff)))].mean(1)
    else:
        groups = [diff[(pairs["task"] == t).to_numpy()] for t in pairs["task"].unique()]
        sums = np.array([g.sum() for g in groups])
        sizes = np.array([len(g) for g in groups])
        pick = rng.integers(0, len(groups), (n_boot, len(groups)))
        boots = sums[pick].sum(1) / sizes[pick].sum(1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return PairedComparison(
        a=a, b=b, metric=metric, n_pairs=len(diff), n_tasks=int(pairs["task"].nunique()),
        mean_a=float(pairs[a].mean()), mean_b=float(pairs[b].mean()), mean_diff=float(diff.mean()),
        ci_low=float(lo), ci_high=float(hi), confidence=confidence,
        wins=int((diff > tie).sum()), ties=int((np.abs(diff) <= tie).sum()), losses=int((diff < -tie).sum()),
        resample=resample, n_boot=n_boot, unmatched=unmatched)


#: The columns of `difference_row`.
DIFFERENCE_COLUMNS = ["difference", "CI", "W/T/L", "pairs"]


def difference_row(c: PairedComparison, decimals: int = 1) -> dict:
    """One comparison as a table row: the mean difference `a − b`, its CI, wins/ties/losses and the pairs."""
    return {"difference": round(c.mean_diff, decimals), "CI": f"[{c.ci_low:+.{decimals}f}, {c.ci_high:+.{decimals}f}]",
            "W/T/L": f"{c.wins}/{c.ties}/{c.losses}", "pairs": c.n_pairs}


def paired_table(results: pd.DataFrame, baseline: str, others, metric: str = "acc_last", decimals: int = 1,
                 **kw) -> pd.DataFrame:
    """One row per run in `others`: its paired difference to `baseline` (other − baseline) with CI and W/T/L."""
    rows = []
    for name in others:
        c = paired_comparison(results, name, baseline, metric, **kw)
        rows.append({"run": name, "mean": round(c.mean_a, decimals), f"{baseline}": round(c.mean_b, decimals),
                     **difference_row(c, decimals)})
    return pd.DataFrame(rows).set_index("run")
