"""Per-epoch histories read from result files (filters, NaN for absent losses, final losses)."""
import numpy as np
import pytest

from shiplib.engine import RunConfig, run_experiment
from shiplib.report import final_losses, history_frame


def test_history_frame_filters_and_columns(tmp_path, write_fake_result):
    write_fake_result("svhn", "ship", 1, 80.0, losses=[3.0, 2.0, 1.0])
    write_fake_result("svhn", "ship", 2, 80.0, losses=[3.0, 2.0, 0.5])
    write_fake_result("svhn", "vpt_deep", 1, 70.0, losses=[3.0, 2.5, 2.0])
    write_fake_result("svhn", "ship", 1, 80.0, tag="no-sip")
    write_fake_result("dtd", "ship", 1, 60.0)
    write_fake_result("svhn", "ship", 3, 80.0, protocol="tune")
    h = history_frame(tmp_path / "results", task="svhn", runs=["ship", "vpt_deep"])
    assert sorted(h.groupby(["run", "seed"]).size().items()) == [(("ship", 1), 3), (("ship", 2), 3),
                                                                  (("vpt_deep", 1), 3)]
    assert h["pml"].isna().all() and h["loss"].dtype == float
    assert len(history_frame(tmp_path / "results", task="svhn", runs=["ship"], seeds=[2])) == 3
    assert set(history_frame(tmp_path / "results", protocol=None)["protocol"]) == {"final", "tune"}
    assert history_frame(tmp_path / "nothing").empty
    fl = final_losses(h, "loss")
    assert fl.loc["ship", "mean"] == pytest.approx(0.75) and fl.loc["ship", "n_seeds"] == 2
    assert fl.loc["vpt_deep", "mean"] == 2.0 and np.isnan(fl.loc["vpt_deep", "std"])


def test_history_of_a_real_ship_run_has_pml(tiny_task_root, tiny_vit_file, tmp_path):
    cfg = RunConfig(task="svhn", method="ship", seed=1, epochs=2, batch_size=16, eval_every=1, lr=1e-2,
                    backbone=str(tiny_vit_file), img_size=32, data_root=str(tiny_task_root),
                    results_dir=str(tmp_path / "results"), runs_dir=str(tmp_path / "runs"), progress=False,
                    options=dict(prompt_length=2, num_prototypes=4, threshold=0.9))
    result = run_experiment(cfg)
    h = history_frame(tmp_path / "results", task="svhn")
    assert h["epoch"].tolist() == [0, 1] and h["run"].tolist() == ["ship", "ship"]
    assert h["loss"].tolist() == [e["loss"] for e in result["history"]]
    assert h["pml"].notna().all() and (h["loss"] >= h["ce"]).all()
