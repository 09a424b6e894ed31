"""Attribute prototype bank (docs/ship_computation.md §4) and the one-pass task hierarchy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from shiplib.hierarchy import (
    attribute_prototypes,
    compute_task_hierarchy,
    extract_block_features,
    inter_layer_affinity,
    load_prototype_bank,
    random_bank_like,
    save_prototype_bank,
    semantic_levels,
)


def blobs(n=120, d=8, centres=4, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(scale=10, size=(centres, d))
    return (c[rng.integers(0, centres, size=n)] + rng.normal(size=(n, d))).astype(np.float32)


def test_prototypes_shape_determinism_and_cluster_means():
    x = blobs()
    bank = attribute_prototypes(x, k=4, seed=42)
    assert bank.shape == (4, 8) and bank.dtype == np.float32
    np.testing.assert_array_equal(bank, attribute_prototypes(x, k=4, seed=42))
    # each prototype is the mean of the points nearest to it (k-means fixed point), un-normalised
    nearest = np.argmin(((x[:, None] - bank[None]) ** 2).sum(-1), axis=1)
    means = np.stack([x[nearest == c].mean(0) for c in range(4)])
    np.testing.assert_allclose(bank, means, rtol=1e-5, atol=1e-5)
    assert np.linalg.norm(bank, axis=1).max() > 2  # not L2-normalised
    np.testing.assert_allclose(attribute_prototypes(torch.from_numpy(x), k=4, seed=42), bank)


def test_random_bank_keeps_shape_and_per_dimension_scale_but_not_the_clusters():
    x = blobs(n=2000, d=8, centres=4)
    bank = torch.from_numpy(attribute_prototypes(x, k=50, seed=42))
    rand = random_bank_like(bank, seed=3)
    assert rand.shape == bank.shape and rand.dtype == torch.float32
    assert torch.equal(rand, random_bank_like(bank, seed=3)) and not torch.equal(rand, random_bank_like(bank, seed=4))
    torch.testing.assert_close(rand.mean(0), bank.mean(0), atol=0.5 * bank.std(0).max().item(), rtol=0)
    torch.testing.assert_close(rand.std(0), bank.std(0), rtol=0.35, atol=0)
    # k-means centroids sit on the 4 blobs; Gaussian draws fill the space between them
    centres = torch.from_numpy(attribute_prototypes(x, k=4, seed=42))

    def gap(b):
        return torch.cdist(b, centres).min(dim=1).values.median()

    assert gap(rand) > 3 * gap(bank)


def test_prototypes_subsample_only_above_max_samples():
    x = blobs(n=300)
    idx = np.random.RandomState(7).choice(300, size=100, replace=False)
    sub = attribute_prototypes(x, k=4, seed=7, max_samples=100)
    np.testing.assert_array_equal(sub, attribute_prototypes(x[idx], k=4, seed=7, max_samples=None))
    np.testing.assert_array_equal(attribute_prototypes(x, k=4, seed=7, max_samples=300),
                                  attribute_prototypes(x, k=4, seed=7, max_samples=None))


def test_prototypes_fewer_samples_than_k():
    x = blobs(n=10)
    with pytest.raises(ValueError, match="needs at least 20 samples, got 10"):
        attribute_prototypes(x, k=20)
    with pytest.warns(UserWarning, match="k=10"):
        bank = attribute_prototypes(x, k=20, allow_fewer_clusters=True)
    assert bank.shape == (10, 8)


def test_prototypes_bad_inputs():
    with pytest.raises(ValueError, match=r"\(N samples, D dims\)"):
        attribute_prototypes(np.ones((2, 3, 4)), k=1)
    with pytest.raises(ValueError, match="NaN"):
        attribute_prototypes(np.full((5, 2), np.nan), k=1)
    with pytest.raises(ValueError, match="k must be"):
        attribute_prototypes(blobs(), k=0)
    with pytest.raises(ValueError, match="max_samples"):
        attribute_prototypes(blobs(), k=2, max_samples=0)


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".safetensors"])
def test_bank_roundtrip(tmp_path, suffix):
    bank = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    path = save_prototype_bank(tmp_path / f"bank{suffix}", bank)
    loaded = load_prototype_bank(path, expected_dim=5)
    assert loaded.dtype == torch.float32 and loaded.shape == (6, 5)
    np.testing.assert_array_equal(loaded.numpy(), bank)
    assert [p.name for p in tmp_path.iterdir()] == [f"bank{suffix}"]


def test_bank_validation(tmp_path):
    good = torch.randn(4, 3, dtype=torch.float64)
    assert load_prototype_bank(good).dtype == torch.float32
    torch.save({"prototypes": good, "other": good}, tmp_path / "dict.pt")
    assert load_prototype_bank(tmp_path / "dict.pt").shape == (4, 3)
    torch.save({"a": good, "b": good}, tmp_path / "ambiguous.pt")
    with pytest.raises(ValueError, match="several tensors"):
        load_prototype_bank(tmp_path / "ambiguous.pt")
    with pytest.raises(ValueError, match="backbone width is 768"):
        load_prototype_bank(good, expected_dim=768)
    for bad in (torch.randn(3), torch.randn(2, 3, 4), torch.empty(0, 3)):
        with pytest.raises(ValueError, match=r"\(k prototypes, D dims\)"):
            load_prototype_bank(bad)
    with pytest.raises(ValueError, match="NaN"):
        load_prototype_bank(torch.full((2, 2), float("nan")))
    with pytest.raises(TypeError, match="tensor/array"):
        load_prototype_bank([[1.0, 2.0]])
    with pytest.raises(FileNotFoundError):
        load_prototype_bank(tmp_path / "missing.npy")
    (tmp_path / "bank.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match="unsupported"):
        load_prototype_bank(tmp_path / "bank.csv")
    with pytest.raises(ValueError, match="unsupported"):
        save_prototype_bank(tmp_path / "bank.json", good)


@pytest.mark.reference
def test_official_banks_load(reference_dir):
    paths = sorted((reference_dir / "official" / "prototypes").glob("*.npy"))
    assert len(paths) == 19
    for p in paths:
        bank = load_prototype_bank(p, expected_dim=768)
        assert bank.shape == (200, 768)
        norms = bank.norm(dim=1)
        assert 30 < norms.min() and norms.max() < 500  # un-normalised (spec §4: 38-442)


def test_compute_task_hierarchy_single_pass():
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2, num_classes=3)
    images = torch.randn(24, 3, 32, 32)
    out = compute_task_hierarchy(vit, images, threshold=0.9, pool="mean", k=4, seed=0, progress=False)
    feats = extract_block_features(vit, images, pool="mean", progress=False)
    np.testing.assert_array_equal(out["affinity"], inter_layer_affinity(feats))
    assert out["levels"] == semantic_levels(out["affinity"], 0.9)
    np.testing.assert_array_equal(out["prototypes"], attribute_prototypes(feats[-1], k=4, seed=0))
    assert out["num_images"] == 24
    with pytest.raises(TypeError, match="threshold"):
        compute_task_hierarchy(vit, images, threshold="0.9", progress=False)
