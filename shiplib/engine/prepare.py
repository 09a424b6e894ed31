"""What a run needs before training: data loaders, the backbone's fingerprint, and the cached data step of its
method (the arrays it derives from a task's training images)."""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from ..data.image_cache import images_fingerprint
from ..utils.io import atomic_save_npz, move_aside
from ..utils.progress import bars_off
from ..utils.seed import derived_seed

if TYPE_CHECKING:  # an import at run time would be circular
    from .resolved import ResolvedRun

log = logging.getLogger(__name__)


def train_loader(dataset, batch_size: int, seed: int, epoch: int, num_workers: int = 0,
                 pin_memory: bool = False) -> DataLoader:
    """Shuffled, drop_last=True; the order depends only on (seed, epoch), so a resumed run sees the same batches."""
    order = torch.Generator().manual_seed(derived_seed(seed, epoch, 0))
    workers = torch.Generator().manual_seed(derived_seed(seed, epoch, 1))
    return DataLoader(dataset, batch_size=batch_size, sampler=RandomSampler(dataset, generator=order),
                      drop_last=True, num_workers=num_workers, generator=workers, pin_memory=pin_memory)


def eval_loader(dataset, batch_size: int, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """In order, every sample (no drop_last)."""
    generator = torch.Generator().manual_seed(0)  # worker seeds without touching the global RNG
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False, num_workers=num_workers,
                      generator=generator, pin_memory=pin_memory)


class DeviceBatches:
    """A loader of uint8 images whose batches are moved to `device` and normalised there (`normalize`): a quarter
    of the bytes to copy, and the per-pixel arithmetic on the device. Yields the loader's exact float values."""

    def __init__(self, loader: DataLoader, device: torch.device, normalize):
        self.loader, self.device, self.normalize = loader, device, normalize

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            yield self.normalize(x.to(self.device, non_blocking=True)), y


def on_device(loader: DataLoader, device: torch.device):
    """`DeviceBatches` over a loader whose dataset yields cached uint8 images, else the loader itself."""
    ds = loader.dataset
    return DeviceBatches(loader, device, ds.normalize) if getattr(ds, "uint8", False) else loader


def backbone_slug(spec) -> str:
    """A short file-name-safe name for a backbone spec (a timm name, 'mini' or a file path)."""
    text = Path(str(spec)).stem if ("/" in str(spec) or "\\" in str(spec)) else str(spec)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:60] or "backbone"


def dataset_fingerprint(dataset) -> str:
    """`images_fingerprint` of a folder dataset's images (its `samples` are (path, label) pairs)."""
    return images_fingerprint(path for path, _ in dataset.samples)


def image_cache_dir(runs_dir) -> Path:
    """Where decoded-image caches too large for memory are memory-mapped (`shiplib.data.image_cache`)."""
    return Path(runs_dir) / "_cache" / "images"


def data_cache_path(run: ResolvedRun, fingerprint: str, images: str, key: dict) -> Path:
    """<runs>/_cache/<benchmark>/<task>/<backbone>-<weights sha>-<preset><size>-<split>-i<images sha>-<method>-<key
    sha>.npz: keyed on everything a method's data step depends on (`fingerprint`: the backbone
    weights'; `images`: `dataset_fingerprint` of the training split; `key`: the method's `data_key`)."""
    key_sha = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    m = run.model
    name = f"{backbone_slug(m.backbone)}-{fingerprint[:12]}-{m.preset}{m.img_size}-{run.train_split}-i{images[:12]}"
    return Path(run.runtime.runs_dir) / "_cache" / run.benchmark / run.task.name / f"{name}-{run.method}-{key_sha}.npz"


_KEY = "__key__"  # the cache's own record of its key, next to the method's arrays


def _read_cache(path: Path) -> dict | None:
    """The cached arrays, or None when there is no cache; an unreadable cache is moved aside (and recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files if name != _KEY}
    except (OSError, ValueError, KeyError, EOFError) as e:
        move_aside(path, f"{type(e).__name__}: {e}")
        return None


def load_or_compute_data_inputs(method, config, vit, loader, cache_path: Path,
                                progress: bool = True) -> tuple[dict[str, np.ndarray], bool]:
    """`method.data_inputs` of the frozen backbone (on its device) on `loader`'s images (in order), from the cache
    or computed once and cached; returns the arrays and whether they came from the cache."""
    cached = _read_cache(cache_path)
    if cached is not None:
        log.info("data step: using the cache %s", cache_path)
        return cached, True
    key = method.data_key(config)
    log.info("data step of %s on %d training images (%s)", method.method, len(loader.dataset),
             ", ".join(f"{k}={v}" for k, v in key.items()))
    was_training = vit.training
    with bars_off(not progress):
        arrays = {name: np.asarray(a) for name, a in method.data_inputs(vit, loader, config).items()}
    vit.train(was_training)
    atomic_save_npz(cache_path, **arrays, **{_KEY: np.array(json.dumps(key))})
    log.info("data step: cached in %s", cache_path)
    return arrays, False
