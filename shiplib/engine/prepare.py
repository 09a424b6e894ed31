"""What a run needs before training: data loaders, the backbone's fingerprint, the cached semantic hierarchy
(inter-layer affinity and attribute prototype bank) of a task's training images."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from ..backbones import create_backbone
from ..backbones.loading import weights_file
from ..hierarchy import compute_task_hierarchy
from ..utils.io import atomic_save_npz, move_aside
from ..utils.seed import derived_seed

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


def backbone_fingerprint(vit: torch.nn.Module) -> str:
    """sha256 over the backbone's tensors (names, shapes, dtypes, values), head excluded: identifies its weights."""
    h = hashlib.sha256()
    for name, t in vit.state_dict().items():
        if name.startswith("head."):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


_FINGERPRINTS: dict = {}


def _file_state(spec) -> tuple | None:
    """(path, mtime, size) of the weights file a backbone spec reads, so a replaced checkpoint is noticed."""
    path = weights_file(spec)
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return str(path), st.st_mtime_ns, st.st_size


def current_fingerprint(spec, pretrained: bool = True, arch=None) -> str | None:
    """`backbone_fingerprint` of the pretrained backbone a config names (memoised per weights file state).

    None for random-init backbones, whose weights depend on the run's seed, not on a file.
    """
    if not pretrained:
        return None
    key = (str(spec), _file_state(spec), json.dumps(arch, sort_keys=True))
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = backbone_fingerprint(create_backbone(spec, pretrained=True, backbone_arch=arch))
    return _FINGERPRINTS[key]


def stale_backbone(result: dict) -> str | None:
    """Why a finished result no longer matches its backbone's current weights, or None if it does."""
    ident = result.get("identity", {})
    made_with = (result.get("backbone") or {}).get("sha256")
    now = current_fingerprint(ident.get("backbone"), ident.get("pretrained", True), ident.get("backbone_arch"))
    if made_with and now and made_with != now:
        return f"it was made with other {ident.get('backbone')!r} backbone weights (sha256 {made_with[:12]}…, " \
               f"now {now[:12]}…)"
    return None


def backbone_slug(spec) -> str:
    """A short file-name-safe name for a backbone spec (a timm name, 'mini' or a file path)."""
    text = Path(str(spec)).stem if ("/" in str(spec) or "\\" in str(spec)) else str(spec)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:60] or "backbone"


def images_fingerprint(paths) -> str:
    """sha256 over an image list: each file's name, size and modification time, in list order.

    Identifies the images a hierarchy was computed from: replacing, editing or re-listing them changes it
    (without reading every image's bytes). Names are taken relative to the files' common folder, so the same
    files listed from another mount point agree."""
    paths = [Path(p) for p in paths]
    base = Path(os.path.commonpath([str(p) for p in paths])) if paths else Path()
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        rel = p.relative_to(base).as_posix() if p != base else p.name
        h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def dataset_fingerprint(dataset) -> str:
    """`images_fingerprint` of a folder dataset's images (its `samples` are (path, label) pairs)."""
    return images_fingerprint(path for path, _ in dataset.samples)


def hierarchy_cache_path(runs_dir, benchmark: str, task: str, backbone_spec, fingerprint: str, pool: str,
                         split: str, k: int, preset: str, img_size: int, kmeans_seed: int = 42,
                         images: str = "") -> Path:
    """<runs>/_cache/<benchmark>/<task>/<backbone>-<weights sha>-<pool>-<preset><size>-<split>[-i<images sha>]-k<k>
    [-s<seed>].npz: keyed on everything the hierarchy depends on (`images`: `dataset_fingerprint` of the split)."""
    seed = "" if kmeans_seed == 42 else f"-s{kmeans_seed}"
    data = f"-i{images[:12]}" if images else ""
    name = f"{backbone_slug(backbone_spec)}-{fingerprint[:12]}-{pool}-{preset}{img_size}-{split}{data}-k{k}{seed}.npz"
    return Path(runs_dir) / "_cache" / benchmark / task / name


def _read_cache(path: Path) -> dict | None:
    """The cached arrays, or None when there is no cache; an unreadable cache is moved aside (and recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return dict(affinity=z["affinity"], prototypes=z["prototypes"], num_images=int(z["num_images"]))
    except (OSError, ValueError, KeyError, EOFError) as e:
        move_aside(path, f"{type(e).__name__}: {e}")
        return None


def load_or_compute_hierarchy(vit, dataset, cache_path: Path, threshold: float, pool: str, k: int,
                              batch_size: int, device, num_workers: int = 0, progress: bool = True,
                              kmeans_seed: int = 42) -> dict:
    """Affinity and prototype bank of the frozen backbone on `dataset`, from the cache or computed once.

    Levels are not cached: they follow from the affinity and each run's threshold.
    """
    cached = _read_cache(cache_path)
    if cached is not None:
        log.info("hierarchy: using the cache %s", cache_path)
        return dict(cached, cache=str(cache_path), cached=True)
    log.info("hierarchy: extracting features of %d images (pool=%s, k=%d)", len(dataset), pool, k)
    loader = eval_loader(dataset, batch_size, num_workers)
    was_training = vit.training
    vit.to(device)
    out = compute_task_hierarchy(vit, loader, threshold, pool=pool, k=k, seed=kmeans_seed, device=device,
                                 progress=progress)
    vit.train(was_training)
    meta = json.dumps(dict(pool=pool, k=k, kmeans_seed=kmeans_seed, images=out["num_images"]))
    atomic_save_npz(cache_path, affinity=np.asarray(out["affinity"], dtype=np.float32),
              prototypes=np.asarray(out["prototypes"], dtype=np.float32), num_images=np.int64(out["num_images"]),
              meta=np.array(meta))
    log.info("hierarchy: cached in %s", cache_path)
    return dict(affinity=out["affinity"], prototypes=out["prototypes"], num_images=out["num_images"],
                cache=str(cache_path), cached=False)
