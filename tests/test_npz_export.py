"""Google ViT `.npz` export: the inverse of timm's `_load_weights`, checked by round trips."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer, _load_weights

from shiplib.backbones import MINI_ARCH, create_backbone, create_mini_vit, mini_checkpoint_path, npz_architecture
from shiplib.backbones.loading import BackboneError
from shiplib.backbones.npz_export import export_google_npz, google_npz_arrays

ARCH_KEYS = ("patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio", "img_size", "class_token")


def _randomise_small_params(vit: torch.nn.Module, seed: int = 0) -> None:
    """timm initialises biases and LayerNorms to constants; make them random so a swapped slot shows up."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in vit.parameters():
            if p.ndim <= 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if p.ndim == 1 else 0.0))


def _features_equal(a: torch.nn.Module, b: torch.nn.Module, img_size: int, n: int = 3) -> float:
    x = torch.randn(n, 3, img_size, img_size, generator=torch.Generator().manual_seed(1))
    a.eval(), b.eval()
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item()


def test_mini_round_trip_is_exact(tmp_path):
    vit = create_mini_vit(num_classes=0)
    _randomise_small_params(vit)
    path = export_google_npz(vit, tmp_path / "mini.npz")
    arch = npz_architecture(path)
    assert {k: arch[k] for k in ARCH_KEYS} == {k: MINI_ARCH[k] for k in ARCH_KEYS}
    loaded = create_backbone(path)
    for k, v in vit.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert _features_equal(vit, loaded, MINI_ARCH["img_size"]) == 0.0


def test_head_round_trips_through_timm_reader(tmp_path):
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=7)
    _randomise_small_params(vit)
    path = export_google_npz(vit, tmp_path / "h.npz")
    again = VisionTransformer(**{**npz_architecture(path), "num_classes": 7})
    _load_weights(again, str(path))
    assert torch.equal(again.head.weight, vit.head.weight) and torch.equal(again.head.bias, vit.head.bias)
    assert _features_equal(vit, again, 32) == 0.0


def test_layout_matches_google_shapes():
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=4, mlp_ratio=2.0, num_classes=5)
    w = google_npz_arrays(vit)
    mha = "Transformer/encoderblock_2/MultiHeadDotProductAttention_1/"
    assert w["embedding/kernel"].shape == (8, 8, 3, 32)
    assert w["cls"].shape == (1, 1, 32)
    assert w["Transformer/posembed_input/pos_embedding"].shape == (1, 1 + 16, 32)
    assert w[mha + "query/kernel"].shape == (32, 4, 8) and w[mha + "value/bias"].shape == (4, 8)
    assert w[mha + "out/kernel"].shape == (4, 8, 32)
    assert w["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"].shape == (32, 64)
    assert w["head/kernel"].shape == (32, 5)
    assert not any(k.startswith("Transformer/encoderblock_3") for k in w)
    assert all(a.dtype == np.float32 for a in w.values())


def test_opt_target_prefix_is_read(tmp_path):
    """Some Google files nest everything under `opt/target/`; the architecture reader must see through it."""
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=0)
    arrays = {f"opt/target/{k}": v for k, v in google_npz_arrays(vit).items()}
    path = tmp_path / "nested.npz"
    np.savez(path, **arrays)
    arch = npz_architecture(path)
    assert (arch["depth"], arch["num_heads"], arch["embed_dim"], arch["img_size"]) == (3, 2, 32, 32)
    assert _features_equal(vit, create_backbone(path), 32) == 0.0


@pytest.mark.parametrize("kwargs, words", [
    (dict(class_token=False, global_pool="avg"), "class token"),
    (dict(init_values=1e-5), "layer scale"),
    (dict(reg_tokens=2), "register"),
    (dict(qkv_bias=False), "qkv"),
])
def test_variants_without_a_google_slot_are_refused(tmp_path, kwargs, words):
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, **kwargs)
    with pytest.raises(ValueError, match=words):
        export_google_npz(vit, tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


def test_export_needs_npz_suffix_and_a_vit(tmp_path):
    with pytest.raises(ValueError, match=r"\.npz"):
        export_google_npz(create_mini_vit(), tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="VisionTransformer"):
        export_google_npz(torch.nn.Linear(2, 2), tmp_path / "x.npz")


def test_bad_npz_files_give_clear_errors(tmp_path):
    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(BackboneError, match="single array"):
        create_backbone(single)
    other = tmp_path / "other.npz"
    np.savez(other, foo=np.zeros(2))
    with pytest.raises(BackboneError, match="embedding/kernel"):
        create_backbone(other)


def test_pretrained_mini_round_trip(tmp_path):
    if not mini_checkpoint_path().is_file():
        pytest.skip(f"{mini_checkpoint_path()} not built yet (run notebooks/pretrain_mini.ipynb)")
    vit = create_backbone("mini")
    loaded = create_backbone(export_google_npz(vit, tmp_path / "mini.npz"))
    assert _features_equal(vit, loaded, MINI_ARCH["img_size"]) == 0.0


def test_vit_b16_shaped_round_trip(tmp_path):
    """The real `ViT-B_16.npz` path, without downloading it: a random ViT-B/16 written in its layout (~10 s)."""
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    path = export_google_npz(vit, tmp_path / "ViT-B_16.npz")
    arch = npz_architecture(path)
    assert ((arch["depth"], arch["embed_dim"], arch["num_heads"], arch["patch_size"], arch["img_size"])
            == (12, 768, 12, 16, 224))
    assert arch["mlp_ratio"] == 4.0
    loaded = create_backbone(path)
    assert _features_equal(vit, loaded, 224, n=1) < 1e-6
