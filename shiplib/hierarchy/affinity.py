"""Inter-layer affinity (docs/ship_computation.md §2): per-image cosine between block outputs, averaged over images.

`A[i, j] = mean_n cos(f_i(x_n), f_j(x_n))`. This is not CKA: no centring, no cross-image kernel.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from shiplib.utils.io import atomic_save_npy

#: Images per chunk when averaging; bounds the float64 working copy to chunk * L * D values.
_CHUNK = 256


def as_real_array(x, name: str) -> np.ndarray:
    """`x` (array, tensor or nested list) as a real-valued numpy array; TypeError naming `name` otherwise."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be an array or tensor, got {type(x).__name__}: {exc}") from exc
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def check_square_matrix(A, name: str = "affinity") -> np.ndarray:
    """A finite, non-empty square matrix as a numpy array (dtype kept); clear errors otherwise."""
    arr = as_real_array(A, name)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square (L, L) matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise ValueError(f"{name} contains NaN/inf (first at index {bad}); recompute it from finite features")
    return arr


def validate_affinity(A, atol: float = 1e-5, name: str = "affinity") -> np.ndarray:
    """Check that A looks like an inter-layer cosine affinity and return it as float32.

    Square, finite, symmetric within `atol`, unit diagonal within `atol`, values in [-1, 1] within `atol`.
    """
    arr = check_square_matrix(A, name)
    asym = float(np.max(np.abs(arr - arr.T)))
    if asym > atol:
        raise ValueError(f"{name} is not symmetric: max |A - A.T| = {asym:.3g} > atol={atol:g}")
    diag = float(np.max(np.abs(np.diag(arr) - 1.0)))
    if diag > atol:
        raise ValueError(f"{name} must have a unit diagonal (cosine of a layer with itself): "
                         f"max |diag - 1| = {diag:.3g}")
    if float(np.max(np.abs(arr))) > 1.0 + atol:
        raise ValueError(f"{name} holds cosines, so |A| <= 1; got max |A| = {float(np.max(np.abs(arr))):.6g}")
    return arr.astype(np.float32)


def inter_layer_affinity(features) -> np.ndarray:
    """(L, L) float32 affinity from block features (L, N, D) (tensor or array), spec §2.

    Each image's layer vectors are L2-normalised and their Gram matrices averaged; the sum runs in float64.
    """
    feats = as_real_array(features, "features")
    if feats.ndim != 3 or 0 in feats.shape:
        raise ValueError(f"features must be (L layers, N images, D dims) with no empty axis, got shape {feats.shape}")
    if not np.all(np.isfinite(feats)):
        raise ValueError("features contain NaN/inf; check the backbone and the input images")
    n_layers, n_images, _ = feats.shape
    total = np.zeros((n_layers, n_layers), dtype=np.float64)
    for start in range(0, n_images, _CHUNK):
        chunk = feats[:, start:start + _CHUNK].astype(np.float64)
        norms = np.linalg.norm(chunk, axis=-1, keepdims=True)
        if np.any(norms == 0):
            layer, image = np.argwhere(norms[..., 0] == 0)[0].tolist()
            raise ValueError(f"feature vector of layer {layer}, image {start + image} is all zeros: "
                             "its cosine is undefined")
        unit = chunk / norms
        total += np.einsum("ind,jnd->ij", unit, unit)
    A = total / n_images
    return ((A + A.T) / 2).astype(np.float32)  # exact symmetry despite summation order


def adjacent_affinity(A) -> np.ndarray:
    """Affinity of each block with the next one, A[i, i+1] for i = 0..L-2, as float32 (L-1,)."""
    arr = check_square_matrix(A)
    return np.diagonal(arr, offset=1).astype(np.float32)


def adjacent_affinity_stats(affinities: Mapping[str, object] | Sequence[object], ddof: int = 0) -> dict:
    """Mean and variance over tasks of the adjacent-layer affinity (paper Fig. 1).

    `affinities`: {task: (L, L)} or a sequence of (L, L) matrices of one depth. Returns
    {"tasks", "per_task" (T, L-1), "mean" (L-1,), "var" (L-1,), "std" (L-1,)}; `ddof` as in numpy.var.
    """
    if isinstance(affinities, Mapping):
        tasks, mats = list(affinities.keys()), list(affinities.values())
    else:
        mats = list(affinities)
        tasks = list(range(len(mats)))
    if not mats:
        raise ValueError("adjacent_affinity_stats needs at least one affinity matrix")
    rows = [adjacent_affinity(m) for m in mats]
    lengths = {r.shape[0] for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"all affinity matrices must have the same depth, got depths {sorted(n + 1 for n in lengths)}")
    if len(rows) <= ddof:
        raise ValueError(f"variance with ddof={ddof} needs more than {ddof} tasks, got {len(rows)}")
    per_task = np.stack(rows).astype(np.float64)
    var = per_task.var(axis=0, ddof=ddof)
    return {"tasks": tasks, "per_task": per_task, "mean": per_task.mean(axis=0), "var": var, "std": np.sqrt(var)}


def save_affinity(path: str | os.PathLike, A, atol: float = 1e-5) -> Path:
    """Validate A and write it atomically as a float32 `.npy` file."""
    path = Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"affinity files are .npy; got {path.name!r}")
    return atomic_save_npy(path, validate_affinity(A, atol=atol))


def load_affinity(path: str | os.PathLike, atol: float = 1e-5) -> np.ndarray:
    """Load and validate an affinity `.npy` (e.g. the official `save_affinity/<task>/affinity.npy`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"affinity file not found: {path}")
    if path.suffix != ".npy":
        raise ValueError(f"affinity files are .npy; got {path.name!r}")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path} is not a plain numeric .npy array: {exc}") from exc
    return validate_affinity(arr, atol=atol, name=f"affinity in {path.name}")
