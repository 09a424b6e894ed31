"""The committed distilled mini backbone: its card against its weights, its recipe, and the transfer targets."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np

from shiplib import repro
from shiplib.backbones import MINI_ARCH, create_backbone, create_mini_vit
from shiplib.backbones.distill_mini import BACKBONE_NAME, DISTILLED_NAME, DistillConfig
from shiplib.backbones.evidence import compute_evidence, pretrained_and_random_mini
from shiplib.data import list_tasks
from shiplib.utils.io import sha256_file

from _backbone_cards import card_fixtures

NAME = BACKBONE_NAME
MAX_CHECKPOINT_BYTES = 25 * 1024 * 1024
MAX_PRETRAINING_MINUTES = 4 * 60


checkpoint, card = card_fixtures(NAME)


def test_card_names_the_file_and_its_sha256(checkpoint, card):
    assert card["name"] == DISTILLED_NAME and card["file"] == checkpoint.name
    assert sha256_file(checkpoint) == card["sha256"]
    assert checkpoint.stat().st_size <= MAX_CHECKPOINT_BYTES


def test_weights_load_into_the_mini_architecture(checkpoint, card):
    arch = {k: v for k, v in card["architecture"].items() if k not in ("timm_class", "num_classes")}
    assert arch == MINI_ARCH and MINI_ARCH["depth"] == 12 and MINI_ARCH["img_size"] == 32
    vit = create_backbone(NAME)
    assert sum(p.numel() for p in vit.parameters()) == card["parameters"]
    reference = create_mini_vit(num_classes=0)
    assert set(vit.state_dict()) == set(reference.state_dict())


def test_card_recipe_is_the_default_distill_config_within_the_budget(card):
    """`python -m shiplib.backbones.distill_mini` with its defaults is the run that made the committed weights."""
    defaults = {k: v for k, v in asdict(DistillConfig()).items() if k != "threads"}
    assert {k: card["training"].get(k) for k in defaults} == defaults
    assert card["complete"] and card["epochs_completed"] == card["epochs"] == len(card["history"])
    assert card["wall_time_minutes"] <= MAX_PRETRAINING_MINUTES and card["machine"]["cpu_threads"] <= 2
    losses = [h["loss_pooled"] + h["loss_spatial"] + h["loss_pixel"] for h in card["history"]]
    assert losses[-1] < losses[0]
    assert "no mini-VTAB image" in card["data"]["excluded"] and card["licence"]


def test_card_meets_the_transfer_targets(card):
    """Linear probe on frozen CLS features: pretrained beats random init by >= 6 points on average and on >= 5 of
    the 7 mini-VTAB tasks."""
    rows = card["evidence"]["linear_probe"]["tasks"]
    assert set(rows) == set(list_tasks("mini"))
    pre = {t: r["pretrained"]["test_acc"] for t, r in rows.items()}
    rnd = {t: r["random_init"]["test_acc"] for t, r in rows.items()}
    gain = np.mean(list(pre.values())) - np.mean(list(rnd.values()))
    assert gain >= 6.0, f"probe mean {np.mean(list(pre.values())):.1f} vs random {np.mean(list(rnd.values())):.1f}"
    assert sum(pre[t] > rnd[t] for t in rows) >= 5, {t: (pre[t], rnd[t]) for t in rows}


def test_card_evidence_is_reproduced_from_the_weights(checkpoint, card):
    """The probe on the affinity task and the affinity matrices, recomputed from the committed weights, agree with
    the card within shiplib.repro's tolerances."""
    ref = card["evidence"]
    task = ref["affinity"]["task"]
    fresh = compute_evidence(*pretrained_and_random_mini(seed=0, name=NAME), tasks=[task], affinity_task=task)
    sub = dict(ref, linear_probe=dict(ref["linear_probe"], tasks={task: ref["linear_probe"]["tasks"][task]}))
    failed = [(c.name, c.value, c.reference) for c in repro.evidence_comparisons(fresh, sub) if not c.ok]
    assert not failed, failed
