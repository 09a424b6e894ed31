"""Notebook helpers: the equivalent CLI command, config description, task picks, thresholds, task comparison."""
import os
import shlex

import numpy as np
import pytest

from shiplib.__main__ import _config, build_parser
from shiplib.data import get_task
from shiplib.engine import RunConfig, resolve_config
from shiplib.report import (cli_command, describe_config, pick_tasks, suggest_thresholds, task_comparison)
from shiplib.report.notebook import find_repo_root
from conftest import fake_result


@pytest.mark.parametrize("overrides", [{}, {"epochs": 7, "lr": 5e-4, "K": 20, "sip": False, "tag": "x1",
                                            "protocol": "tune", "results_dir": "out/r", "device": "cpu"}])
def test_cli_command_reproduces_the_config(overrides):
    cfg = RunConfig(task="svhn", method="ship", seed=4).with_overrides(overrides)
    argv = shlex.split(cli_command(cfg))
    assert argv[:4] == ["python", "-m", "shiplib", "run"]
    args = build_parser().parse_args(argv[3:])
    back = _config(args, args.task, args.method, args.seed)
    assert resolve_config(back).identity() == resolve_config(cfg).identity()
    assert (back.results_dir, back.device) == (cfg.results_dir, cfg.device)


def test_describe_config_lists_every_setting_with_its_source():
    resolved = resolve_config(RunConfig(task="svhn", method="ship").with_overrides({"lr": 0.5}))
    table = describe_config(resolved)
    assert table.loc["lr", "source"] == "user" and table.loc["lr", "value"] == "0.5"
    assert "vtab1k_official_settings.csv" in table.loc["option threshold", "source"]
    assert {f"option {k}" for k in resolved.identity()["options"]} <= set(table.index)


def test_pick_tasks_and_thresholds():
    six = pick_tasks("vtab1k", per_group=2)
    assert len(six) == 6 and [get_task(t).group for t in six] == ["natural"] * 2 + ["specialized"] * 2 + \
        ["structured"] * 2
    assert pick_tasks("vtab1k", tasks=["SVHN"]) == ["svhn"]
    A = np.eye(4, dtype=np.float32)
    A[0, 1] = A[1, 0] = 0.5
    A[1, 2] = A[2, 1] = 0.9
    A[2, 3] = A[3, 2] = 0.7
    assert suggest_thresholds({"t": A}, quantiles=(0.0, 0.5, 1.0)) == [0.5, 0.7, 0.9]


def test_task_comparison_labels_protocols():
    r = fake_result("svhn", "ship", 1, 80.0, acc_max=85.0)
    table = task_comparison(r)
    assert table.loc["ship (this run, seed 1)", "accuracy"].tolist() == [80.0, 85.0]
    assert table.loc["VPT-deep (published)", "protocol"] == "last epoch"
    assert table.loc["SHIP official (published)", "protocol"] == "max over epochs"
    assert table["protocol"].tolist() == sorted(table["protocol"], key=["last epoch", "max over epochs"].index)
    mini = task_comparison(fake_result("mini_mnist", "ship", 1, 60.0))
    assert mini.empty and mini.index.name == "no published numbers for mini_mnist (mini)"


def test_find_repo_root(tmp_path):
    root = find_repo_root(os.path.dirname(__file__))
    assert (root / "shiplib" / "report").is_dir()
    assert find_repo_root(tmp_path) is None
