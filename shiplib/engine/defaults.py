"""Per-task default hyperparameters, and where each one came from.

- VTAB-1k: `resources/vtab1k_method_defaults.csv`, one row per method (`*`: methods without a row). A row either
  gives one lr and weight decay for all tasks, or names a per-task settings table: SHIP's official per-task lr,
  weight decay, threshold α and prompt length K (`resources/vtab1k_official_settings.csv`, from SHIP's
  results_summary.txt).
- mini-VTAB: `resources/mini_defaults.csv` (method × task, `*` wildcards; lr tuned on val200, see its
  `status`/`note` columns).
- VTAB-1k: 100 epochs with a 10-epoch warm-up (the official recipe); mini-VTAB: the csv (10 epochs, 2 of warm-up).
  Backbone and image size per benchmark.
Values the user sets always win; `resolve_defaults` reports the source of every value.
"""
from __future__ import annotations

import csv
import functools
import io
import re
from importlib import resources

from ..backbones import DEFAULT_BACKBONE

RESOURCES = "shiplib.resources"
OFFICIAL_SETTINGS_CSV = "vtab1k_official_settings.csv"
VTAB1K_METHOD_DEFAULTS_CSV = "vtab1k_method_defaults.csv"
MINI_DEFAULTS_CSV = "mini_defaults.csv"
PUBLISHED_CSV = "vtab1k_published.csv"

BENCHMARK_DEFAULTS = {
    # the paper's backbone: original Google in21k ViT-B/16 at 224 px (docs/ship_computation.md §1)
    "vtab1k": dict(backbone=DEFAULT_BACKBONE, img_size=224, epochs=100, warmup_epochs=10),
    # the committed mini ViT (distilled from ImageNet EfficientNet-Lite0), 32 px images
    "mini": dict(backbone="mini", img_size=32, epochs=100, warmup_epochs=10),
}

RUN_KEYS = ("lr", "weight_decay", "epochs", "warmup_epochs")
OPTION_KEYS = ("prompt_length", "threshold")  # SHIP's K and α in the official table
_META_COLUMNS = ("method", "task", "status", "note")
_INT_KEYS = {"epochs", "warmup_epochs"}


def _read_csv(name: str) -> list[dict]:
    text = resources.files(RESOURCES).joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def _value(key: str, text: str):
    """A CSV cell: int for integer-looking cells and count columns, float for other numbers, else the text."""
    text = text.strip()
    if key in _INT_KEYS or re.fullmatch(r"-?\d+", text):
        return int(float(text))
    try:
        return float(text)
    except ValueError:
        return text


@functools.lru_cache(maxsize=None)
def official_settings() -> dict[str, dict]:
    """{task: {lr, weight_decay, threshold, prompt_length, official_accuracy, prompt_indices, …}} (VTAB-1k)."""
    out = {}
    for row in _read_csv(OFFICIAL_SETTINGS_CSV):
        out[row["task"]] = dict(
            lr=float(row["lr"]), weight_decay=float(row["weight_decay"]), threshold=float(row["threshold"]),
            prompt_length=int(row["prompt_length"]), official_accuracy=float(row["official_accuracy"]),
            official_trainable_parameters=int(row["official_trainable_parameters"]),
            prompt_indices=[int(i) for i in row["prompt_indices"].split()], group=row["group"],
            num_classes=int(row["num_classes"]), source=row["source"])
    return out


@functools.lru_cache(maxsize=None)
def vtab1k_method_defaults() -> dict[str, dict]:
    """{method or "*": {"lr", "weight_decay"} or {"per_task_settings": csv name}} (`vtab1k_method_defaults.csv`)."""
    out = {}
    for row in _read_csv(VTAB1K_METHOD_DEFAULTS_CSV):
        table = row["per_task_settings"].strip()
        out[row["method"]] = dict(per_task_settings=table) if table else \
            dict(lr=float(row["lr"]), weight_decay=float(row["weight_decay"]))
    return out


@functools.lru_cache(maxsize=None)
def mini_defaults_table() -> tuple[dict, ...]:
    return tuple(_read_csv(MINI_DEFAULTS_CSV))


def published_results():
    """The published VTAB-1k accuracies (long format) as a pandas DataFrame."""
    import pandas as pd  # deferred: a run needs no pandas; only the report tables read this

    return pd.read_csv(io.StringIO(resources.files(RESOURCES).joinpath(PUBLISHED_CSV).read_text(encoding="utf-8")))


def _mini_lookup(method: str, task: str) -> tuple[dict, dict]:
    """Per column, the first non-empty cell in the order (method, task), (method, *), (*, task), (*, *)."""
    rows = mini_defaults_table()
    order = [(method, task), (method, "*"), ("*", task), ("*", "*")]
    values, sources = {}, {}
    columns = [c for c in (rows[0] if rows else {}) if c not in _META_COLUMNS]
    for key in columns:
        for m, t in order:
            row = next((r for r in rows if r["method"] == m and r["task"] == t), None)
            if row is not None and row.get(key, "").strip():
                values[key] = _value(key, row[key])
                sources[key] = f"{MINI_DEFAULTS_CSV} [{m},{t}] ({row.get('status') or 'untuned'})"
                break
    return values, sources


def resolve_defaults(benchmark: str, task: str, method: str, method_option_names) -> tuple[dict, dict]:
    """Defaults for (benchmark, task, method): (values, sources).

    values has run keys (lr, weight_decay, epochs, warmup_epochs, backbone, img_size) and the method
    options found in the table (columns that are not options of the method are skipped).
    """
    if benchmark not in BENCHMARK_DEFAULTS:
        raise ValueError(f"unknown benchmark {benchmark!r}; valid: {', '.join(BENCHMARK_DEFAULTS)}")
    values = dict(BENCHMARK_DEFAULTS[benchmark])
    sources = {k: f"shiplib.engine.defaults.BENCHMARK_DEFAULTS[{benchmark!r}]" for k in values}
    if benchmark == "vtab1k":
        table = vtab1k_method_defaults()
        row = method if method in table else "*"
        if "per_task_settings" in table[row]:
            if table[row]["per_task_settings"] != OFFICIAL_SETTINGS_CSV:
                raise ValueError(f"{VTAB1K_METHOD_DEFAULTS_CSV} [{row}]: unknown per-task settings table "
                                 f"{table[row]['per_task_settings']!r}; valid: {OFFICIAL_SETTINGS_CSV}")
            settings = official_settings()
            if task not in settings:
                raise ValueError(f"no official settings for VTAB-1k task {task!r} in {OFFICIAL_SETTINGS_CSV}")
            found = {k: settings[task][k] for k in RUN_KEYS + OPTION_KEYS if k in settings[task]}
            src = f"{OFFICIAL_SETTINGS_CSV} ({settings[task]['source']})"
        else:
            found = dict(table[row])
            src = f"{VTAB1K_METHOD_DEFAULTS_CSV} [{row}]"
        found_sources = {k: src for k in found}
    else:
        found, found_sources = _mini_lookup(method, task)
    names = set(method_option_names)
    for key, value in found.items():
        if key not in RUN_KEYS and key not in names:
            continue  # e.g. no prompt length for a linear probe
        values[key] = value
        sources[key] = found_sources[key]
    return values, sources
