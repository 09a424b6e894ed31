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


def test_per_step_values_of_a_real_run_are_read_summarised_and_drawn(tiny_task_root, tiny_vit_file, tmp_path):
    from shiplib.report.figures import plot_step_curves
    from shiplib.report.histories import step_frame, step_summary

    cfg = RunConfig(task="svhn", method="vpt_deep", seed=1, epochs=2, batch_size=16, eval_every=1, lr=1e-2,
                    backbone=str(tiny_vit_file), img_size=32, data_root=str(tiny_task_root),
                    results_dir=str(tmp_path / "results"), runs_dir=str(tmp_path / "runs"), progress=False,
                    lr_schedule="scaled", warmup_epochs=1, options=dict(num_prompts=2))
    result = run_experiment(cfg)
    steps = step_frame(tmp_path / "results", task="svhn")
    per_epoch = len(result["history"][0]["step_loss"])
    assert len(steps) == 2 * per_epoch and steps["step"].tolist() == list(range(2 * per_epoch))
    assert steps["ce"].tolist() == [v for h in result["history"] for v in h["step_ce"]]
    summary = step_summary(steps, num_classes=3, window=2).loc["vpt_deep"]
    after = steps.loc[steps["fraction"] >= 0.1, "ce"].rolling(2, center=True, min_periods=1).mean()
    assert summary["seeds"] == 1 and summary["chance_ce"] == pytest.approx(np.log(3))
    assert summary["above_chance"] == (summary["peak_ce_after_warmup"] > np.log(3))
    assert summary["peak_ce_after_warmup"] <= steps["ce"].max() + 1e-12 and after.notna().all()
    fig = plot_step_curves(steps, window=2)
    assert [len(ax.lines) for ax in fig.axes[:2]] == [1, 1] and len(fig.axes[0].collections) == 0  # one seed: no band


def test_a_step_summary_flags_a_loss_above_chance_after_warm_up():
    import pandas as pd

    from shiplib.report.figures import plot_step_curves
    from shiplib.report.histories import step_summary

    rows = [dict(task="t", run=run, seed=seed, step=i, fraction=i / 20, lr=0.1,
                 ce=(5.0 if run == "ship" and i == 10 else 1.0) + 0.1 * seed) for run in ("ship", "vpt_deep")
            for seed in (1, 2) for i in range(20)]
    steps = pd.DataFrame(rows)
    s = step_summary(steps, num_classes=10, window=1)
    assert s.loc["ship", "above_chance"] and s.loc["ship", "peak_ce_after_warmup"] == pytest.approx(5.15)
    assert not s.loc["vpt_deep", "above_chance"] and s.loc["vpt_deep", "final_ce"] == pytest.approx(1.15)
    assert s.loc["ship", "seeds"] == 2
    fig = plot_step_curves(steps, window=1)
    assert len(fig.axes[0].collections) == 2  # a min-max band per run over its two seeds


def test_epoch_gradients_average_each_parts_norm_per_epoch():
    import pandas as pd

    from shiplib.report.histories import epoch_gradients

    steps = pd.DataFrame(dict(run=["ship"] * 4, seed=[1, 1, 2, 2], epoch=[0, 1, 0, 1], lr=[0.1, 0.3, 0.1, 0.3],
                              ce=[2.0, 3.0, 2.2, 3.4], **{"grad_norm.head": [1.0, 3.0, 1.0, 5.0],
                                                         "grad_norm.prompts": [None] * 4}))
    table = epoch_gradients(steps)
    assert list(table.columns) == ["lr", "ce", "grad_norm.head"]  # a part with no norms is left out
    assert table.loc[("ship", 1)].tolist() == [0.3, 3.2, 4.0]
