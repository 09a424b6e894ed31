"""The reproducibility policy: tolerances measured, checks that pass on reproductions and fail on discrepancies."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shiplib import repro
from shiplib.backbones.evidence import load_card
from shiplib.engine.results import read_result, result_path

ROOT = Path(__file__).resolve().parents[1]
SPREAD = sorted((ROOT / "results" / "repro" / "spread").glob("*.json"))


def test_within_and_compare():
    assert repro.within("accuracy", 67.4, 67.4) and repro.within("accuracy", 66.4, 67.4)
    assert not repro.within("accuracy", 66.2, 67.4)
    assert repro.within("loss", [1.0, 2.0], [1.005, 1.99]) and not repro.within("loss", [1.0, 2.0], [1.0, 2.5])
    assert not repro.within("affinity", np.zeros(3), np.zeros(4)), "a shape mismatch is never a reproduction"
    c = repro.compare("acc", "accuracy", 60.0, 67.4)
    assert not c.ok and c.difference == pytest.approx(-7.4)
    assert repro.tolerance("accuracy").describe() == "±1 points"
    with pytest.raises(KeyError, match="kinds: accuracy"):
        repro.tolerance("speed")


def test_every_tolerance_says_what_it_rests_on():
    table = repro.tolerance_table()
    assert set(table.index.get_level_values("kind")) == set(repro.TOLERANCES) and table["basis"].str.len().min() > 40
    assert repro.tolerance("accuracy", "sep").atol > repro.tolerance("accuracy", "ship").atol == 1.0


@pytest.mark.skipif(not SPREAD, reason="no spread measurement committed (scripts/measure_repro_spread.py)")
def test_tolerances_cover_the_measured_cross_kernel_spread():
    """Every deviation measured with other kernels and thread counts lies within the tolerance chosen from it."""
    for path in SPREAD:
        m = json.loads(path.read_text())
        for method, run in m["runs"].items():
            for metric in ("acc_last", "acc_max_over_epochs"):
                assert repro.within("accuracy", *run[metric], method=method), (path.name, method, metric, run[metric])
            assert run["loss_max_rel_diff"] <= repro.tolerance("loss", method).rtol, (path.name, method)
        if "evidence" in m:
            for task, rows in m["evidence"]["probe"].items():
                for name, (fresh, card) in rows.items():
                    assert repro.within("probe_accuracy", fresh, card), (path.name, task, name, fresh, card)
            assert m["evidence"]["affinity_max_abs_diff"] <= repro.tolerance("affinity").atol, path.name


def test_card_evidence_check_passes_on_itself_and_fails_on_a_changed_number():
    ev = load_card()["evidence"]
    assert repro.all_reproduced(repro.evidence_comparisons(ev, ev))
    probe = copy.deepcopy(ev)
    task = next(iter(probe["linear_probe"]["tasks"]))
    probe["linear_probe"]["tasks"][task]["pretrained"]["test_acc"] += 3.2  # 16 of 500 test images
    bad = [c.name for c in repro.evidence_comparisons(probe, ev) if not c.ok]
    assert bad == [f"probe {task} pretrained"]
    aff = copy.deepcopy(ev)
    aff["affinity"]["matrices"]["pretrained"][2][3] += 1e-3
    assert [c.kind for c in repro.evidence_comparisons(aff, ev) if not c.ok] == ["affinity"]
    table = repro.comparison_table(repro.evidence_comparisons(aff, ev))
    assert list(table.columns) == ["reference", "tolerance", "reproduced"]
    assert table["reproduced"].sum() == len(table) - 1


def test_result_check_passes_on_itself_and_fails_on_a_changed_number():
    r = read_result(result_path(ROOT / "results", "mini", "mini_mnist", "ship", 1))
    assert repro.all_reproduced(repro.result_comparisons(r, r))
    worse = dict(r, acc_last=r["acc_last"] - 1.2)
    assert [c.name for c in repro.result_comparisons(worse, r) if not c.ok] == ["acc_last"]
    drift = dict(r, history=[dict(h, loss=h["loss"] * 1.1) for h in r["history"]])
    assert [c.kind for c in repro.result_comparisons(drift, r) if not c.ok] == ["loss"]


def test_comparison_tables_read_the_same_whichever_number_drifts_most():
    """Two reproductions within tolerance whose largest deviation lies elsewhere (another machine's kernels) give
    the same table: the committed notebook outputs show these tables."""
    r = read_result(result_path(ROOT / "results", "mini", "mini_mnist", "ship", 1))

    def drifted(epoch):
        return dict(r, history=[dict(h, loss=h["loss"] * (1.02 if i == epoch else 1.001))
                                for i, h in enumerate(r["history"])])

    tables = [repro.comparison_table(repro.result_comparisons(drifted(e), r)) for e in (1, len(r["history"]) - 2)]
    assert tables[0].equals(tables[1]) and tables[0]["reproduced"].all()
    ev = load_card()["evidence"]
    tables = []
    for i, j in ((0, 1), (7, 4)):
        aff = copy.deepcopy(ev)
        aff["affinity"]["matrices"]["pretrained"][i][j] += 6e-5
        tables.append(repro.comparison_table(repro.evidence_comparisons(aff, ev)))
    assert tables[0].equals(tables[1]) and tables[0]["reproduced"].all()


def test_the_affinity_check_catches_a_changed_weight():
    """Kernel noise stays within the affinity tolerance; a 1 % change of one block's weights does not."""
    from shiplib.backbones.evidence import layer_affinity
    from shiplib.backbones.loading import create_backbone

    vit = create_backbone("mini")
    a = layer_affinity(vit, "mini_mnist", split="val200")
    assert repro.within("affinity", layer_affinity(vit, "mini_mnist", split="val200"), a)
    with torch.no_grad():
        vit.blocks[5].mlp.fc2.weight.mul_(1.01)
    assert not repro.within("affinity", layer_affinity(vit, "mini_mnist", split="val200"), a)
