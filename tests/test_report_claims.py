"""The claims table: every verdict follows from the committed results by the stated rule, and changes when a
result changes."""
import json
import shutil
from pathlib import Path

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
                   "DA improves SHIP", "Decoupled attention reduces inference cost", "SHIP is robust to threshold α",
                   "SHIP is robust to prompt length K", "SHIP gains 4.9 points over VPT-deep on VTAB-1k"):
        assert needed in table.index
    for method in ("linear", "full", "vpt_shallow", "spt", "sep"):
        assert f"SHIP is more accurate than {method}" in table.index
    assert (table["verdict"] == OFFLINE).sum() == 1
    assert "python -m shiplib sweep --tasks vtab1k" in table.loc["SHIP gains 4.9 points over VPT-deep on VTAB-1k",
                                                                  "evidence"]


def copy_results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    shutil.copytree(REPO / "results" / "mini", root / "mini")
    shutil.copytree(REPO / "results" / "bench", root / "bench")
    return root


def test_a_changed_result_changes_the_verdict(tmp_path):
    root = copy_results(tmp_path)
    before = {c.claim: c.verdict for c in claims(root)}
    assert before["SHIP is more accurate than VPT-deep"] != HOLDS
    for path in (root / "mini").glob("*/ship/seed*.json"):
        r = json.loads(path.read_text())
        r["acc_last"] = r["history"][-1]["eval_acc"] = min(100.0, r["acc_last"] + 15)  # a consistent result
        path.write_text(json.dumps(r))
    after = {c.claim: c.verdict for c in claims(root)}
    assert after["SHIP is more accurate than VPT-deep"] == HOLDS
    assert after["DA improves SHIP"] == HOLDS  # full SHIP now far ahead of SHIP without DA


def test_readme_results_section_starts_with_the_claims_table():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Results"):]
    first_table = section[section.index("| claim |"):].split("\n\n")[0]
    for claim in claims(REPO / "results"):
        row = f"| {claim.claim} | {claim.paper} | {claim.companion} | {claim.verdict} |"
        assert row in first_table, row


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
            f"**{top['change']:+.1f} points, 95 % CI {top['CI']}, {top['W/T/L']}**") in text
