"""The teacher's targets for a fixed set of views, computed once in resumable chunks.

Chunk `i` holds views drawn with seed `(view_seed, i)`, so any chunk can be recomputed alone and the same
cache comes out on every machine up to the teacher's float rounding.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..utils.io import atomic_torch_save
from ..utils.progress import progress_bar
from .pretrain_images import SOURCE_WEIGHTS, ViewSampler
from .teacher import TEACHER_NAME, load_teacher, teacher_targets

CHUNK = 2048


@dataclass(frozen=True)
class CacheSpec:
    """What a cache holds; a cache folder is reused only for the same spec."""
    views: int = 49152
    view_seed: int = 0
    teacher_size: int = 128
    student_size: int = 32
    photo: float = SOURCE_WEIGHTS["photo"]
    fmnist: float = SOURCE_WEIGHTS["fmnist"]
    fractal: float = SOURCE_WEIGHTS["fractal"]

    @property
    def chunks(self) -> int:
        return -(-self.views // CHUNK)

    def weights(self) -> dict:
        return dict(photo=self.photo, fmnist=self.fmnist, fractal=self.fractal)


def chunk_path(folder: Path, spec: CacheSpec, i: int) -> Path:
    return folder / f"s{spec.view_seed}_t{spec.teacher_size}_{spec.photo:g}-{spec.fmnist:g}-{spec.fractal:g}" \
                    f"_{i:04d}.pt"


def build_cache(folder: str | Path, spec: CacheSpec, threads: int | None = None) -> list[Path]:
    """Compute the missing chunks (each written atomically, so an interruption loses one chunk at most)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    paths = [chunk_path(folder, spec, i) for i in range(spec.chunks)]
    todo = [i for i, p in enumerate(paths) if not p.is_file()]
    if not todo:
        return paths
    sampler = ViewSampler(spec.teacher_size, spec.student_size, spec.weights())
    teacher = load_teacher().to(memory_format=torch.channels_last)
    for i in progress_bar(todo, desc="teacher targets", unit="chunk"):
        t0 = time.time()
        n = min(CHUNK, spec.views - i * CHUNK)
        views = sampler.sample(n, seed=spec.view_seed * 100003 + i)
        targets = teacher_targets(teacher, views.teacher)
        atomic_torch_save(dict(student=torch.from_numpy(views.student), source=[str(s) for s in views.source],
                               **targets, spec=asdict(spec), teacher=TEACHER_NAME, seconds=time.time() - t0), paths[i])
    return paths


def load_cache(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Concatenate the chunks: student views (N, 32, 32, 3) uint8 and the teacher's float16 targets."""
    parts = [torch.load(p, map_location="cpu", weights_only=True) for p in paths]
    out = {k: torch.cat([p[k] for p in parts]) for k in ("student", "pooled", "logits", "spatial")}
    out["source"] = np.concatenate([np.asarray(p["source"]) for p in parts])
    out["teacher_seconds"] = float(sum(p["seconds"] for p in parts))
    return out
