"""Attribute prototypes (docs/ship_computation.md §4 "Attribute bank"): k-means on last-layer features, centroids
un-normalised.

Official recipe: sklearn `KMeans(n_clusters=200, random_state=42)` on the last-layer features of at most
1000 train images (a random subset only when there are more), prototype c = mean of the features labelled c.
"""
from __future__ import annotations

import inspect
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from shiplib.hierarchy.affinity import as_real_array, inter_layer_affinity
from shiplib.hierarchy.features import extract_block_features
from shiplib.hierarchy.levels import check_threshold, semantic_levels
from shiplib.utils.checks import positive_int
from shiplib.utils.io import atomic_save_npy, atomic_save_safetensors, atomic_torch_save
from shiplib.utils.kmeans import kmeans

BANK_KEY = "prototypes"  # tensor name in .safetensors / dict-style .pt banks
_SUFFIXES = (".npy", ".pt", ".pth", ".safetensors")


def attribute_prototypes(
    features,
    k: int = 200,
    seed: int = 42,
    n_init="auto",
    max_samples: int | None = 1000,
    allow_fewer_clusters: bool = False,
) -> np.ndarray:
    """(k, D) float32 bank: k-means cluster means of `features` (N, D), un-normalised.

    If N > max_samples, `max_samples` rows are drawn without replacement by
    `np.random.RandomState(seed).choice` (the official code used the global numpy RNG, which we do not touch).
    KMeans(n_clusters=k, random_state=seed, n_init=n_init) is fitted on float32 features; each prototype is
    then the float64 mean of its members, as the official code computes it from the labels.
    N < k is an error unless `allow_fewer_clusters=True`, which lowers k to N with a warning (the bank then has
    N rows), because a silently smaller bank would change the model's attribute prompts.
    """
    feats = as_real_array(features, "features")
    if feats.ndim != 2 or 0 in feats.shape:
        raise ValueError(f"features must be (N samples, D dims), got shape {feats.shape}; "
                         "use the last layer, e.g. block_features[-1]")
    if not np.all(np.isfinite(feats)):
        raise ValueError("features contain NaN/inf; check the backbone and the input images")
    positive_int("k", k)
    positive_int("max_samples", max_samples, allow_none=True)
    feats = feats.astype(np.float32, copy=False)
    if max_samples is not None and feats.shape[0] > max_samples:
        feats = feats[np.random.RandomState(seed).choice(feats.shape[0], size=max_samples, replace=False)]
    n = feats.shape[0]
    if n < k:
        if not allow_fewer_clusters:
            raise ValueError(
                f"k-means with k={k} clusters needs at least {k} samples, got {n}; "
                f"pass a smaller k or allow_fewer_clusters=True (then k={n})"
            )
        warnings.warn(f"only {n} samples: clustering into k={n} prototypes instead of {k}", stacklevel=2)
        k = n
    fitted = kmeans(feats, k, seed, n_init)
    bank = np.empty((int(k), feats.shape[1]), dtype=np.float64)
    for c in range(int(k)):
        members = feats[fitted.labels_ == c]
        # sklearn never leaves a cluster empty unless points coincide; then its centre is the best stand-in
        bank[c] = members.astype(np.float64).mean(axis=0) if len(members) else fitted.cluster_centers_[c]
    return bank.astype(np.float32)


def random_bank_like(bank, seed: int = 42) -> torch.Tensor:
    """A (k, D) float32 bank of Gaussian draws with `bank`'s per-dimension mean and std: the scale (and the massive
    dimensions) of the real bank without its cluster structure. The ablation "random prototypes"."""
    bank = load_prototype_bank(bank).double()
    g = torch.Generator().manual_seed(int(seed))
    std = bank.std(dim=0, unbiased=False) if len(bank) > 1 else bank.abs().mean(dim=0)
    return (bank.mean(dim=0) + std * torch.randn(bank.shape, generator=g, dtype=torch.float64)).float()


def _single_tensor(obj, source: str) -> torch.Tensor:
    if isinstance(obj, dict):
        if BANK_KEY in obj:
            obj = obj[BANK_KEY]
        elif len(obj) == 1:
            obj = next(iter(obj.values()))
        else:
            raise ValueError(f"{source} holds several tensors {sorted(obj)[:5]}; store the bank under key {BANK_KEY!r}")
    if isinstance(obj, np.ndarray):
        obj = torch.from_numpy(obj)
    if not isinstance(obj, torch.Tensor):
        raise TypeError(f"{source} must hold a tensor/array, got {type(obj).__name__}")
    return obj


def _read_bank(path: Path) -> torch.Tensor:
    if not path.is_file():
        raise FileNotFoundError(f"prototype bank not found: {path}")
    if path.suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False))
    if path.suffix in (".pt", ".pth"):
        return _single_tensor(torch.load(path, map_location="cpu", weights_only=True), str(path))
    if path.suffix == ".safetensors":
        return _single_tensor(load_file(str(path)), str(path))
    raise ValueError(f"unsupported prototype bank file {path.name!r}; use one of {_SUFFIXES}")


def load_prototype_bank(path_or_array, expected_dim: int | None = None) -> torch.Tensor:
    """A (k, D) float32 CPU tensor from a .npy/.pt/.pth/.safetensors file, an ndarray or a tensor, validated."""
    if isinstance(path_or_array, (str, os.PathLike)):
        source = str(path_or_array)
        bank = _read_bank(Path(path_or_array))
    else:
        source = "prototype bank"
        bank = _single_tensor(path_or_array, source)
    if bank.ndim != 2 or 0 in bank.shape:
        raise ValueError(f"{source} must be a (k prototypes, D dims) matrix, got shape {tuple(bank.shape)}")
    if bank.is_complex() or bank.dtype == torch.bool:
        raise TypeError(f"{source} must hold real numbers, got dtype {bank.dtype}")
    if expected_dim is not None and bank.shape[1] != expected_dim:
        raise ValueError(
            f"{source} has feature dim {bank.shape[1]} but the backbone width is {expected_dim}; "
            "the bank must come from the same backbone"
        )
    bank = bank.detach().to(device="cpu", dtype=torch.float32).contiguous()
    if not torch.isfinite(bank).all():
        raise ValueError(f"{source} contains NaN/inf")
    return bank


def save_prototype_bank(path: str | os.PathLike, bank) -> Path:
    """Validate and write a bank atomically; the format follows the suffix (.npy, .pt/.pth, .safetensors)."""
    path = Path(path)
    tensor = load_prototype_bank(bank)
    if path.suffix == ".npy":
        return atomic_save_npy(path, tensor.numpy())
    if path.suffix in (".pt", ".pth"):
        return atomic_torch_save(tensor, path)
    if path.suffix == ".safetensors":
        return atomic_save_safetensors({BANK_KEY: tensor}, path)
    raise ValueError(f"unsupported prototype bank file {path.name!r}; use one of {_SUFFIXES}")


def compute_task_hierarchy(vit: torch.nn.Module, loader, threshold: float, pool: str = "cls",
                           progress: bool = True, **prototype_options) -> dict:
    """Affinity, semantic levels and attribute bank of one task, from a single feature extraction.

    Returns {"affinity": (L, L) float32, "levels": list[int], "prototypes": (k, D) float32, "num_images": N}.
    The bank clusters the last block's features, as the official code does; `prototype_options` are
    `attribute_prototypes`' (k, seed, n_init, max_samples, allow_fewer_clusters).
    """
    # fail before the (slow) extraction, not after it
    check_threshold(threshold)
    options = inspect.signature(attribute_prototypes).bind(None, **prototype_options)
    options.apply_defaults()
    positive_int("k", options.arguments["k"])
    features = extract_block_features(vit, loader, pool=pool, progress=progress)
    affinity = inter_layer_affinity(features)
    return {
        "affinity": affinity,
        "levels": semantic_levels(affinity, threshold),
        "prototypes": attribute_prototypes(features[-1], **prototype_options),
        "num_images": int(features.shape[1]),
    }
