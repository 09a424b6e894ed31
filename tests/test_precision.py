"""Precision modes (fp32/tf32/bf16/fp16): bf16 against fp32 for every method within shiplib.repro's measured
tolerances, a bf16 mini run against the committed fp32 one, fp16's scaler and exact resume, modes a device cannot
run refused before any work, and fp32 results staying current."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from shiplib import repro
from shiplib.bench import build_bench_model
from shiplib.data.folder import build_dataset
from shiplib.engine import RunConfig, read_result, resolve_config, run_experiment
from shiplib.engine.precision import Precision, PrecisionError, check_precision
from shiplib.engine.results import result_path
from shiplib.errors import ConfigError
from shiplib.methods import list_methods

from _engine_helpers import Interrupt, crash_at, tiny_cfg, untimed

RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.fixture(scope="module")
def mini_batch():
    ds = build_dataset("mini_mnist", "test", img_size=32)
    return torch.stack([ds[i][0] for i in range(32)]), torch.tensor(ds.targets[:32])


def _forward(model, x, y, precision: str):
    """Training-mode logits and total loss, then eval-mode logits, under `precision` (same random draws)."""
    p = Precision(precision)
    model.train()
    torch.manual_seed(0)
    with p.autocast():
        logits, aux = model(x, return_losses=True)
        loss = F.cross_entropy(logits, y) + sum(model.loss_weights.get(k, 1.0) * v for k, v in aux.items())
    model.eval()
    with torch.no_grad(), p.autocast():
        eval_logits = model(x)
    return logits.detach().float(), float(loss.detach()), eval_logits.float()


@pytest.mark.parametrize("method", list_methods())
def test_bf16_logits_and_loss_are_within_the_measured_tolerance_of_fp32(method, mini_batch):
    x, y = mini_batch
    model = build_bench_model(method, "mini", num_classes=10, pretrained=True)
    ref, half = _forward(model, x, y, "fp32"), _forward(model, x, y, "bf16")
    assert not torch.equal(ref[0], half[0])  # autocast did change the computation
    assert repro.within("bf16_logits", half[0], ref[0]) and repro.within("bf16_logits", half[2], ref[2])
    assert repro.within("bf16_loss", half[1], ref[1])


def test_a_bf16_mini_run_trains_to_the_committed_fp32_accuracy(tmp_path):
    """The linear probe of mini_mnist in bf16 against its committed fp32 result (10 epochs)."""
    fp32 = read_result(result_path(RESULTS, "mini", "mini_mnist", "linear", 1))
    r = run_experiment(RunConfig(task="mini_mnist", method="linear", seed=1, precision="bf16", threads=1,
                                 progress=False, results_dir=str(tmp_path / "results"),
                                 runs_dir=str(tmp_path / "runs")))
    assert r["precision"] == r["identity"]["precision"] == r["config"]["precision"] == "bf16"
    assert r["history"][-1]["loss"] < r["history"][0]["loss"]
    assert repro.within("bf16_accuracy", r["acc_last"], fp32["acc_last"]), (r["acc_last"], fp32["acc_last"])


def test_fp16_scales_the_loss_and_resumes_exactly(tiny_task_root, tiny_vit_file, tmp_path):
    opts = dict(method="full", lr=1e-3, precision="fp16")
    ref = run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path / "a", **opts))
    ckpt = torch.load(tmp_path / "a/runs/vtab1k/svhn/full/seed3/checkpoint.pt", weights_only=True)
    assert ckpt["scaler"]["scale"] > 0  # the gradient scaler's state is checkpointed
    cfg = tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path / "b", **opts)
    with pytest.raises(Interrupt):
        run_experiment(cfg, on_step=crash_at(1))
    resumed = run_experiment(cfg)
    assert resumed["resumed_from_epoch"] == 0 and untimed(resumed["history"]) == untimed(ref["history"])


def test_fp32_identity_is_the_one_of_results_made_before_precisions_existed():
    fp32 = resolve_config(RunConfig(task="mini_mnist", method="ship"))
    bf16 = resolve_config(RunConfig(task="mini_mnist", method="ship", precision="bf16"))
    assert "precision" not in fp32.identity() and fp32.training.precision == "fp32"
    assert {k: v for k, v in bf16.identity().items() if k != "precision"} == fp32.identity()
    assert bf16.identity()["precision"] == "bf16"
    committed = read_result(result_path(RESULTS, "mini", "mini_mnist", "ship", 1))
    assert committed["identity"] == fp32.identity()


def test_a_bf16_run_does_not_reuse_the_fp32_result(tiny_task_root, tiny_vit_file, tmp_path):
    run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, method="linear", epochs=1))
    with pytest.raises(ConfigError, match="precision: None -> 'bf16'"):
        run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, method="linear", epochs=1,
                                precision="bf16"))


def test_unknown_precision_fails_listing_the_valid_ones():
    with pytest.raises(ConfigError, match="fp32, tf32, bf16, fp16"):
        resolve_config(RunConfig(task="mini_mnist", method="ship", precision="fp8"))
    assert RunConfig(task="mini_mnist", method="ship").with_overrides("precision=bf16").precision == "bf16"


def test_a_mode_the_device_cannot_run_stops_before_any_work(tiny_task_root, tiny_vit_file, tmp_path):
    with pytest.raises(PrecisionError, match="tf32 needs a CUDA GPU") as e:
        run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, precision="tf32", device="cpu"))
    assert "\n" not in str(e.value) and not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()
    check_precision("bf16", "cpu")  # CPU autocast runs bf16


def test_command_line_precision_reaches_the_run(tmp_path, capsys):
    from shiplib.__main__ import main

    code = main(["run", "--task", "svhn", "--method", "linear", "--precision", "tf32", "--device", "cpu",
                 "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results")])
    assert code == 2 and "tf32 needs a CUDA GPU" in capsys.readouterr().err


def test_a_sweep_sees_committed_fp32_results_as_finished_and_bf16_as_another_setting(tmp_path, capsys):
    from shiplib.__main__ import main

    grid = ["sweep", "--tasks", "mini_mnist", "--methods", "ship", "--dry-run", "--results", str(RESULTS),
            "--runs", str(tmp_path / "runs")]
    assert main(grid) == 0 and "0 to run, 1 finished" in capsys.readouterr().out
    main(grid + ["--precision", "bf16"])
    assert "precision: None -> 'bf16' (use --tag, or --force)" in capsys.readouterr().out
