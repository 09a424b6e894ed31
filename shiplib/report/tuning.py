"""Model selection on validation: which learning rate each method gets, from `--protocol tune` runs.

Tune runs train on train800 and evaluate on val200 (`results/tune/...`); the test split is never read. A method's
lr is the one with the best mean `acc_last` over the tuned tasks (ties: the smaller lr).
"""
from __future__ import annotations

import pandas as pd

from ..engine.results import load_results


def lr_grid(results_dir="results", benchmark: str = "mini") -> pd.DataFrame:
    """Validation accuracy (acc_last, %) of every tune run: one row per (method, lr), one column per task, + mean."""
    df = load_results(results_dir, protocol="tune", benchmark=benchmark)
    if df.empty:
        return pd.DataFrame()
    grid = df.pivot_table(index=["method", "lr"], columns="task", values="acc_last", aggfunc="mean")
    grid["mean"] = grid.mean(axis=1, skipna=False)  # NaN unless every tuned task has a run
    grid["runs"] = df.groupby(["method", "lr"]).size()
    return grid


def selected_lr(grid: pd.DataFrame) -> pd.DataFrame:
    """Per method: the chosen lr, its mean validation accuracy, and the grid it was chosen from."""
    rows = []
    for method, part in grid.groupby(level="method"):
        part = part.droplevel("method").sort_index()
        if part["mean"].isna().all():
            continue
        best = part["mean"].idxmax()  # first maximum = the smallest lr among ties; incomplete rows are NaN
        lrs = list(part.index[part["mean"].notna()])  # the lrs tuned on every task
        rows.append(dict(method=method, lr=best, val_acc_mean=part.loc[best, "mean"], grid=lrs,
                         at_grid_edge=best in (lrs[0], lrs[-1]) and len(lrs) > 1))
    return pd.DataFrame(rows).set_index("method")
