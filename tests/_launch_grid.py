"""Shared by the launcher tests: the tiny grid (2 mini tasks × 2 methods, 1 seed, 1 epoch, 1 thread) and its
inline reference numbers, computed once per test session."""
from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

TASKS = ["mini_mnist", "mini_dsprites_loc"]
METHODS = ["linear", "vpt_shallow"]


def grid_args(root: Path, tasks=TASKS, methods=METHODS, epochs: int = 1, seeds: str = "1") -> list[str]:
    return ["--tasks", *tasks, "--methods", *methods, "--seeds", seeds, "--epochs", str(epochs), "--threads", "1",
            "--no-progress", "--results", str(Path(root) / "results"), "--runs", str(Path(root) / "runs")]


def metrics(root: Path) -> dict:
    out = {}
    for f in sorted((Path(root) / "results").rglob("seed*.json")):
        r = json.loads(f.read_text())
        out[(r["task"], r["method"], r["seed"])] = (r["acc_last"], r["acc_max_over_epochs"])
    return out


def epochs_logged(log: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in log.read_text().splitlines() if line.strip()]


@functools.lru_cache(maxsize=None)
def inline_reference() -> dict:
    """{(task, method, seed): (acc_last, acc_max_over_epochs)} of the grid run inline."""
    from shiplib.__main__ import main

    root = Path(tempfile.mkdtemp(prefix="shiplib-inline-"))
    assert main(["sweep", *grid_args(root)]) == 0
    result = metrics(root)
    assert len(result) == len(TASKS) * len(METHODS)
    return result
