"""Model selection on validation: which learning rate each method gets, from `--protocol tune` runs.

Tune runs train on train800 and evaluate on val200 (`results/tune/...`); the test split is never read. A method's
lr is the one with the best mean `acc_last` over the tuned tasks (ties: the smaller lr).

Learning rates are labelled in an exact, readable form (`format_lr`: 3e-05, 1e-04, 2.5e-04, …): pandas' display
precision would show small floats as 0.00.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..engine.results import find_result_files, load_results, read_result


def format_lr(lr) -> str:
    """A learning rate as the shortest scientific text that reads back as the same float ('3e-05', '2.5e-04')."""
    return np.format_float_scientific(float(lr), trim="-", exp_digits=2)


def lr_grid(results_dir="results", benchmark: str = "mini", tag_prefix: str = "lr") -> pd.DataFrame:
    """Validation accuracy (acc_last, %) of the tune runs of one study: one row per (method, lr), one column per
    task, + mean and the number of runs.

    A study is the tune runs tagged `<tag_prefix><lr>` (`lr1e-1`: the committed lr tuning; other prefixes name
    other studies, e.g. a budget pilot), so runs made under another protocol never mix into the choice.

    The `lr` index level holds exact labels (`format_lr`), in increasing numeric order within each method; the
    accuracies are numbers.
    """
    df = load_results(results_dir, protocol="tune", benchmark=benchmark)
    if not df.empty:
        study = re.compile(re.escape(tag_prefix) + r"[0-9.eE+-]+")
        df = df[[isinstance(t, str) and bool(study.fullmatch(t)) for t in df["tag"]]]
    if df.empty:
        return pd.DataFrame()
    grid = df.pivot_table(index=["method", "lr"], columns="task", values="acc_last", aggfunc="mean")
    grid["mean"] = grid.mean(axis=1, skipna=False)  # NaN unless every tuned task has a run
    grid["runs"] = df.groupby(["method", "lr"]).size()
    grid = grid.sort_index()  # numeric lr order
    grid.index = pd.MultiIndex.from_tuples([(m, format_lr(lr)) for m, lr in grid.index], names=["method", "lr"])
    grid.columns.name = "task"
    return grid


def selected_lr(grid: pd.DataFrame) -> pd.DataFrame:
    """Per method: the chosen lr (a number), its label, its mean validation accuracy, the lrs it was chosen from
    (those tuned on every task, as text) and whether it lies at an end of that range."""
    rows = []
    for method, part in grid.groupby(level="method", sort=True):
        part = part.droplevel("method")
        part = part.set_axis([float(lr) for lr in part.index]).sort_index()  # labels read back exactly
        if part["mean"].isna().all():
            continue
        best = part["mean"].idxmax()  # first maximum = the smallest lr among ties; incomplete rows are NaN
        lrs = list(part.index[part["mean"].notna()])  # the lrs tuned on every task
        rows.append(dict(method=method, lr=best, lr_label=format_lr(best), val_acc_mean=part.loc[best, "mean"],
                         grid=", ".join(format_lr(x) for x in lrs),
                         at_grid_edge=best in (lrs[0], lrs[-1]) and len(lrs) > 1))
    return pd.DataFrame(rows).set_index("method")


_PILOT_TAG = re.compile(r"pilot-e(?P<epochs>\d+)-lr(?P<lr>[0-9.eE+-]+)")


def budget_pilot(results_dir="results", benchmark: str = "mini") -> pd.DataFrame:
    """The budget pilot's tune runs (tags `pilot-e<epochs>-lr<lr>`): one row per (task, method, lr, epochs, seed)
    with the validation accuracy and cross-entropy after the last epoch and the last epoch's training
    cross-entropy."""
    rows = []
    for path in find_result_files(Path(results_dir) / "tune" / benchmark):
        r = read_result(path)
        m = _PILOT_TAG.fullmatch(r.get("tag") or "")
        if m is None:
            continue
        last = r["history"][-1]
        rows.append(dict(task=r["task"], method=r["method"], lr=format_lr(float(m["lr"])), epochs=int(m["epochs"]),
                         seed=int(r["seed"]), val_acc=r["acc_last"], val_loss=last["eval_loss"], train_ce=last["ce"]))
    cols = ["task", "method", "lr", "epochs", "seed", "val_acc", "val_loss", "train_ce"]
    return pd.DataFrame(rows, columns=cols).sort_values(["task", "method", "lr", "epochs"]).reset_index(drop=True)


def chosen_budget(pilot: pd.DataFrame, flat: float = 0.02) -> tuple[int | None, pd.DataFrame]:
    """The smallest budget after which doubling no longer helps: for every (task, method), the best lr's validation
    cross-entropy (mean over seeds) at the next budget is lower by at most `flat` (relative), or higher.

    Returns (epochs, or None when no budget qualifies yet; per (task, method, epochs): the best lr, its validation
    loss and accuracy, and `next_gain`, the relative drop of that loss at the next budget)."""
    if pilot.empty:
        return None, pd.DataFrame()
    means = pilot.groupby(["task", "method", "epochs", "lr"], as_index=False)[["val_loss", "val_acc"]].mean()
    best = means.loc[means.groupby(["task", "method", "epochs"])["val_loss"].idxmin()].set_index(
        ["task", "method", "epochs"]).sort_index()
    best["next_gain"] = 1 - best.groupby(level=["task", "method"])["val_loss"].shift(-1) / best["val_loss"]
    budgets = sorted(best.index.get_level_values("epochs").unique())
    for epochs in budgets[:-1]:
        at = best.xs(epochs, level="epochs")["next_gain"]
        if len(at) and at.notna().all() and (at <= flat).all():
            return int(epochs), best
    return None, best
