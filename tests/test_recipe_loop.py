"""The backbone recipes' shared loop: their schedule against the committed cards, the engine's optimiser groups, and
the log discipline (state first, then log) under a real failed write."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from shiplib.backbones import mini
from shiplib.backbones.distill_mini import BACKBONE_NAME as DISTILL_NAME
from shiplib.backbones.distill_mini import DistillConfig, DistillHeads, distill_mini
from shiplib.backbones.distill_cache import build_cache
from shiplib.backbones.pretrain_mini import BACKBONE_NAME as FMNIST_NAME
from shiplib.backbones.recipe_loop import RecipeModules, StepWarmupCosine

from _backbone_cards import committed_card, committed_checkpoint


@pytest.mark.parametrize("name, images", [(FMNIST_NAME, lambda c: c["data"]["train_images"]),
                                          (DISTILL_NAME, lambda c: c["data"]["views"])])
def test_the_schedule_gives_the_committed_runs_lr_sequence(name, images):
    """Each card logs the rate of its epochs' last step: the schedule reproduces all of them exactly."""
    committed_checkpoint(name)
    card = committed_card(name)
    t = card["training"]
    steps = images(card) // t["batch_size"]
    schedule = StepWarmupCosine(t["lr"], t["min_lr"], t["epochs"], t["warmup_epochs"])
    assert [h["lr"] for h in card["history"]] == [schedule.lr_at(e, steps - 1, steps) for e in range(t["epochs"])]


def test_the_schedule_warms_up_to_lr_then_falls_to_min_lr():
    s = StepWarmupCosine(lr=1e-3, min_lr=1e-5, epochs=3, warmup_epochs=1.0)
    lrs = [s.lr_at(e, i, 10) for e in range(3) for i in range(10)]
    assert lrs[0] == 1e-4 and lrs[9] == 1e-3 and lrs[10] == 1e-3  # warm-up ends at lr, the cosine starts there
    assert lrs[20] == pytest.approx((1e-3 + 1e-5) / 2) and min(lrs) == lrs[-1] > 1e-5
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


def test_the_engine_groups_exempt_vectors_and_the_vit_tokens_as_the_recipes_did():
    vit = mini.create_mini_vit(num_classes=0)
    modules = RecipeModules(dict(vit=vit, heads=DistillHeads(vit.embed_dim, 8, 8)))
    groups = {g["group"]: g for g in modules.optimizer(1e-3, 0.05).param_groups}
    exempt = {n for n, p in modules.named_parameters() if p.ndim <= 1} | {"vit.pos_embed", "vit.cls_token"}
    assert set(groups["no_decay"]["names"]) == exempt and groups["no_decay"]["weight_decay"] == 0.0
    assert set(groups["decay"]["names"]) == {n for n, _ in modules.named_parameters()} - exempt
    assert groups["decay"]["weight_decay"] == 0.05


#: Runs the tiny recipe with files limited to 1 MB: the state (weights and optimiser) cannot be written, the log could.
FAILING_WRITE = textwrap.dedent("""
    import resource, signal, sys
    from shiplib.backbones.distill_mini import DistillConfig, distill_mini
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write raises OSError instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))
    distill_mini(DistillConfig(views=96, epochs=2, batch_size=32, threads=1), work_dir=sys.argv[1],
                 cache_dir=sys.argv[2])
""")


def test_a_state_write_that_fails_does_not_log_the_epoch_twice(tmp_path):
    cfg = DistillConfig(views=96, epochs=2, batch_size=32, threads=1)
    build_cache(tmp_path / "cache", cfg.cache_spec(), threads=1)  # before the limit: the cache is written in full
    work = tmp_path / "run"
    crashed = subprocess.run([sys.executable, "-c", FAILING_WRITE, str(work), str(tmp_path / "cache")],
                             capture_output=True, text=True, timeout=300)
    assert crashed.returncode != 0 and "atomic_torch_save" in crashed.stderr, crashed.stderr[-2000:]  # the state
    assert not (work / "last.pt").exists() and not (work / "log.jsonl").exists()  # the epoch is in neither

    _, history, _ = distill_mini(cfg, work_dir=work, cache_dir=tmp_path / "cache")
    log = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in log] == [0, 1] and log == history
    assert torch.load(work / "last.pt", weights_only=True)["history"] == log
