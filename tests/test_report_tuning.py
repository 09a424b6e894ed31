"""lr selection from tune-protocol results (validation only)."""
import pandas as pd
import pytest

from shiplib.report import lr_grid, selected_lr
from shiplib.report.tuning import format_lr


def write_tune_run(write_fake_result, task, method, lr, acc):
    path = write_fake_result(task, method, 0, acc, protocol="tune", tag=f"lr{lr}")
    r = pd.read_json(path, typ="series")
    r["config"]["lr"] = lr
    path.write_text(r.to_json())
    return path


def test_the_best_mean_validation_accuracy_picks_the_lr(write_fake_result, tmp_path):
    accs = {(0.01, "mini_mnist"): 50.0, (0.01, "mini_textures"): 40.0,
            (0.1, "mini_mnist"): 60.0, (0.1, "mini_textures"): 40.0,
            (1.0, "mini_mnist"): 70.0}  # best on one task, but not tuned on the other: not eligible
    for (lr, task), acc in accs.items():
        path = write_fake_result(task, "ship", 0, acc, protocol="tune", tag=f"lr{lr}")
        r = pd.read_json(path, typ="series")
        r["config"]["lr"] = lr
        path.write_text(r.to_json())
    write_fake_result("mini_mnist", "ship", 1, 99.0)  # a final (test) result must never influence the choice
    grid = lr_grid(tmp_path / "results")
    assert list(grid.index.get_level_values("lr")) == ["1e-02", "1e-01", "1e+00"]  # exact labels, numeric order
    assert pd.isna(grid.loc[("ship", "1e+00"), "mean"])
    chosen = selected_lr(grid).loc["ship"]
    assert chosen["lr"] == 0.1 and chosen["val_acc_mean"] == 50.0 and chosen["at_grid_edge"]
    assert chosen["lr_label"] == "1e-01" and chosen["grid"] == "1e-02, 1e-01"


def test_ties_go_to_the_smaller_lr(write_fake_result, tmp_path):
    for lr in (0.1, 0.01):
        path = write_fake_result("mini_mnist", "vpt_deep", 0, 50.0, protocol="tune", tag=f"lr{lr}")
        r = pd.read_json(path, typ="series")
        r["config"]["lr"] = lr
        path.write_text(r.to_json())
    assert selected_lr(lr_grid(tmp_path / "results")).loc["vpt_deep", "lr"] == 0.01


def test_no_tune_results_give_an_empty_grid(tmp_path):
    assert lr_grid(tmp_path).empty


def test_small_lrs_are_shown_exactly(write_fake_result, tmp_path):
    lrs = [1e-3, 3e-5, 3e-4, 1e-4]  # written out of order
    for lr in lrs:
        for task, acc in (("mini_mnist", 50.0 + 1e4 * lr), ("mini_textures", 40.0)):
            write_tune_run(write_fake_result, task, "full", lr, acc)
    grid = lr_grid(tmp_path / "results")
    assert list(grid.index.get_level_values("lr")) == ["3e-05", "1e-04", "3e-04", "1e-03"]
    assert grid["mean"].dtype.kind == "f" and grid["runs"].tolist() == [2, 2, 2, 2]  # the data stays numeric
    chosen = selected_lr(grid)
    assert chosen.loc["full", "lr"] == 1e-3 and isinstance(chosen.loc["full", "lr"], float)
    assert chosen.loc["full", "grid"] == "3e-05, 1e-04, 3e-04, 1e-03"
    with pd.option_context("display.precision", 2):  # setup_notebook's display precision
        shown = repr(grid) + repr(chosen) + grid.to_html() + chosen.to_html()
    assert "3e-05" in shown and "0.0," not in shown and "[0.0" not in shown and "0.000030" not in shown
    for lr in (3e-5, 2.5e-4, 1 / 3, 0.1):
        assert float(format_lr(lr)) == lr


def test_runs_of_another_study_never_mix_into_the_choice(write_fake_result, tmp_path):
    write_tune_run(write_fake_result, "mini_mnist", "ship", 0.1, 50.0)
    write_tune_run(write_fake_result, "mini_mnist", "ship", 0.3, 40.0)
    path = write_fake_result("mini_mnist", "ship", 0, 99.0, protocol="tune", tag="pilot-e40-lr3e-1")
    r = pd.read_json(path, typ="series")
    r["config"]["lr"] = 0.3
    path.write_text(r.to_json())
    assert selected_lr(lr_grid(tmp_path / "results")).loc["ship", "lr"] == 0.1
    pilot = lr_grid(tmp_path / "results", tag_prefix="pilot-e40-lr")
    assert list(pilot.index) == [("ship", "3e-01")] and pilot["mean"].iloc[0] == 99.0


def write_pilot_run(write_fake_result, task, method, epochs, lr, val_loss, acc=50.0, seed=1):
    import json

    path = write_fake_result(task, method, seed, acc, protocol="tune", tag=f"pilot-e{epochs}-lr{lr}")
    r = json.loads(path.read_text())
    r["history"][-1]["eval_loss"] = val_loss
    path.write_text(json.dumps(r))


def test_budget_pilot_picks_the_budget_after_which_doubling_stops_helping(write_fake_result, tmp_path):
    from shiplib.report.tuning import budget_pilot, chosen_budget

    losses = {  # (task, method): validation loss of the better lr at 10, 20, 40 epochs
        ("mini_mnist", "ship"): (1.2, 1.0, 0.99), ("mini_mnist", "vpt_deep"): (1.3, 1.1, 1.09),
        ("mini_ihc_hema", "ship"): (0.8, 0.70, 0.71), ("mini_ihc_hema", "vpt_deep"): (0.6, 0.55, 0.545)}
    for (task, method), values in losses.items():
        for epochs, loss in zip((10, 20, 40), values):
            write_pilot_run(write_fake_result, task, method, epochs, 0.1, loss)
            write_pilot_run(write_fake_result, task, method, epochs, 0.3, loss + 0.2)  # the worse lr
    pilot = budget_pilot(tmp_path / "results")
    assert len(pilot) == 24 and set(pilot["lr"]) == {"1e-01", "3e-01"}
    epochs, table = chosen_budget(pilot)
    assert epochs == 20  # 10 -> 20 helps by > 2 % everywhere; 20 -> 40 by at most 1 %
    assert (table["lr"] == "1e-01").all()
    assert table.loc[("mini_mnist", "ship", 10), "next_gain"] == pytest.approx(1 - 1.0 / 1.2)
    write_pilot_run(write_fake_result, "mini_mnist", "ship", 40, 0.1, 0.8)  # 40 epochs still help a lot here
    assert chosen_budget(budget_pilot(tmp_path / "results"))[0] is None
