"""Per-epoch training histories from result files (the JSONL logs in runs/ are not committed; results are)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..engine.results import find_result_files, read_result
from .tables import run_label

#: Per-epoch values kept from a result's history (missing ones become NaN, e.g. "pml" for VPT).
HISTORY_COLUMNS = ("loss", "ce", "pml", "lr", "train_acc", "eval_acc", "eval_loss", "seconds")
HISTORY_LABELS = {
    "loss": "training loss (total: CE + weighted auxiliary losses)",
    "ce": "training cross-entropy",
    "pml": "prompt matching loss (raw)",
    "train_acc": "training accuracy (%)",
    "eval_acc": "evaluation accuracy (%)",
    "eval_loss": "evaluation cross-entropy",
    "lr": "learning rate",
}


def history_rows(result: dict) -> list[dict]:
    """One row per epoch of one result: identity columns + HISTORY_COLUMNS."""
    ident = dict(benchmark=result["benchmark"], task=result["task"], method=result["method"], tag=result.get("tag"),
                 run=run_label(result["method"], result.get("tag")), seed=result["seed"],
                 protocol=result["protocol"], eval_split=result.get("eval_split"))
    return [{**ident, "epoch": h["epoch"], **{k: h.get(k) for k in HISTORY_COLUMNS}} for h in result["history"]]


def history_frame(results_dir="results", task: str | None = None, runs=None, seeds=None,
                  benchmark: str | None = None, protocol: str | None = "final") -> pd.DataFrame:
    """Long frame of per-epoch histories of the matching result files (one row per run, seed and epoch).

    `runs`: run names as in the results folder (`method` or `method+tag`); None keeps all.
    """
    keep_runs = None if runs is None else set(runs)
    keep_seeds = None if seeds is None else {int(s) for s in seeds}
    rows = []
    for path in find_result_files(results_dir):
        r = read_result(path)
        if task is not None and r.get("task") != task:
            continue
        if benchmark is not None and r.get("benchmark") != benchmark:
            continue
        if protocol is not None and r.get("protocol") != protocol:
            continue
        if keep_runs is not None and run_label(r["method"], r.get("tag")) not in keep_runs:
            continue
        if keep_seeds is not None and int(r["seed"]) not in keep_seeds:
            continue
        rows += history_rows(r)
    columns = ["benchmark", "task", "method", "tag", "run", "seed", "protocol", "eval_split", "epoch",
               *HISTORY_COLUMNS]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({c: float for c in HISTORY_COLUMNS})


STEP_COLUMNS = ("loss", "ce", "lr")


def step_rows(result: dict) -> list[dict]:
    """One row per optimiser step of one result (runs that recorded per-step values): identity columns (with the
    run's `base_lr`), epoch, step, the fraction of training done, loss, ce, lr and `grad_norm.<part>` for each
    trainable part."""
    ident = dict(task=result["task"], run=run_label(result["method"], result.get("tag")), seed=result["seed"],
                 base_lr=result.get("config", {}).get("lr"))
    epochs = result["history"]
    total = sum(len(h.get("step_loss", ())) for h in epochs)
    rows, done = [], 0
    for h in epochs:
        for i in range(len(h.get("step_loss", ()))):
            row = {**ident, "epoch": h["epoch"], "step": done, "fraction": done / total,
                   **{c: h[f"step_{c}"][i] for c in STEP_COLUMNS}}
            row.update({f"grad_norm.{part}": norms[i] for part, norms in h.get("step_grad_norm", {}).items()})
            rows.append(row)
            done += 1
    return rows


def step_frame(results_dir="results", task: str | None = None, runs=None, benchmark: str | None = None,
               protocol: str | None = "final") -> pd.DataFrame:
    """Long frame of per-step training values (one row per run, seed and step) of the matching result files;
    results written before per-step logging contribute no rows."""
    keep_runs = None if runs is None else set(runs)
    rows = []
    for path in find_result_files(results_dir):
        r = read_result(path)
        if any(v is not None and r.get(k) != v for k, v in (("task", task), ("benchmark", benchmark),
                                                             ("protocol", protocol))):
            continue
        if keep_runs is not None and run_label(r["method"], r.get("tag")) not in keep_runs:
            continue
        rows += step_rows(r)
    return pd.DataFrame(rows, columns=None if rows else ["task", "run", "seed", "base_lr", "epoch", "step", "fraction",
                                                          *STEP_COLUMNS])


def final_losses(history: pd.DataFrame, column: str = "ce") -> pd.DataFrame:
    """Per run: mean ± std over seeds of the last epoch's value of `column`, and the number of seeds."""
    if history.empty:
        return pd.DataFrame(columns=["mean", "std", "n_seeds"])
    last = history.loc[history.groupby(["run", "seed"])["epoch"].idxmax()]
    return last.groupby("run", sort=False)[column].agg(mean="mean", std="std", n_seeds="count")


def smoothed_steps(steps: pd.DataFrame, window: int = 10) -> dict[str, pd.DataFrame]:
    """Per run, per step: the fraction of training, the lr and the training cross-entropy smoothed per seed by a
    centred running mean over `window` steps (single mini-batches are noisy), then its mean, min and max over
    seeds; with the run's number of seeds in `.attrs["seeds"]`."""
    out = {}
    for run, part in steps.groupby("run", sort=False):
        part = part.sort_values(["seed", "step"])
        smooth = part.groupby("seed")["ce"].transform(lambda v: v.rolling(window, center=True, min_periods=1).mean())
        per_step = part.assign(ce=smooth).groupby("step").agg(fraction=("fraction", "mean"), mean=("ce", "mean"),
                                                            lo=("ce", "min"), hi=("ce", "max"), lr=("lr", "mean"))
        per_step.attrs["seeds"] = part["seed"].nunique()
        out[run] = per_step
    return out


def step_summary(steps: pd.DataFrame, num_classes: int, warmup_fraction: float = 0.1,
                 window: int = 10) -> pd.DataFrame:
    """Per run (mean over seeds): the highest smoothed training cross-entropy after the warm-up, whether it rises
    above ln(num_classes), the loss of always predicting uniformly, and the mean over the last `window` steps."""
    rows = []
    for run, per_step in smoothed_steps(steps, window).items():
        after = per_step.loc[per_step["fraction"] >= warmup_fraction, "mean"]
        rows.append(dict(run=run, seeds=per_step.attrs["seeds"], peak_ce_after_warmup=after.max(),
                         above_chance=bool(after.max() > np.log(num_classes)), chance_ce=np.log(num_classes),
                         final_ce=per_step["mean"].iloc[-window:].mean()))
    return pd.DataFrame(rows).set_index("run")


def epoch_gradients(steps: pd.DataFrame) -> pd.DataFrame:
    """Per (run, epoch), means over steps and seeds: the lr, the training cross-entropy and the gradient norm of
    each trainable part (`grad_norm.<part>` columns of `step_frame`): which part takes the large steps when a loss
    rises."""
    parts = [c for c in steps.columns if c.startswith("grad_norm.") and steps[c].notna().any()]
    return steps.groupby(["run", "epoch"])[["lr", "ce", *parts]].mean()
