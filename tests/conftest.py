"""Shared fixtures. Tests that need ../shared/reference skip with a reason where it is absent (a user's clone)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REFERENCE_CANDIDATES = [
    os.environ.get("SHIPLIB_REFERENCE"),
    str(Path(__file__).resolve().parents[1].parent / "shared" / "reference"),
    "/work/shared/reference",
]


def find_reference_dir() -> Path | None:
    for c in REFERENCE_CANDIDATES:
        if c and (Path(c) / "ship_spec.md").is_file():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    d = find_reference_dir()
    if d is None:
        pytest.skip("../shared/reference is absent (a user's clone); set SHIPLIB_REFERENCE to run reference tests")
    return d


@pytest.fixture(autouse=True)
def _few_threads():
    # CI has 2 cores; tiny models are faster single-threaded and deterministic.
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
