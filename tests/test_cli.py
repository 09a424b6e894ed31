"""`python -m shiplib run|sweep` on a toy task."""
import json
import subprocess
import sys

import pytest

from shiplib.__main__ import COMMANDS, build_parser, main


def common(root, vit_file, tmp_path):
    return ["--epochs", "2", "--set", f"backbone={vit_file}", "--set", "img_size=32", "--set", "batch_size=16",
            "--data-root", str(root), "--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs"),
            "--device", "cpu", "--threads", "1", "--no-progress"]


def test_parser_has_run_sweep_and_bench():
    assert {"run", "sweep", "bench"} <= set(COMMANDS)
    args = build_parser().parse_args(["run", "--task", "svhn", "--method", "ship", "--seed", "2", "--set", "lr=1e-3",
                                      "--set", "K=10", "--protocol", "tune"])
    assert (args.task, args.method, args.seed, args.protocol, args.overrides) == ("svhn", "ship", 2, "tune",
                                                                                   ["lr=1e-3", "K=10"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--task", "svhn", "--method", "linear", "--protocol", "best"])


def test_run_end_to_end(tiny_task_root, tiny_vit_file, tmp_path, capsys):
    rc = main(["run", "--task", "svhn", "--method", "linear", "--seed", "0", "--set", "lr=0.01",
               *common(tiny_task_root, tiny_vit_file, tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "acc_last" in out and "acc_max_over_epochs" in out
    result = json.loads((tmp_path / "results/vtab1k/svhn/linear/seed0.json").read_text())
    assert result["epochs"] == 2 and result["config"]["lr"] == 0.01 and result["overrides"]["epochs"] == 2


def test_sweep_skips_finished_runs(tiny_task_root, tiny_vit_file, tmp_path, capsys):
    argv = ["sweep", "--tasks", "svhn", "--methods", "linear", "vpt_deep", "--seeds", "0-1",
            *common(tiny_task_root, tiny_vit_file, tmp_path)]
    # K is not a linear-probe option: the sweep fails before training anything
    assert main(argv + ["--set", "K=2"]) == 2
    assert "unknown setting 'K' for method 'linear'" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
    assert main(argv) == 0
    assert "4 run, 0 skipped" in capsys.readouterr().out
    files = sorted((tmp_path / "results").rglob("seed*.json"))
    assert len(files) == 4
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert main(argv + ["--seeds", "0-2"]) == 0
    out = capsys.readouterr().out
    assert out.count(": skip (finished") == 4 and "2 run, 4 skipped" in out
    assert [f.stat().st_mtime_ns for f in files] == mtimes


def test_bad_set_key_fails_clearly(tiny_task_root, tiny_vit_file, tmp_path, capsys):
    rc = main(["run", "--task", "svhn", "--method", "linear", "--set", "learning_rate=1",
               *common(tiny_task_root, tiny_vit_file, tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown setting 'learning_rate'" in err and "Valid run settings:" in err and "lr" in err
    assert main(["run", "--task", "svhn", "--method", "linear", "--set", "lr"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_missing_data_message_via_subprocess(tmp_path):
    """The real entry point: missing data fails within seconds with the data layer's message, exit code 2."""
    proc = subprocess.run([sys.executable, "-m", "shiplib", "run", "--task", "svhn", "--method", "linear",
                           "--data-root", str(tmp_path / "nowhere"), "--results", str(tmp_path / "r"),
                           "--runs", str(tmp_path / "w")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error: vtab1k task 'svhn' not found" in proc.stderr and "prepare" in proc.stderr
