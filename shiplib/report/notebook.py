"""Small helpers that keep the notebooks thin: working folder, display setup, run descriptions, task picks."""
from __future__ import annotations

import logging
import os
import shlex
import sys

import numpy as np
import pandas as pd

from ..data.tasks import pick_tasks  # noqa: F401  (part of the notebooks' API)
from ..engine import RunConfig, ResolvedRun
from ..utils.paths import find_repo_root


def setup_notebook(chdir: bool = True) -> None:
    """Work from the repository root (relative paths such as results/ then mean the same from the CLI and from
    notebooks/), set the seaborn theme and table display, and log INFO lines to the cell output.

    Returns nothing, so that a notebook cell ending with it shows no output (the working folder is
    `os.getcwd()`)."""
    import seaborn as sns  # deferred: seaborn loads matplotlib (about a second); only this setup needs it

    root = find_repo_root()
    if chdir and root is not None:
        os.chdir(root)
    sns.set_theme(context="notebook", style="whitegrid")
    pd.set_option("display.max_columns", 60)
    pd.set_option("display.width", 200)
    pd.set_option("display.precision", 2)
    pd.set_option("display.max_colwidth", None)  # notes and protocols are read in full, not cut to "selec…"
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)


def describe_config(run: ResolvedRun) -> pd.DataFrame:
    """What a run will use: every run setting and method option with its value and where it came from."""
    ident, sources = run.identity(), run.sources
    skip = {"options", "task", "benchmark", "method", "seed"}
    rows = [(k, v, sources.get(k, "")) for k, v in ident.items() if k not in skip]
    rows += [(f"option {k}", v, sources.get(k, "")) for k, v in ident["options"].items()]
    frame = pd.DataFrame(rows, columns=["setting", "value", "source"]).set_index("setting")
    frame["value"] = frame["value"].map(lambda v: v if isinstance(v, str) else repr(v))
    return frame


def cli_command(cfg) -> str:
    """The `python -m shiplib run …` command that trains the same run as `run_experiment(cfg)`."""
    base = RunConfig(task=cfg.task, method=cfg.method)
    parts = ["python", "-m", "shiplib", "run", "--task", cfg.task, "--method", cfg.method, "--seed", str(cfg.seed)]
    flags = dict(protocol="--protocol", tag="--tag", results_dir="--results", runs_dir="--runs",
                 data_root="--data-root", device="--device", threads="--threads", num_workers="--workers")
    for name, flag in flags.items():
        if getattr(cfg, name) != getattr(base, name):
            parts += [flag, str(getattr(cfg, name))]
    sets = {k: getattr(cfg, k) for k in RunConfig.settable_fields()
            if k not in flags and k not in RunConfig.RUNTIME_FIELDS and getattr(cfg, k) != getattr(base, k)}
    sets.update(cfg.options)
    for key, value in sets.items():
        text = str(value).lower() if isinstance(value, bool) else "none" if value is None else str(value)
        parts += ["--set", f"{key}={text}"]
    return " ".join(shlex.quote(p) for p in parts)


def suggest_thresholds(affinities: dict, quantiles=(0.1, 0.3, 0.5, 0.7, 0.9)) -> list[float]:
    """Thresholds that split the given matrices differently: quantiles of their adjacent-layer affinities,
    rounded to 0.01 (duplicates dropped)."""
    adjacent = np.concatenate([np.diagonal(np.asarray(A), 1) for A in affinities.values()])
    return sorted({round(float(q), 2) for q in np.quantile(adjacent, list(quantiles))})
