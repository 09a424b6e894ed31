"""Short-budget screening of mini-backbone pretraining recipes: train, export, linear-probe against random init.

    python scripts/screen_mini_pretraining.py NAME [--epochs 2] [--set w_pixel=0 ...] [--threads 1]

Writes results/pretraining/screen/NAME.json (recipe, budget, losses, probes per task, mean, wins) so that the
choice of the default recipe rests on recorded measurements. Weights stay in runs/ (not committed).
"""
from __future__ import annotations

import argparse
import ast
import time
from dataclasses import fields
from pathlib import Path

import torch

from shiplib.backbones.distill_mini import DistillConfig, distill_mini, export_distilled
from shiplib.backbones.evidence import compute_evidence
from shiplib.backbones.mini import create_mini_vit
from shiplib.utils.io import atomic_write_json


def _parse_sets(pairs: list[str]) -> dict:
    kinds = {f.name: f.type for f in fields(DistillConfig)}
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in kinds:
            raise SystemExit(f"unknown recipe field {key!r}; valid: {', '.join(kinds)}")
        out[key] = ast.literal_eval(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="results/pretraining/screen")
    a = ap.parse_args()
    cfg = DistillConfig(epochs=a.epochs, threads=a.threads, **_parse_sets(a.set))
    work = Path("runs/distill/screen") / a.name
    vit, history, elapsed = distill_mini(cfg, work_dir=work)
    card = export_distilled(vit, cfg, history, elapsed, work / "vit.safetensors", work / "card.json")
    t0 = time.time()
    torch.manual_seed(0)
    evidence = compute_evidence(vit.eval(), create_mini_vit(num_classes=0).eval())
    probe = evidence["linear_probe"]
    gains = {t: round(r["pretrained"]["test_acc"] - r["random_init"]["test_acc"], 2) for t, r in probe["tasks"].items()}
    out = dict(name=a.name, recipe=cfg.recipe(), epochs=a.epochs, steps=a.epochs * (cfg.views // cfg.batch_size),
               train_minutes=round(elapsed / 60, 1), threads=a.threads, history=history, sha256=card["sha256"],
               probe={t: dict(pretrained=r["pretrained"]["test_acc"], random_init=r["random_init"]["test_acc"])
                      for t, r in probe["tasks"].items()},
               mean=probe["mean_test_acc"], gain=round(probe["mean_test_acc"]["pretrained"]
                                                        - probe["mean_test_acc"]["random_init"], 2),
               wins=sum(g > 0 for g in gains.values()), gains=gains,
               adjacent_affinity=evidence["affinity"]["adjacent"]["pretrained"],
               probe_minutes=round((time.time() - t0) / 60, 1))
    atomic_write_json(Path(a.out) / f"{a.name}.json", out)
    print(f"{a.name}: mean {out['mean']} gain {out['gain']} wins {out['wins']}/7 {gains}")


if __name__ == "__main__":
    main()
