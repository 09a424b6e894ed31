"""The source passes ruff with the configuration in pyproject.toml (line length 120; pycodestyle and pyflakes)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed in this environment (pinned in requirements.txt)")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, f"ruff check . found problems:\n{done.stdout}{done.stderr}"
