"""The claims table: every verdict follows from the committed results by the stated rule, and changes when a
result changes."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from shiplib.report.claims import FAILS, HOLDS, OFFLINE, claims, claims_table, verdict
from shiplib.report.paired import PairedComparison

REPO = Path(__file__).resolve().parents[1]


def comparison(low, high, mean=0.0):
    return PairedComparison("ship", "vpt_deep", "acc_last", 21, 7, 0, 0, mean, low, high, 0.95, 1, 0, 1, "pairs",
                            10000, 0)


@pytest.mark.parametrize("low, high, higher_is_better, want", [
    (0.1, 2.0, True, HOLDS), (-2.0, -0.1, True, f"{FAILS}: ship is lower"),
    (-1.0, 1.0, True, f"{FAILS}: the difference is within seed noise"),
    (-2.0, -0.1, False, HOLDS), (0.1, 2.0, False, f"{FAILS}: ship is higher")])
def test_verdict_rule(low, high, higher_is_better, want):
    assert verdict(comparison(low, high), higher_is_better) == want


def test_committed_claims_cover_every_testable_claim():
    table = claims_table(REPO / "results")
    assert table.index.is_unique
    for needed in ("SHIP is more accurate than VPT-deep", "SHIP's training loss falls below VPT-deep's (Fig. 3)",
                   "DA improves SHIP", "Decoupled attention reduces inference cost",
                   "SHIP is robust to threshold α (committed protocol)",
                   "SHIP is robust to prompt length K (committed protocol)",
                   "SHIP gains 4.9 points over VPT-deep on VTAB-1k"):
        assert needed in table.index
    for method in ("linear", "full", "vpt_shallow", "spt", "sep"):
        for protocol in ("", " (committed protocol)"):
            assert f"SHIP is more accurate than {method}{protocol}" in table.index
    assert (table["verdict"] == OFFLINE).sum() == 1
    # the main grid is complete: no verdict rests on part of the tasks
    assert not table["verdict"].str.contains("tasks so far").any()
    assert "python -m shiplib sweep --tasks vtab1k" in table.loc["SHIP gains 4.9 points over VPT-deep on VTAB-1k",
                                                                  "evidence"]


def copy_results(tmp_path: Path, scaled: bool = True) -> Path:
    """The committed results in a scratch folder; `scaled=False` leaves out the scaled protocol's runs."""
    root = tmp_path / "results"
    shutil.copytree(REPO / "results" / "mini", root / "mini")
    shutil.copytree(REPO / "results" / "bench", root / "bench")
    if not scaled:
        from shiplib.report.claims import SCALED_GRID

        for folder in root.glob(f"mini/*/*{SCALED_GRID}"):
            shutil.rmtree(folder)
    return root


def test_a_changed_result_changes_the_verdict(tmp_path):
    from shiplib.report.claims import SCALED_GRID

    root = copy_results(tmp_path)
    before = {c.claim: c.verdict for c in claims(root)}
    assert before["SHIP is more accurate than VPT-deep"] != HOLDS
    for path in (root / "mini").glob(f"*/ship+{SCALED_GRID}/seed*.json"):
        r = json.loads(path.read_text())
        r["acc_last"] = r["history"][-1]["eval_acc"] = min(100.0, r["acc_last"] + 15)  # a consistent result
        path.write_text(json.dumps(r))
    after = {c.claim: c.verdict for c in claims(root)}
    assert after["SHIP is more accurate than VPT-deep"] == HOLDS
    assert after["DA improves SHIP"] == HOLDS  # full SHIP now far ahead of SHIP without DA
    for claim in ("SHIP is more accurate than VPT-deep", "DA improves SHIP"):  # the other grid's rows are their own
        assert after[f"{claim} (committed protocol)"] == before[f"{claim} (committed protocol)"]


def test_readme_results_section_starts_with_the_claims_table():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Results"):]
    first_table = section[section.index("| claim |"):].split("\n\n")[0]
    for claim in claims(REPO / "results"):
        row = f"| {claim.claim} | {claim.paper} | {claim.companion} | {claim.verdict} |"
        assert row in first_table, row


def test_readme_compares_ship_with_every_method_under_both_protocols_as_the_results_do():
    from shiplib.report.claims import protocol_overview
    from shiplib.report.tables import markdown_table

    table = markdown_table(protocol_overview(REPO / "results"))
    assert table.rstrip("\n") in (REPO / "README.md").read_text(encoding="utf-8"), table


def test_readme_names_the_component_that_costs_ship_most_where_it_loses():
    from shiplib.engine.results import load_results
    from shiplib.report.ablations import ablation_results
    from shiplib.report.claims import costs_on_losing_tasks

    results = load_results(REPO / "results", protocol="final", benchmark="mini")
    table = costs_on_losing_tasks(results[results["tag"].isna()], ablation_results(REPO / "results"))
    top = table.iloc[0]
    assert table.index[0] == "DA"
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert (f"without decoupled attention SHIP gains\n"
            f"**{top['difference']:+.1f} points, 95 % CI {top['CI']}, {top['W/T/L']}**") in text


def write_scaled_run(root: Path, task: str, method: str, seed: int, acc: float, step_ce=None,
                     variant: str | None = None) -> Path:
    """A final run of the scaled protocol's grid (tag scaled-e20, or a SHIP ablation `variant`'s tag in that grid)
    under `root`, optionally with per-step losses."""
    from conftest import fake_result

    from shiplib.engine.results import result_path, run_name, write_result
    from shiplib.launch.ablations import grid_variant_tag
    from shiplib.report.claims import SCALED_GRID

    tag = SCALED_GRID if variant is None else grid_variant_tag(variant, SCALED_GRID)
    r = fake_result(task, method, seed, acc, tag=tag, epochs=2)
    if step_ce is not None:
        half = len(step_ce) // 2
        for h, part in zip(r["history"], (step_ce[:half], step_ce[half:])):
            h.update(step_loss=list(part), step_ce=list(part), step_lr=[0.1] * len(part),
                     step_grad_norm={"head": [2.0 * c for c in part], "prompts": [0.1] * len(part)})
    return write_result(result_path(root, "mini", task, run_name(method, tag), seed), r)


def main_grid_rows(root: Path) -> list[str]:
    """The claims of the main (scaled) grid's accuracy, convergence and component rows."""
    return [c.claim for c in claims(root) if c.claim.startswith(("SHIP is more accurate", "SHIP's training loss"))
            and not c.claim.endswith("(committed protocol)") or c.claim.endswith("improves SHIP")]


def test_the_scaled_grid_leads_the_table_and_says_how_far_it_got(tmp_path):
    from shiplib.report.claims import protocol_differences, protocol_overview, protocol_sentence

    root = copy_results(tmp_path, scaled=False)
    names = [c.claim for c in claims(root)]
    assert "SHIP is more accurate than VPT-deep (committed protocol)" in names
    assert main_grid_rows(root) == []  # no scaled runs yet: no rows
    write_scaled_run(root, "mini_textures", "ship", 3, 50.0)
    write_scaled_run(root, "mini_clevr_count", "vpt_deep", 3, 50.0)
    assert main_grid_rows(root) == []  # both methods, but no shared cell yet
    for seed in (1, 2):
        write_scaled_run(root, "mini_mnist", "ship", seed, 80.0 + seed)
        write_scaled_run(root, "mini_mnist", "vpt_deep", seed, 70.0)
        write_scaled_run(root, "mini_ihc_hema", "ship", seed, 75.0)
        write_scaled_run(root, "mini_ihc_hema", "vpt_deep", seed, 74.0 - seed)
    table = claims_table(root)
    assert table.index[0] == "SHIP is more accurate than VPT-deep"  # the main grid's rows come first
    row = table.loc["SHIP is more accurate than VPT-deep"]
    assert row["verdict"] == HOLDS + " (2 of 7 tasks so far: mnist, ihc_hema)"
    assert "over 4 (task, seed) pairs" in row["companion"]
    assert "SHIP is more accurate than linear" not in table.index  # only the methods it has
    assert "SHIP's training loss falls below VPT-deep's (Fig. 3)" in table.index
    # the committed grid's rows are untouched by the scaled runs
    assert table.loc["SHIP is more accurate than VPT-deep (committed protocol)", "verdict"] == f"{FAILS}: ship is lower"
    per_task, overall = protocol_differences(root)
    assert per_task.loc["mini_mnist", "scaled: ship − vpt_deep"] == 11.5
    assert per_task.loc["mini_mnist", ["scaled: ship", "scaled: vpt_deep", "scaled: seeds"]].tolist() == [81.5, 70, 2]
    assert per_task.loc["mini_ihc_hema", "scaled: ship − vpt_deep"] == 2.5
    assert per_task.loc["mini_ihc_hema", "committed: ship − vpt_deep"] == -13.1
    assert pd.isna(per_task.loc["mini_textures", "scaled: ship − vpt_deep"])
    assert overall.loc[("scaled", "every task it has"), "pairs"] == 4
    assert overall.loc[("committed", "the tasks both grids have"), "tasks"] == 2
    assert overall.loc[("committed", "every task it has"), "pairs"] == 21
    sentence = protocol_sentence(root)
    assert sentence.startswith("Under the scaled protocol, ship − vpt_deep is +7.0 points, 95 % CI [")
    assert "over 4 (task, seed) pairs on 2 tasks" in sentence
    assert "Per task, scaled (committed): mnist +11.5 (+3.1), ihc_hema +2.5 (-13.1)." in sentence
    gain_ship = ((81.5 - per_task.loc["mini_mnist", "committed: ship"]) +
                 (75.0 - per_task.loc["mini_ihc_hema", "committed: ship"])) / 2
    assert f"ship gains {gain_ship:+.1f} and vpt_deep " in sentence and sentence.endswith("(mean over these tasks).")
    overview = protocol_overview(root)
    assert overview.loc[("vpt_deep", "scaled"), ["tasks", "ship mean", "its mean", "difference", "pairs"]].tolist() \
        == [2, 78.2, 71.2, 7.0, 4]  # (81 + 82 + 75 + 75) / 4, rounded to 0.1
    assert overview.loc[("vpt_deep", "scaled"), "verdict"] == HOLDS
    assert overview.loc[("vpt_deep", "committed"), "tasks"] == 7
    assert ("linear", "scaled") not in overview.index and ("linear", "committed") in overview.index
    assert protocol_sentence(copy_results(tmp_path / "bare", scaled=False)).startswith(
        "The scaled grid has no paired runs")
    write_scaled_run(root, "mini_mnist", "ship", 1, 50.0), write_scaled_run(root, "mini_mnist", "ship", 2, 50.0)
    assert claims_table(root).loc["SHIP is more accurate than VPT-deep",
                                  "verdict"].startswith(FAILS)  # a changed result changes the verdict


def test_training_losses_above_chance_after_the_warm_up_are_found(tmp_path):
    import numpy as np

    from shiplib.report.claims import losses_above_chance

    root = tmp_path / "results"
    calm = [2.3] * 10 + [1.0] * 90
    spike = [2.3] * 10 + [4.0] * 20 + [1.0] * 70  # above ln 10 right after the warm-up (the first tenth)
    write_scaled_run(root, "mini_mnist", "ship", 1, 60.0, step_ce=spike)
    write_scaled_run(root, "mini_mnist", "vpt_deep", 1, 60.0, step_ce=calm)
    table = losses_above_chance(root)
    assert list(table.index) == [("mini_mnist", "ship"), ("mini_mnist", "vpt_deep")]
    assert table["above_chance"].tolist() == [True, False]
    assert table.loc[("mini_mnist", "ship"), "peak_ce_after_warmup"] == pytest.approx(4.0)
    assert table.loc[("mini_mnist", "ship"), "chance_ce"] == pytest.approx(np.log(10))
    ship = table.loc[("mini_mnist", "ship")]  # two epochs of 50 steps: the spike lies in the first
    assert (ship["peak_epoch"], ship["largest_gradient"]) == (0, "head") and ship["lr_there"] == pytest.approx(0.1)
    assert ship["its_norm"] == pytest.approx(2.0 * np.mean(spike[10:50]))
    assert losses_above_chance(tmp_path / "none").empty


def test_the_scaled_grids_component_ablations_get_their_own_rows(tmp_path):
    root = copy_results(tmp_path, scaled=False)
    for seed in (1, 2, 3):
        write_scaled_run(root, "mini_mnist", "ship", seed, 70.0 + seed)
        write_scaled_run(root, "mini_mnist", "ship", seed, 60.0, variant="no-da")
    table = claims_table(root)
    row = table.loc["DA improves SHIP"]
    assert row["verdict"] == HOLDS + " (1 of 7 tasks so far: mnist)"
    assert "over 3 (task, seed) pairs" in row["companion"] and "without DA: -12.0 points" in row["companion"]
    assert "SIP improves SHIP" not in table.index  # no runs of that variant yet
    assert table.loc["DA improves SHIP (committed protocol)", "verdict"] != row["verdict"]  # its own row


def test_readme_compares_the_two_protocols_as_the_committed_runs_do():
    from shiplib.report.claims import protocol_sentence

    sentence = protocol_sentence(REPO / "results")
    assert sentence in " ".join((REPO / "README.md").read_text(encoding="utf-8").split()), sentence


def test_the_scaled_grid_names_what_costs_ship_most_from_its_own_ablations(tmp_path):
    from shiplib.launch.ablations import REFERENCE
    from shiplib.report.claims import (costs_on_losing_tasks, costs_sentence, grid_ablations, grid_results,
                                       variants_against)

    root = copy_results(tmp_path, scaled=False)
    for seed in (1, 2):
        write_scaled_run(root, "mini_mnist", "ship", seed, 70.0)  # SHIP loses on mnist ...
        write_scaled_run(root, "mini_mnist", "vpt_deep", seed, 75.0)
        write_scaled_run(root, "mini_ihc_hema", "ship", seed, 80.0)  # ... and wins on ihc_hema
        write_scaled_run(root, "mini_ihc_hema", "vpt_deep", seed, 74.0)
    results = grid_results(root, "mini", "scaled")

    def costs():
        return costs_on_losing_tasks(results, grid_ablations(root, "mini", "scaled"))

    assert costs().empty  # no ablation of the scaled grid yet
    assert costs_sentence(results, grid_ablations(root, "mini", "scaled")) == (
        "ship is behind vpt_deep on mnist -5.0; no component ablation has run on those tasks yet.")
    write_scaled_run(root, "mini_ihc_hema", "ship", 1, 95.0, variant="no-da")  # a winning task: not counted
    assert costs().empty
    write_scaled_run(root, "mini_mnist", "ship", 1, 67.0, variant="no-sip")
    for seed in (1, 2):
        write_scaled_run(root, "mini_mnist", "ship", seed, 76.0 + seed, variant="no-da")
    table = costs()
    assert list(table.index) == ["DA", "SIP"]  # largest gain from switching it off first
    assert table.loc["DA", ["tasks", "difference", "W/T/L", "pairs"]].tolist() == ["mini_mnist", 7.5, "2/0/0", 2]
    assert table.loc["SIP", ["difference", "pairs"]].tolist() == [-3.0, 1]
    sentence = costs_sentence(results, grid_ablations(root, "mini", "scaled"))
    assert sentence.startswith("ship is behind vpt_deep on mnist -5.0 (mean over seeds).")
    assert sentence.index("without DA +7.5 points") < sentence.index("without SIP -3.0 points, CI [-3.0, -3.0], W/T/L "
                                                                    "0/0/1 over 1 pairs.")
    # the scaled grid's ablations hold its own runs only, and the committed grid's do not hold them
    assert set(grid_ablations(root, "mini", "scaled")["variant"]) == {REFERENCE, "no-da", "no-sip"}
    committed = grid_ablations(root, "mini", "committed")
    assert len(committed) == len(grid_ablations(REPO / "results", "mini", "committed"))
    # SHIP and each variant against VPT-deep, paired over the cells both have, best first
    against = variants_against(results, grid_ablations(root, "mini", "scaled"))
    assert list(against.index) == ["ship+no-da", "ship", "ship+no-sip"]
    assert against.loc["ship+no-da", ["difference", "pairs"]].tolist() == [8.7, 3]  # (2 + 3 + 21) / 3
    assert against.loc["ship", ["difference", "W/T/L", "pairs"]].tolist() == [0.5, "2/0/2", 4]
    assert against.loc["ship+no-sip", ["difference", "CI", "pairs"]].tolist() == [-8.0, "[-8.0, -8.0]", 1]


def test_readme_names_what_costs_ship_most_on_the_scaled_grid_as_the_committed_runs_do():
    from shiplib.report.claims import costs_sentence, grid_ablations, grid_results

    sentence = costs_sentence(grid_results(REPO / "results", "mini", "scaled"),
                              grid_ablations(REPO / "results", "mini", "scaled"))
    assert sentence in " ".join((REPO / "README.md").read_text(encoding="utf-8").split()), sentence


def test_an_unknown_grid_is_named_with_the_valid_ones():
    from shiplib.report.claims import grid_results

    with pytest.raises(ValueError, match="unknown grid 'fast': use one of scaled, committed"):
        grid_results(REPO / "results", grid="fast")
