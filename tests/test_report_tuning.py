"""lr selection from tune-protocol results (validation only)."""
import pandas as pd

from shiplib.report import lr_grid, selected_lr


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
    assert list(grid.index.get_level_values("lr")) == [0.01, 0.1, 1.0]
    assert pd.isna(grid.loc[("ship", 1.0), "mean"])
    chosen = selected_lr(grid).loc["ship"]
    assert chosen["lr"] == 0.1 and chosen["val_acc_mean"] == 50.0 and chosen["at_grid_edge"]


def test_ties_go_to_the_smaller_lr(write_fake_result, tmp_path):
    for lr in (0.1, 0.01):
        path = write_fake_result("mini_mnist", "vpt_deep", 0, 50.0, protocol="tune", tag=f"lr{lr}")
        r = pd.read_json(path, typ="series")
        r["config"]["lr"] = lr
        path.write_text(r.to_json())
    assert selected_lr(lr_grid(tmp_path / "results")).loc["vpt_deep", "lr"] == 0.01


def test_no_tune_results_give_an_empty_grid(tmp_path):
    assert lr_grid(tmp_path).empty
