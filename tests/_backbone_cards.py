"""The committed mini backbones' files, for the tests of their cards (skipped, saying how to build them, when
absent)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from shiplib.backbones import mini


def committed_checkpoint(name: str) -> Path:
    """The safetensors file of the committed mini backbone `name`; skips the test when it or its card is absent."""
    path = mini.mini_checkpoint_path(name=name)
    if not path.is_file() or not mini.mini_card_path(name=name).is_file():
        pytest.skip(f"{path.name} (or its card) is absent: build it with {mini.mini_recipe(name)}")
    return path


def committed_card(name: str) -> dict:
    return json.loads(mini.mini_card_path(name=name).read_text())


def card_fixtures(name: str):
    """Module-scoped `checkpoint` and `card` fixtures for the committed mini backbone `name`:
    `checkpoint, card = card_fixtures("mini_fmnist")` in a test module."""

    @pytest.fixture(scope="module")
    def checkpoint():
        return committed_checkpoint(name)

    @pytest.fixture(scope="module")
    def card(checkpoint):
        return committed_card(name)

    return checkpoint, card
