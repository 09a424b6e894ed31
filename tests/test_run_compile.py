"""`compile=<backend>` for runs: a compiled SHIP run trains like the eager one (same losses and accuracies within
1e-5 relative per epoch), recompiles a bounded number of times over training, evaluation and the switches between
them, keeps the eager parameter names in its checkpoint, and an unknown backend stops in one line before any work.

The backend is `aot_eager` (dynamo's tracing and AOTAutograd, what every backend starts from): inductor's code
generation takes minutes on a small CPU."""
import math

import pytest
import torch

from shiplib.engine import resolve_config, run_experiment
from shiplib.errors import ConfigError

from _engine_helpers import tiny_cfg

OPTS = dict(method="ship", lr=0.1, options=dict(prompt_length=4, num_prototypes=8))


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5)


@pytest.mark.slow
def test_a_compiled_ship_run_equals_the_eager_one_with_bounded_recompilation(tiny_task_root, tiny_vit_file,
                                                                              tmp_path):
    from torch._dynamo.utils import counters

    eager = run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path / "eager", **OPTS))
    torch._dynamo.reset()
    counters.clear()
    compiled = run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path / "compiled", compile="aot_eager",
                                       **OPTS))
    assert compiled["config"]["compile"] == "aot_eager" and "compile" not in compiled["identity"]
    assert len(compiled["history"]) == len(eager["history"]) == 3
    for e, c in zip(eager["history"], compiled["history"]):
        for key in ("loss", "eval_loss", "eval_acc"):
            assert _close(e[key], c[key]), (key, e[key], c[key])
    # training and evaluation (inference mode) each trace once, and the switch back and forth does not retrace
    assert 1 <= counters["stats"]["unique_graphs"] <= 6, dict(counters["stats"])
    ckpt = torch.load(tmp_path / "compiled/runs/vtab1k/svhn/ship/seed3/checkpoint.pt", weights_only=True)
    assert not any("_orig_mod" in k for k in ckpt["trainable"]), list(ckpt["trainable"])[:3]


def test_an_unknown_compile_backend_stops_in_one_line(tiny_task_root, tiny_vit_file, tmp_path):
    with pytest.raises(ConfigError, match="is not a torch.compile backend; valid: .*inductor") as e:
        resolve_config(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, compile="inductr"))
    assert "\n" not in str(e.value)
    run = resolve_config(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, compile="inductor"))
    assert run.runtime.compile == "inductor" and "compile" not in run.identity()


def test_compile_reaches_the_run_from_the_command_line(tmp_path, capsys):
    from shiplib.__main__ import main

    code = main(["run", "--task", "mini_mnist", "--method", "linear", "--compile", "bogus",
                 "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results")])
    assert code == 2 and "compile='bogus' is not a torch.compile backend" in capsys.readouterr().err
