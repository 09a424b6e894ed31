"""Where results and working files live, atomic result files, and loading results into a DataFrame.

Layout (protocol "final", the default):  <results>/<benchmark>/<task>/<run>/seed<k>.json
          protocol "tune" (val200 model selection): <results>/tune/<benchmark>/<task>/<run>/seed<k>.json
Working files (checkpoint, epoch log) mirror it under <runs>/…/seed<k>/.
<run> is the method name, or "<method>+<tag>" for a named variant (e.g. an lr sweep).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..utils.io import atomic_write_json

RESULT_SCHEMA = 1
PROTOCOLS = ("final", "tune")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*$")


def check_tag(tag: str | None) -> str | None:
    if tag is not None and not _TAG.match(str(tag)):
        raise ValueError(f"tag {tag!r} must start with a letter or digit and hold only letters, digits and . _ = -")
    return tag


def run_name(method: str, tag: str | None = None) -> str:
    return method if not check_tag(tag) else f"{method}+{tag}"


def _relative(benchmark: str, task: str, method: str, tag: str | None, protocol: str) -> Path:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    rel = Path(benchmark) / task / run_name(method, tag)
    return Path("tune") / rel if protocol == "tune" else rel


def result_path(results_dir, benchmark: str, task: str, method: str, seed: int, protocol: str = "final",
                tag: str | None = None) -> Path:
    return Path(results_dir) / _relative(benchmark, task, method, tag, protocol) / f"seed{seed}.json"


def work_dir(runs_dir, benchmark: str, task: str, method: str, seed: int, protocol: str = "final",
             tag: str | None = None) -> Path:
    return Path(runs_dir) / _relative(benchmark, task, method, tag, protocol) / f"seed{seed}"


def write_result(path, result: dict) -> Path:
    """Write atomically: a reader sees the old file or the complete new one, never a partial file."""
    return atomic_write_json(path, {"schema": RESULT_SCHEMA, **result})


def read_result(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


_COLUMNS = ("benchmark", "task", "group", "method", "tag", "seed", "protocol", "eval_split", "acc_last",
            "acc_max_over_epochs", "max_epoch", "epochs", "wall_time_s", "device")


def result_row(result: dict, path=None) -> dict:
    """One flat row of a result: identity, accuracies (%), main hyperparameters, parameter counts."""
    row = {k: result.get(k) for k in _COLUMNS}
    cfg = result.get("config", {})
    for key in ("lr", "weight_decay", "backbone", "img_size", "batch_size"):
        row[key] = cfg.get(key)
    for key, value in (cfg.get("options") or {}).items():
        if isinstance(value, (int, float, str, bool)) or value is None:
            row[f"opt.{key}"] = value
    for key, value in (result.get("parameters") or {}).items():
        row[f"params.{key}"] = value
    row["path"] = None if path is None else str(path)
    return row


def find_result_files(results_dir="results") -> list[Path]:
    root = Path(results_dir)
    return sorted(p for p in root.rglob("seed*.json") if p.is_file()) if root.is_dir() else []


def load_results(results_dir="results", protocol: str | None = None, benchmark: str | None = None):
    """All result files under `results_dir` as a pandas DataFrame (one row per run).

    Accuracies are in %; `acc_last` is the last-epoch accuracy (the main number), `acc_max_over_epochs`
    the best over the evaluated epochs (SHIP's reporting protocol, selected on the evaluation split).
    """
    import pandas as pd

    rows = []
    for path in find_result_files(results_dir):
        result = read_result(path)
        if protocol is not None and result.get("protocol") != protocol:
            continue
        if benchmark is not None and result.get("benchmark") != benchmark:
            continue
        rows.append(result_row(result, path))
    return pd.DataFrame(rows, columns=None if rows else list(_COLUMNS) + ["path"])


def is_finished(path: os.PathLike, identity: dict) -> bool:
    """True if a result exists at `path` for exactly this run identity and the backbone's current weights."""
    from .prepare import stale_backbone

    path = Path(path)
    if not path.is_file():
        return False
    result = read_result(path)
    return result.get("identity") == identity and stale_backbone(result) is None
