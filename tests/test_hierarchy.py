"""Block features, inter-layer affinity and semantic levels (docs/ship_computation.md §2-§3)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import DataLoader, TensorDataset

from shiplib.hierarchy import (
    adjacent_affinity,
    adjacent_affinity_stats,
    decision_margins,
    extract_block_features,
    extract_last_layer_features,
    inter_layer_affinity,
    level_of_block,
    level_ranges,
    load_affinity,
    save_affinity,
    semantic_levels,
    threshold_sweep,
)


def tiny_vit(depth=4, width=32, img=32, patch=8, heads=2, **kw) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=img, patch_size=patch, embed_dim=width, depth=depth, num_heads=heads,
                             num_classes=5, **kw)


def manual_block_outputs(vit: VisionTransformer, x: torch.Tensor) -> list[torch.Tensor]:
    """Residual stream after every block, by hand (no forward_intermediates)."""
    with torch.no_grad():
        h = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
        outs = []
        for blk in vit.blocks:
            h = blk(h)
            outs.append(h)
    return outs


def manual_features(vit, x, pool):
    p = vit.num_prefix_tokens
    outs = manual_block_outputs(vit.eval(), x)
    return torch.stack([o[:, 0] if pool == "cls" else o[:, p:].mean(1) for o in outs])


# ---------------------------------------------------------------- features

@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_features_match_manual_forward(pool):
    vit = tiny_vit()
    x = torch.randn(10, 3, 32, 32)
    feats = extract_block_features(vit, x, pool=pool, progress=False, batch_size=4)
    assert feats.shape == (4, 10, 32) and feats.dtype == torch.float32
    torch.testing.assert_close(feats, manual_features(vit, x, pool), rtol=1e-5, atol=1e-5)
    # pooled residual stream, not the final-normed one
    assert not torch.allclose(feats[-1], vit.norm(manual_block_outputs(vit, x)[-1])[:, 0], atol=1e-3)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_features_other_geometry_with_registers(pool):
    vit = tiny_vit(depth=3, width=48, img=24, patch=6, heads=3, reg_tokens=2)
    x = torch.randn(5, 3, 24, 24)
    feats = extract_block_features(vit, x, pool=pool, progress=False)
    assert feats.shape == (3, 5, 48)
    torch.testing.assert_close(feats, manual_features(vit, x, pool), rtol=1e-5, atol=1e-5)


def test_features_loader_wrapper_max_images_and_mode_restored():
    vit = tiny_vit(drop_path_rate=0.5)
    x = torch.randn(9, 3, 32, 32)
    ref = manual_features(vit, x, "cls")
    vit.train()

    class Wrapper(torch.nn.Module):
        def __init__(self, vit):
            super().__init__()
            self.vit = vit

    loader = DataLoader(TensorDataset(x, torch.zeros(9, dtype=torch.long)), batch_size=4)
    feats = extract_block_features(Wrapper(vit), loader, progress=False)
    assert vit.training, "the caller's train/eval state must be restored"
    torch.testing.assert_close(feats, ref, rtol=1e-5, atol=1e-5)  # eval mode: drop-path off
    few = extract_block_features(vit, loader, max_images=6, progress=False)
    torch.testing.assert_close(few, ref[:, :6], rtol=1e-5, atol=1e-5)
    bare = extract_block_features(vit, [x[:4], x[4:]], progress=False)  # batches without labels
    torch.testing.assert_close(bare, ref, rtol=1e-5, atol=1e-5)
    last = extract_last_layer_features(vit, x, progress=False)
    torch.testing.assert_close(last, ref[-1], rtol=1e-5, atol=1e-5)


def test_features_bad_inputs():
    vit = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="pool must be one of"):
        extract_block_features(vit, x, pool="max", progress=False)
    with pytest.raises(TypeError, match="VisionTransformer"):
        extract_block_features(torch.nn.Linear(2, 2), x, progress=False)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        extract_block_features(vit, x[0], progress=False)
    with pytest.raises(ValueError, match="no images"):
        extract_block_features(vit, x[:0], progress=False)
    with pytest.raises(ValueError, match="image tensor"):
        extract_block_features(vit, [{"image": x}], progress=False)
    with pytest.raises(ValueError, match="max_images"):
        extract_block_features(vit, x, max_images=0, progress=False)
    no_cls = tiny_vit(class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="class token"):
        extract_block_features(no_cls, x, pool="cls", progress=False)
    assert extract_block_features(no_cls, x, pool="mean", progress=False).shape == (4, 2, 32)


# ---------------------------------------------------------------- affinity

def loop_affinity(feats: np.ndarray) -> np.ndarray:
    mats = []
    for n in range(feats.shape[1]):
        f = feats[:, n].astype(np.float64)
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        mats.append(f @ f.T)
    return np.mean(mats, axis=0)


def test_affinity_equals_per_image_loop():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(5, 300, 16)).astype(np.float32) + np.linspace(0, 2, 5)[:, None, None]
    A = inter_layer_affinity(feats)
    assert A.shape == (5, 5) and A.dtype == np.float32
    np.testing.assert_allclose(A, loop_affinity(feats), atol=1e-6)
    np.testing.assert_array_equal(A, A.T)
    np.testing.assert_allclose(np.diag(A), 1.0, atol=1e-6)
    np.testing.assert_allclose(inter_layer_affinity(torch.from_numpy(feats)), A)
    np.testing.assert_allclose(adjacent_affinity(A), [A[i, i + 1] for i in range(4)])


def test_affinity_is_per_image_cosine_not_cka():
    # two layers whose vectors are positive rescalings of each other, image by image: cosine 1
    base = np.random.default_rng(1).normal(size=(50, 8))
    feats = np.stack([base, base * np.linspace(0.1, 10, 50)[:, None]])
    np.testing.assert_allclose(inter_layer_affinity(feats), 1.0, atol=1e-6)


def test_affinity_from_vit_features():
    vit = tiny_vit()
    feats = extract_block_features(vit, torch.randn(6, 3, 32, 32), progress=False)
    np.testing.assert_allclose(inter_layer_affinity(feats), loop_affinity(feats.numpy()), atol=1e-6)


def test_adjacent_stats():
    mats = {"a": np.eye(3) * 0.5 + 0.5, "b": np.array([[1, 0.2, 0], [0.2, 1, 0.6], [0, 0.6, 1]])}
    s = adjacent_affinity_stats(mats)
    np.testing.assert_allclose(s["per_task"], [[0.5, 0.5], [0.2, 0.6]], atol=1e-6)
    np.testing.assert_allclose(s["mean"], [0.35, 0.55], atol=1e-6)
    np.testing.assert_allclose(s["var"], [0.0225, 0.0025], atol=1e-6)
    assert s["tasks"] == ["a", "b"]
    with pytest.raises(ValueError, match="same depth"):
        adjacent_affinity_stats([np.eye(3), np.eye(4)])
    with pytest.raises(ValueError, match="at least one"):
        adjacent_affinity_stats([])


def test_affinity_save_load_and_validation(tmp_path):
    A = inter_layer_affinity(np.random.default_rng(2).normal(size=(4, 20, 6)))
    path = save_affinity(tmp_path / "task" / "affinity.npy", A)
    np.testing.assert_array_equal(load_affinity(path), A)
    assert [p.name for p in path.parent.iterdir()] == ["affinity.npy"]  # no temp file left
    bad = A.copy()
    bad[0, 1] += 0.1
    with pytest.raises(ValueError, match="not symmetric"):
        save_affinity(tmp_path / "b.npy", bad)
    np.save(tmp_path / "rect.npy", np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match="square"):
        load_affinity(tmp_path / "rect.npy")
    nan = A.copy()
    nan[1, 2] = nan[2, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(ValueError, match="NaN"):
        load_affinity(tmp_path / "nan.npy")
    with pytest.raises(ValueError, match="unit diagonal"):
        save_affinity(tmp_path / "d.npy", A * 0.5)
    with pytest.raises(FileNotFoundError):
        load_affinity(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match=".npy"):
        save_affinity(tmp_path / "a.txt", A)


def test_affinity_bad_features():
    with pytest.raises(ValueError, match=r"\(L layers, N images, D dims\)"):
        inter_layer_affinity(np.ones((3, 4)))
    with pytest.raises(ValueError, match="all zeros"):
        inter_layer_affinity(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        inter_layer_affinity(np.full((2, 3, 4), np.nan))
    with pytest.raises(TypeError, match="real numbers"):
        inter_layer_affinity(np.array([[["a"]]]))


# ---------------------------------------------------------------- levels

def chain_matrix(values_row_to_row: dict, depth: int) -> np.ndarray:
    A = np.ones((depth, depth), np.float32)
    for (i, j), v in values_row_to_row.items():
        A[i, j] = A[j, i] = v
    return A


def test_levels_strict_less_and_chain_uses_current_start():
    A = chain_matrix({(0, 1): 0.5, (0, 2): 0.4, (2, 3): 0.7, (0, 3): 0.1}, 4)
    # j=1: 0.5 < 0.5 is False (strict); j=2: 0.4 < 0.5 -> level at 2; j=3 compares A[2,3]=0.7, not A[0,3]
    assert semantic_levels(A, 0.5) == [0, 2]
    assert semantic_levels(A, 0.50001) == [0, 1]
    assert semantic_levels(A, 1.0) == [0, 1, 2, 3]  # all-ones elsewhere, still every block its own level
    assert semantic_levels(A, 0.05) == [0]
    assert semantic_levels(A, 0.75, end_layer=3) == [0, 1]
    assert semantic_levels(np.ones((1, 1)), 0.9) == [0]


def test_level_ranges_and_blocks():
    assert level_ranges([0, 2, 3], 5) == [range(0, 2), range(2, 3), range(3, 5)]
    assert level_of_block([0, 2, 3], 5) == [0, 0, 1, 2, 2]
    assert level_ranges([0], 4) == [range(0, 4)]
    for bad in ([], [1, 2], [0, 2, 2], [0, 5]):
        with pytest.raises(ValueError):
            level_ranges(bad, 5)


def test_threshold_sweep_and_margins():
    A = chain_matrix({(0, 1): 0.5, (0, 2): 0.4, (2, 3): 0.7}, 4)
    sweep = threshold_sweep(A, [0.3, 0.45, 0.8, 1.0])
    assert sweep == {t: semantic_levels(A, t) for t in (0.3, 0.45, 0.8, 1.0)}
    margins = decision_margins(A, 0.45)
    assert [(d["cur"], d["j"], d["new_level"]) for d in margins] == [(0, 1, False), (0, 2, True), (2, 3, False)]
    np.testing.assert_allclose([d["margin"] for d in margins], [0.05, 0.05, 0.25], atol=1e-6)
    assert decision_margins(A, 1.0) == []


def test_levels_bad_inputs():
    with pytest.raises(ValueError, match="square"):
        semantic_levels(np.ones((3, 4)), 0.9)
    with pytest.raises(ValueError, match="NaN"):
        semantic_levels(np.full((3, 3), np.nan), 0.9)
    for bad in ("0.9", None, True, [0.9]):
        with pytest.raises(TypeError, match="threshold must be a real number"):
            semantic_levels(np.eye(3), bad)
    with pytest.raises(ValueError, match="finite"):
        semantic_levels(np.eye(3), float("nan"))
    with pytest.raises(ValueError, match="end_layer"):
        semantic_levels(np.eye(3), 0.9, end_layer=0)
    with pytest.raises(ValueError, match="at least one"):
        threshold_sweep(np.eye(3), [])


# ---------------------------------------------------------------- official reference data

def _official(reference_dir):
    with open(reference_dir / "official_results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 19
    return rows


@pytest.mark.reference
def test_official_prompt_indices_reproduced(reference_dir):
    for row in _official(reference_dir):
        A = load_affinity(reference_dir / "official" / "affinity" / f"{row['task']}.npy")
        assert A.shape == (12, 12)
        expected = [int(i) for i in row["prompt_indices"].split()]
        assert semantic_levels(A, float(row["share_threshold"])) == expected, row["task"]
        assert semantic_levels(A, 1.0) == list(range(12))
        assert semantic_levels(A, 1.5) == list(range(12))


@pytest.mark.reference
def test_official_cifar100_ranges_and_few_levels(reference_dir):
    A = load_affinity(reference_dir / "official" / "affinity" / "cifar100.npy")
    idx = semantic_levels(A, 0.93)
    assert [(r.start, r.stop - 1) for r in level_ranges(idx, 12)] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 10), (11, 11)]
    assert level_of_block(idx, 12) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 5]
    # thresholds that leave 2 or 1 levels (the official code crashes on these; ours must not)
    assert semantic_levels(A, 0.5) == [0, 11]  # A[0, j] >= .615 for j < 11, A[0, 11] = .376
    assert semantic_levels(A, 0.3) == [0]
    assert level_ranges([0, 11], 12) == [range(0, 11), range(11, 12)]


@pytest.mark.reference
def test_official_decision_margins(reference_dir):
    rows = {r["task"]: r for r in _official(reference_dir)}
    A = load_affinity(reference_dir / "official" / "affinity" / "oxford_pet.npy")
    closest = min(decision_margins(A, 0.97), key=lambda d: d["margin"])
    assert (closest["cur"], closest["j"]) == (7, 8)
    assert 1.2e-4 < closest["margin"] < 1.4e-4
    overall = min(
        d["margin"]
        for t, r in rows.items()
        for d in decision_margins(load_affinity(reference_dir / "official" / "affinity" / f"{t}.npy"),
                                  float(r["share_threshold"]))
    )
    assert overall == pytest.approx(closest["margin"])  # oxford_pet holds the closest call of all 19


@pytest.mark.reference
def test_official_adjacent_dip(reference_dir):
    A = load_affinity(reference_dir / "official" / "affinity" / "dsprites_loc.npy")
    assert adjacent_affinity(A)[2] == pytest.approx(0.8897, abs=1e-4)  # spec §2, Fig. 1(c)
    mats = {p.stem: load_affinity(p) for p in sorted((reference_dir / "official" / "affinity").glob("*.npy"))}
    stats = adjacent_affinity_stats(mats)
    assert stats["per_task"].shape == (19, 11) and np.all(stats["var"] >= 0)
