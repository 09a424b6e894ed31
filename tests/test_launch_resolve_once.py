"""Each cell is resolved once: a one-cell inline sweep and `run` call `resolve_config` exactly once per cell, and
the cell's `ResolvedRun` is what trains it."""
from __future__ import annotations

import sys

import pytest

from shiplib.__main__ import main
from shiplib.engine import config


@pytest.fixture
def resolve_calls(monkeypatch) -> list:
    """Replace `resolve_config` wherever a module holds it by name with a wrapper that records each call."""
    calls, original = [], config.resolve_config

    def counting(cfg):
        calls.append((cfg.task, cfg.method, cfg.seed))
        return original(cfg)

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("shiplib") and getattr(module, "resolve_config", None) \
                is original:
            monkeypatch.setattr(module, "resolve_config", counting)
    return calls


def _common(root, vit_file, tmp_path) -> list[str]:
    return ["--epochs", "1", "--set", f"backbone={vit_file}", "--set", "img_size=32", "--set", "batch_size=16",
            "--data-root", str(root), "--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs"),
            "--device", "cpu", "--threads", "1", "--no-progress"]


def test_one_cell_inline_sweep_resolves_once(resolve_calls, tiny_task_root, tiny_vit_file, tmp_path, capsys):
    argv = ["sweep", "--tasks", "svhn", "--methods", "linear", "--seeds", "0",
            *_common(tiny_task_root, tiny_vit_file, tmp_path)]
    assert main(argv) == 0
    assert "sweep: 1 run, 0 skipped, 0 failed" in capsys.readouterr().out
    assert resolve_calls == [("svhn", "linear", 0)]


def test_run_resolves_once(resolve_calls, tiny_task_root, tiny_vit_file, tmp_path, capsys):
    argv = ["run", "--task", "svhn", "--method", "linear", "--seed", "0",
            *_common(tiny_task_root, tiny_vit_file, tmp_path)]
    assert main(argv) == 0
    assert "acc_last" in capsys.readouterr().out
    assert resolve_calls == [("svhn", "linear", 0)]
