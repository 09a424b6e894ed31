"""Semantic levels from an affinity matrix: the greedy chain of docs/ship_computation.md §3.

The official recursive search marks every examined layer as visited, even when it rejects it, so it is
exactly this chain: walk j = 1..L-1 and start a new level at j when A[cur, j] < threshold (strict), where
cur is the first layer of the current level. The result lists the first block of each level.

Float precision: the official matrices are float32 and the threshold a Python float. We promote A exactly
to float64 and compare with the threshold as a float64. Rounding the threshold to float32 instead would move
it by < 3e-8, while the smallest decision margin on the 19 official matrices is 1.3e-4 (oxford_pet,
A[7, 8] = 0.97013 vs 0.97), so both conventions give the same levels there; `decision_margins` shows how
close a given decision is.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import ConfigError
from ..utils.checks import positive_int
from .affinity import check_square_matrix


def check_threshold(threshold) -> float:
    """The threshold as a finite float; TypeError/ValueError for bools, strings, NaN or inf."""
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"threshold must be a real number such as 0.95, got {type(threshold).__name__} {threshold!r}")
    value = float(threshold)
    if not math.isfinite(value):
        raise ValueError(f"threshold must be finite, got {value}")
    return value


def _chain(A: np.ndarray, alpha: float) -> tuple[list[int], list[dict]]:
    """Level starts and the record of every decision made by the greedy chain."""
    starts, decisions, cur = [0], [], 0
    for j in range(1, A.shape[0]):
        value = float(A[cur, j])
        new_level = value < alpha
        decisions.append({"cur": cur, "j": j, "affinity": value, "margin": abs(value - alpha), "new_level": new_level})
        if new_level:
            starts.append(j)
            cur = j
    return starts, decisions


def semantic_levels(A, threshold, end_layer: int | None = None) -> list[int]:
    """First block of each semantic level (the official `prompt_indices`).

    `threshold >= 1.0` gives every block its own level without consulting A (as the official code does).
    `end_layer` keeps only level starts < end_layer (official default: the depth, i.e. no-op).
    Works for any depth and for 1- or 2-level results such as [0] or [0, 11].
    """
    arr = check_square_matrix(A).astype(np.float64)
    alpha = check_threshold(threshold)
    depth = arr.shape[0]
    end_layer = depth if end_layer is None else positive_int("end_layer", end_layer)
    starts = list(range(depth)) if alpha >= 1.0 else _chain(arr, alpha)[0]
    return [s for s in starts if s < end_layer]


def check_level_starts(indices: Sequence[int], depth: int) -> list[int]:
    """Level starts as a list of ints: beginning with block 0, strictly increasing, all < depth."""
    positive_int("depth", depth)
    starts = check_level_order(indices)
    if starts[-1] >= depth:
        raise ConfigError(f"levels {starts} name block {starts[-1]}, but the backbone has {depth} blocks "
                          f"(0..{depth - 1}); give level starts below {depth}")
    return starts


def check_level_order(indices: Sequence[int]) -> list[int]:
    """The checks that need no backbone: begins with block 0, strictly increasing."""
    starts = [int(i) for i in indices]
    if not starts or starts[0] != 0:
        raise ConfigError(f"levels must start with block 0 (the first level starts at the first block), got {starts}; "
                          f"e.g. levels=[0, {', '.join(str(s) for s in starts if s > 0) or '4, 8'}]")
    if any(b <= a for a, b in zip(starts, starts[1:])):
        raise ConfigError(f"levels must be strictly increasing level-start blocks, got {starts}")
    return starts


def level_ranges(indices: Sequence[int], depth: int) -> list[range]:
    """Blocks covered by each level: level k spans [indices[k], indices[k+1])."""
    starts = check_level_starts(indices, depth)
    return [range(a, b) for a, b in zip(starts, starts[1:] + [int(depth)])]


def level_of_block(indices: Sequence[int], depth: int) -> list[int]:
    """Level number of every block 0..depth-1."""
    return [k for k, r in enumerate(level_ranges(indices, depth)) for _ in r]


def threshold_sweep(A, thresholds: Iterable) -> dict[float, list[int]]:
    """{threshold: semantic_levels(A, threshold)} for each threshold, in the given order."""
    thresholds = list(thresholds)
    if not thresholds:
        raise ValueError("threshold_sweep needs at least one threshold")
    return {check_threshold(t): semantic_levels(A, t) for t in thresholds}


def decision_margins(A, threshold) -> list[dict]:
    """Every decision of the greedy chain: {cur, j, affinity=A[cur, j], margin=|A[cur, j] - threshold|, new_level}.

    Empty for threshold >= 1.0, where no decision is made. Small margins flag levels that tiny feature
    differences could flip.
    """
    arr = check_square_matrix(A).astype(np.float64)
    alpha = check_threshold(threshold)
    return [] if alpha >= 1.0 else _chain(arr, alpha)[1]
