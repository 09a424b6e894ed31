"""Epoch time with and without the decoded-image cache, on CPU (one thread, no loader workers).

Loader passes are timed in this process's CPU seconds (best of two), robust to other load on the machine; the
SHIP epoch and building the cache in wall-clock seconds.

At 32 px: the mini_mnist training split (1,000 PNGs), the loader alone and a whole SHIP training epoch on the mini
backbone (cached: uint8 batches normalised batch by batch, as a run reads them). At 224 px: a synthetic task in
the VTAB-1k layout (1,000 JPEGs of `--source-size` px), the loader alone
(a ViT-B/16 training epoch on CPU takes tens of minutes, the same with or without the cache).

    python scripts/measure_image_cache.py [--work runs/measure_image_cache]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from shiplib.data import build_dataset
from shiplib.data.synthetic import write_synthetic_task
from shiplib.engine import LRSchedule, TrainStep, create_optimizer, train_one_epoch
from shiplib.engine.prepare import on_device, train_loader
from shiplib.methods import build_model


def loader_epoch(ds) -> float:
    """CPU seconds of one pass over the training loader (CPU time: other processes' load does not count)."""
    start = time.process_time()
    for _ in on_device(train_loader(ds, 64, seed=1, epoch=0), torch.device("cpu")):
        pass
    return time.process_time() - start


def ship_epoch(ds) -> float:
    torch.manual_seed(0)
    model = build_model("ship", backbone="mini", num_classes=10, levels=[0, 4, 8], num_prototypes=16,
                        data=[torch.randn(16, 3, 32, 32)])
    schedule = LRSchedule(1e-3, epochs=1, warmup_epochs=0, warmup_lr=1e-6, min_lr=1e-5)
    cpu = torch.device("cpu")
    loader = on_device(train_loader(ds, 64, seed=1, epoch=0), cpu)
    train = TrainStep(model, create_optimizer(model, 1e-3, 1e-4), schedule, cpu)
    return train_one_epoch(train, loader, 0, progress=False)["train_seconds"]


def measure(task: str, root, img_size: int, folder: Path, with_model: bool) -> dict:
    out = {}
    for cached in (False, True):
        start = time.perf_counter()
        ds = build_dataset(task, "train800val200", root=root, img_size=img_size, cache=cached, cache_dir=folder)
        out["build_cached" if cached else "build"] = time.perf_counter() - start
        key = "cached" if cached else "uncached"
        out[f"loader_{key}"] = min(loader_epoch(ds) for _ in range(2))
        if cached:  # as a run reads it: uint8 batches, normalised batch by batch on the device (here the CPU)
            ds.uint8 = True
            out["loader_cached_uint8"] = min(loader_epoch(ds) for _ in range(2))
        if with_model:
            out[f"ship_epoch_{key}"] = ship_epoch(ds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="folder for the synthetic task and the memory-mapped caches (default: temp)")
    parser.add_argument("--source-size", type=int, default=256, help="side of the synthetic JPEGs (default 256)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        rows = {"32 px, mini_mnist (PNG)": measure("mini_mnist", None, 32, work / "images", with_model=True)}
        root = work / "vtab"
        if not (root / "svhn" / "train800val200.txt").is_file():
            write_synthetic_task(root, "svhn", classes=10, size=args.source_size, ext="jpg",
                                 sizes=dict(train800=800, val200=200, test=10))
        rows[f"224 px, synthetic VTAB-1k ({args.source_size} px JPEG)"] = measure("svhn", root, 224,
                                                                                work / "images", with_model=False)
    for name, r in rows.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in r.items()))


if __name__ == "__main__":
    main()
