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


# ----- per-task lrs on the 1-3-10 ladder -----
def test_the_lr_ladder_has_exact_rungs_and_hard_limits():
    from shiplib.report.tuning import LR_BOUNDS, lr_neighbours

    assert lr_neighbours(0.1) == (0.03, 0.3) and lr_neighbours(0.3) == (0.1, 1.0)
    assert lr_neighbours(1e-3) == (3e-4, 3e-3) and lr_neighbours(0.5) == (0.3, 1.0)  # off the ladder: nearest rungs
    assert lr_neighbours(LR_BOUNDS[1]) == (1.0, None) and lr_neighbours(LR_BOUNDS[0]) == (None, 3e-5)


def _runs(rows):
    return pd.DataFrame([dict(method="ship", task="t", lr=lr, seed=seed, val_acc=acc) for lr, seed, acc in rows],
                        columns=["method", "task", "lr", "seed", "val_acc"])


def test_a_per_task_search_brackets_the_best_lr_and_decides_close_calls_on_two_seeds():
    from shiplib.report.tuning import next_tuning_runs, per_task_lr

    start = {"ship": 0.1}
    assert next_tuning_runs(_runs([]), start, ["t"]) == [("t", "ship", 0.03, 1), ("t", "ship", 0.1, 1),
                                                         ("t", "ship", 0.3, 1)]
    rows = [(0.03, 1, 50.0), (0.1, 1, 60.0), (0.3, 1, 70.0)]  # best at the upper end: one rung further
    assert next_tuning_runs(_runs(rows), start, ["t"]) == [("t", "ship", 1.0, 1)]
    rows.append((1.0, 1, 69.0))  # interior now, but within 2 points of the runner-up: second seeds of both
    assert next_tuning_runs(_runs(rows), start, ["t"]) == [("t", "ship", 0.3, 2), ("t", "ship", 1.0, 2)]
    rows += [(0.3, 2, 66.0), (1.0, 2, 69.0)]  # means 68.0 and 69.0: 1.0 wins, now at the upper end again
    assert next_tuning_runs(_runs(rows), start, ["t"]) == [("t", "ship", 3.0, 1)]
    rows.append((3.0, 1, 20.0))  # diverges: 1.0 is interior and 1 point ahead of 0.3 on two seeds each: settled
    table = per_task_lr(_runs(rows), start).iloc[0]
    assert table["settled"] and table["lr"] == 1.0 and table["val_acc"] == 69.0 and table["seeds"] == 2
    assert table["runner_up"] == "3e-01" and table["gap"] == pytest.approx(1.0) and table["at_edge"] is None
    assert table["tried"] == "3e-02, 1e-01, 3e-01, 1e+00, 3e+00"


def test_a_best_lr_at_a_hard_limit_is_settled_and_says_so():
    from shiplib.report.tuning import per_task_lr

    table = per_task_lr(_runs([(1.0, 1, 50.0), (3.0, 1, 60.0)]), {"ship": 1.0}).iloc[0]
    assert table["settled"] and table["lr"] == 3.0 and table["at_edge"] == "at the hard limit 3e+00"


def test_tuning_commands_reuse_the_pilot_at_the_same_budget_only(write_fake_result, tmp_path):
    import json

    from shiplib.report.tuning import tuning_commands

    def write(tag, lr, acc):
        path = write_fake_result("mini_mnist", "ship", 1, acc, protocol="tune", tag=tag)
        r = json.loads(path.read_text())
        r["config"]["lr"] = lr
        path.write_text(json.dumps(r))

    write("pilot-e20-lr1e-1", 0.1, 60.0)
    write("pilot-e20-lr3e-1", 0.3, 70.0)
    write("pilot-e40-lr1e+00", 1.0, 90.0)  # another budget: not part of the study
    cmds = tuning_commands(tmp_path / "results", 20, ["mini_mnist"], ["ship"])
    assert cmds == ["--task mini_mnist --method ship --seed 1 --protocol tune --epochs 20 --tag tune-e20-lr1e+00 "
                    "--set lr=1e+00 --set lr_schedule=scaled --set warmup_epochs=2 --set eval_every=2"]


def test_chosen_runs_name_every_tag_holding_the_chosen_lr(write_fake_result, tmp_path):
    import json

    from shiplib.report.tuning import chosen_runs

    def write(tag, lr, acc, seed=1, method="ship"):
        path = write_fake_result("mini_mnist", method, seed, acc, protocol="tune", tag=tag)
        r = json.loads(path.read_text())
        r["config"]["lr"] = lr
        path.write_text(json.dumps(r))

    write("pilot-e20-lr1e-1", 0.1, 60.0)
    write("pilot-e20-lr3e-1", 0.3, 70.0)
    write("tune-e20-lr3e-01", 0.3, 69.0, seed=2)  # the second seed of the same lr, made by the study
    write("tune-e20-lr1e+00", 1.0, 50.0)
    write("pilot-e20-lr1e-1", 0.1, 55.0, method="vpt_deep")
    assert chosen_runs(tmp_path / "results", 20, "mini_mnist", ["vpt_deep", "ship"]) == [
        "vpt_deep+pilot-e20-lr1e-1", "ship+pilot-e20-lr3e-1", "ship+tune-e20-lr3e-01"]
    assert chosen_runs(tmp_path / "results", 40, "mini_mnist", ["ship"]) == []


def test_the_readme_states_the_budget_pilot_as_the_committed_runs_give_it():
    from pathlib import Path

    from shiplib.report.tuning import budget_pilot

    repo = Path(__file__).resolve().parents[1]
    pilot = budget_pilot(repo / "results")
    at = pilot[(pilot["lr"] == "1e-01") & (pilot["seed"] == 1)].pivot_table(index=["task", "method"],
                                                                          columns="epochs", values="val_loss")
    if 40 not in at or at[40].isna().any():
        pytest.skip("the committed budget pilot lacks its 40-epoch runs at lr 0.1")
    first, second = 100 * (1 - at[20] / at[10]), 100 * (1 - at[40] / at[20])
    gains = second[second > 0]
    text = " ".join((repo / "README.md").read_text(encoding="utf-8").split())
    assert f"fell by {first.min():.0f}–{first.max():.0f} % from 10 to 20 epochs" in text
    assert f"by {gains.min():.0f}–{gains.max():.0f} % from 20 to 40" in text
    (task, method), = second[second <= 0].index
    assert f"except VPT-deep on ihc_hema, {-second.min():.0f} % higher at 40" in text
    assert (task, method) == ("mini_ihc_hema", "vpt_deep")
    acc = pilot[(pilot["lr"] == "1e-01") & (pilot["task"] == "mini_ihc_hema")].pivot_table(
        index="method", columns="epochs", values="val_acc")
    assert (f"SHIP's validation accuracy rose from {acc.loc['ship', 20]:.1f} (20 epochs) to "
            f"{acc.loc['ship', 40]:.1f} (40), level with VPT-deep ({acc.loc['vpt_deep', 20]:.1f}, "
            f"{acc.loc['vpt_deep', 40]:.1f})") in text


def test_pilot_differences_follow_each_methods_best_lr_per_budget(write_fake_result, tmp_path):
    from shiplib.report.tuning import budget_pilot, pilot_differences

    for epochs, ship, vpt in ((10, (60.0, 50.0), (70.0, 65.0)), (20, (66.0, 72.0), (71.0, 60.0))):
        for lr, s, v in ((0.1, ship[0], vpt[0]), (0.3, ship[1], vpt[1])):
            write_pilot_run(write_fake_result, "mini_mnist", "ship", epochs, lr, 1.0, acc=s)
            write_pilot_run(write_fake_result, "mini_mnist", "vpt_deep", epochs, lr, 1.0, acc=v)
    table = pilot_differences(budget_pilot(tmp_path / "results"))
    assert table.loc[("mini_mnist", 10), "ship − vpt_deep"] == -10.0
    assert table.loc[("mini_mnist", 20)].tolist() == [72.0, "3e-01", 71.0, "1e-01", 1.0, "1e-01, 3e-01"]
    assert pilot_differences(budget_pilot(tmp_path / "nothing")).empty


def test_the_readme_states_the_pilot_gaps_as_computed():
    from pathlib import Path

    from shiplib.report.tuning import budget_pilot, pilot_differences

    repo = Path(__file__).resolve().parents[1]
    gaps = pilot_differences(budget_pilot(repo / "results"))["ship − vpt_deep"]
    if len(gaps) < 9:
        pytest.skip("the committed budget pilot is incomplete")
    text = " ".join((repo / "README.md").read_text(encoding="utf-8").split())
    ihc = gaps.xs("mini_ihc_hema")
    assert (f"{ihc[10]:+.1f} points at 10 epochs, {ihc[20]:+.1f} at 20 and {ihc[40]:+.1f} at 40".replace("-", "−")
            .replace("+", "", 1)) in text
    for task in ("mini_mnist", "mini_dsprites_loc"):
        assert "({})".format(", ".join(f"{gaps[(task, e)]:+.1f}" for e in (10, 20, 40)).replace("-", "−")) in text


def test_study_runs_of_one_lr_share_a_label_whatever_their_tag():
    from shiplib.report.tuning import study_run_label

    assert study_run_label("ship+pilot-e20-lr3e-1") == study_run_label("ship+tune-e20-lr3e-01") == "ship (lr 3e-01)"
    assert study_run_label("vpt_deep+tune-e20-lr1e+00") == "vpt_deep (lr 1e+00)"
    assert study_run_label("ship+no-sip") == "ship+no-sip" and study_run_label("ship") == "ship"


def test_final_runs_start_once_a_tasks_lr_is_settled_and_skip_finished_ones(write_fake_result, tmp_path):
    import json

    from shiplib.report.tuning import final_commands, scaled_grid_tag

    def write(lr, acc, seed=1, task="mini_mnist"):
        path = write_fake_result(task, "ship", seed, acc, protocol="tune", tag=f"tune-e20-lr{lr}")
        r = json.loads(path.read_text())
        r["config"]["lr"] = lr
        path.write_text(json.dumps(r))

    results = tmp_path / "results"
    tasks = ["mini_mnist", "mini_textures"]
    write(0.1, 60.0), write(0.3, 70.0)  # best at the upper end: 1.0 still to try
    for lr, acc in ((0.1, 50.0), (0.3, 40.0), (0.03, 45.0)):
        write(lr, acc, task="mini_textures")
    assert final_commands(results, 20, tasks, ["ship"]) == [
        f"--task mini_textures --method ship --seed {s} --protocol final --epochs 20 --tag scaled-e20 --set lr=1e-01 "
        "--set lr_schedule=scaled --set warmup_epochs=2 --set eval_every=2" for s in (1, 2, 3)]
    write(1.0, 60.0)  # mnist settles at 0.3 (10 points ahead)
    assert [c.split(" --seed")[0] for c in final_commands(results, 20, tasks, ["ship"])] == \
        ["--task mini_mnist --method ship"] * 3 + ["--task mini_textures --method ship"] * 3
    assert "--set lr=3e-01" in final_commands(results, 20, tasks, ["ship"])[0]
    assert scaled_grid_tag(20) == "scaled-e20"
    write_fake_result("mini_mnist", "ship", 2, 66.0, tag=scaled_grid_tag(20))  # a finished final run is not repeated
    assert [c.split(" --protocol")[0] for c in final_commands(results, 20, tasks[:1], ["ship"])] == \
        ["--task mini_mnist --method ship --seed 1", "--task mini_mnist --method ship --seed 3"]


def test_the_chosen_lr_table_shows_settled_choices_and_open_searches(write_fake_result, tmp_path):
    import json

    from shiplib.report.tuning import chosen_lr_table

    def write(task, lr, acc, seed=1):
        path = write_fake_result(task, "ship", seed, acc, protocol="tune", tag=f"tune-e20-lr{lr}")
        r = json.loads(path.read_text())
        r["config"]["lr"] = lr
        path.write_text(json.dumps(r))

    for lr, acc in ((0.03, 45.0), (0.1, 50.0), (0.3, 40.0)):
        write("mini_textures", lr, acc)
    write("mini_mnist", 0.1, 60.0), write("mini_mnist", 0.3, 70.0)
    table = chosen_lr_table(tmp_path / "results", 20, ["ship", "vpt_deep"])
    assert list(table.columns) == ["mnist", "textures"] and list(table.index) == ["ship"]
    assert table.loc["ship", "textures"] == "1e-01 (50.0, 1 seed)"
    assert table.loc["ship", "mnist"] == "open: best so far 3e-01"
    assert chosen_lr_table(tmp_path / "results", 40, ["ship"]).empty


def test_step_curves_come_from_the_scaled_grid_once_every_method_has_its_final_runs(write_fake_result, tmp_path):
    import json

    from shiplib.report.tuning import scaled_steps

    def with_steps(path, lr):
        r = json.loads(path.read_text())
        r["config"]["lr"] = lr
        for h in r["history"]:
            h.update(step_loss=[1.0, 0.9], step_ce=[1.0, 0.9], step_lr=[lr, lr])
        path.write_text(json.dumps(r))

    for method, lr in (("ship", 0.3), ("vpt_deep", 0.1)):
        with_steps(write_fake_result("mini_mnist", method, 1, 60.0, protocol="tune", tag=f"tune-e20-lr{lr}"), lr)
    steps, where = scaled_steps(tmp_path / "results", 20, "mini_mnist", ["vpt_deep", "ship"])
    assert set(steps["run"]) == {"ship (lr 3e-01)", "vpt_deep (lr 1e-01)"} and "per-task lr study" in where
    with_steps(write_fake_result("mini_mnist", "ship", 1, 70.0, tag="scaled-e20"), 0.3)  # one method is not enough
    assert "per-task lr study" in scaled_steps(tmp_path / "results", 20, "mini_mnist", ["vpt_deep", "ship"])[1]
    for seed in (1, 2):
        with_steps(write_fake_result("mini_mnist", "vpt_deep", seed, 70.0, tag="scaled-e20"), 0.1)
    steps, where = scaled_steps(tmp_path / "results", 20, "mini_mnist", ["vpt_deep", "ship"])
    assert where.startswith("the final runs of the scaled grid (tag scaled-e20") and "2 seeds" in where
    assert steps.groupby("run")["seed"].nunique().to_dict() == {"ship (lr 3e-01)": 1, "vpt_deep (lr 1e-01)": 2}


def test_final_runs_made_before_a_choice_changed_are_listed(write_fake_result, tmp_path):
    import json

    from shiplib.report.tuning import lr_mismatches

    def write(lr, acc, seed=1, protocol="tune", tag=None):
        path = write_fake_result("mini_mnist", "ship", seed, acc, protocol=protocol, tag=tag or f"tune-e20-lr{lr}")
        r = json.loads(path.read_text())
        r["config"]["lr"] = lr
        path.write_text(json.dumps(r))

    results = tmp_path / "results"
    for lr, acc in ((0.03, 50.0), (0.1, 70.0), (0.3, 60.0)):
        write(lr, acc)
    write(0.1, 80.0, protocol="final", tag="scaled-e20")
    write(0.1, 80.0, seed=2, protocol="final", tag="no-da.scaled-e20")
    write(0.3, 80.0, protocol="final", tag="lr3e-1")  # another study's run: not checked
    assert lr_mismatches(results, 20) == []
    write(0.3, 90.0, seed=2)  # 0.3 now leads on the mean of two seeds (75.0 against 70.0), at the upper end
    assert lr_mismatches(results, 20)[1] == ("mini/mini_mnist/ship+scaled-e20/seed1.json: lr 1e-01, now chosen "
                                             "nothing (the search is open again)")
    write(1.0, 20.0)  # the next rung diverges: 0.3 is settled
    assert lr_mismatches(results, 20) == [
        "mini/mini_mnist/ship+no-da.scaled-e20/seed2.json: lr 1e-01, now chosen 3e-01",
        "mini/mini_mnist/ship+scaled-e20/seed1.json: lr 1e-01, now chosen 3e-01"]


def test_the_readme_lists_the_per_task_lrs_as_the_committed_search_gives_them():
    from pathlib import Path

    from shiplib.report.tables import METHODS, markdown_table
    from shiplib.report.tuning import chosen_lr_table

    repo = Path(__file__).resolve().parents[1]
    table = markdown_table(chosen_lr_table(repo / "results", 20, list(METHODS)))
    assert table in (repo / "README.md").read_text(encoding="utf-8"), f"README's per-task lr table is not:\n{table}"


def test_grid_progress_counts_settled_tasks_and_final_runs_and_says_done_only_when_both_are_complete(
        write_fake_result, tmp_path):
    import json

    from shiplib.report.tables import task_order
    from shiplib.report.tuning import grid_progress

    def tune(task, lr, acc):
        path = write_fake_result(task, "ship", 1, acc, protocol="tune", tag=f"tune-e20-lr{lr}")
        r = json.loads(path.read_text())
        r["config"]["lr"] = lr
        path.write_text(json.dumps(r))

    results, tasks = tmp_path / "results", task_order("mini")
    for lr, acc in ((0.1, 60.0), (0.3, 70.0), (1.0, 60.0)):  # settled at 0.3, 10 points ahead
        tune("mini_mnist", lr, acc)
    tune("mini_textures", 0.1, 50.0)  # open: its neighbours are missing
    write_fake_result("mini_mnist", "ship", 1, 70.0, tag="scaled-e20")
    write_fake_result("mini_mnist", "ship", 2, 70.0, tag="scaled-e20")
    write_fake_result("mini_mnist", "ship", 3, 70.0, tag="scaled-e40")  # another budget's run: not counted
    progress = grid_progress(results, 20, ["ship", "vpt_deep"])
    assert progress.loc["ship"].tolist() == [4, "1 of 7 tasks", "2 of 21", "being run"]
    assert progress.loc["vpt_deep"].tolist() == [0, "0 of 7 tasks", "0 of 21", "being run"]
    for task in tasks:
        for lr, acc in ((0.03, 40.0), (0.1, 50.0), (0.3, 40.0)) if task != "mini_mnist" else ():
            tune(task, lr, acc)
    for task in tasks:
        for seed in (1, 2, 3):
            write_fake_result(task, "ship", seed, 70.0, tag="scaled-e20")
    assert grid_progress(results, 20, ["ship"]).loc["ship"].tolist() == [3 + 3 * 6, "7 of 7 tasks", "21 of 21",
                                                                          "done"]


def test_the_readme_shows_the_scaled_grids_progress_as_the_committed_results_give_it():
    from pathlib import Path

    from shiplib.report.tables import METHODS, markdown_table
    from shiplib.report.tuning import CHOSEN_BUDGET, grid_progress

    repo = Path(__file__).resolve().parents[1]
    table = markdown_table(grid_progress(repo / "results", CHOSEN_BUDGET, list(METHODS)))
    assert table in (repo / "README.md").read_text(encoding="utf-8"), f"README's progress table is not:\n{table}"
