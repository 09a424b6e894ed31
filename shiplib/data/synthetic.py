"""A learnable synthetic task in the shared folder layout (class = dominant colour channel + noise), for tests,
timings and the GPU check: no download, any size, VTAB-1k's split sizes by default."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

#: VTAB-1k's training splits (train800val200 is their union) and a test split of the given size.
VTAB1K_SIZES = dict(train800=800, val200=200, test=1000)


def write_synthetic_task(root: str | os.PathLike, task: str = "svhn", classes: int = 3, sizes: dict | None = None,
                         size: int = 32, seed: int = 0, ext: str = "png") -> Path:
    """`<root>/<task>/` with `images/<split>/NNNNNN.<ext>` and the list files; returns the task folder."""
    sizes = sizes or VTAB1K_SIZES
    rng = np.random.default_rng(seed)
    task_dir = Path(root) / task
    lists = {}
    for split, n in sizes.items():
        (task_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(n):
            label = i % classes
            img = np.zeros((size, size, 3), np.float32)
            img[..., label % 3] = 180
            img = np.clip(img + rng.normal(0, 40, img.shape), 0, 255).astype(np.uint8)
            rel = f"images/{split}/{i:06d}.{ext}"
            Image.fromarray(img).save(task_dir / rel)
            lines.append(f"{rel} {label}")
        lists[split] = lines
    lists["train800val200"] = lists["train800"] + lists["val200"]
    for split, lines in lists.items():
        (task_dir / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return task_dir
