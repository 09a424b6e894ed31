"""Every kind of backbone spec `create_backbone` accepts, and clear errors for the ones it must refuse."""
from __future__ import annotations

import json
import time

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from shiplib.backbones import MINI_ARCH, BackboneError, create_backbone, mini
from shiplib.backbones.loading import GOOGLE_NPZ_URL, _hub_reachable, architecture_of, check_backbone_file
from shiplib.backbones.npz_export import export_google_npz

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=4, num_classes=0)


def tiny_vit(seed: int = 0, **overrides) -> VisionTransformer:
    torch.manual_seed(seed)
    vit = VisionTransformer(**{**TINY, **overrides}).eval()
    with torch.no_grad():  # random biases/LayerNorms, so that a wrongly loaded slot changes the output
        for p in vit.parameters():
            if p.ndim <= 1:
                p.add_(torch.randn_like(p) * 0.1)
    return vit


def same_features(a: torch.nn.Module, b: torch.nn.Module, img_size: int = 32) -> bool:
    x = torch.randn(2, 3, img_size, img_size, generator=torch.Generator().manual_seed(3))
    a.eval(), b.eval()
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-6)


# ---------------------------------------------------------------- spec kinds


def test_timm_name_without_weights():
    vit = create_backbone("vit_tiny_patch16_224", pretrained=False, img_size=32)
    assert isinstance(vit, VisionTransformer)
    assert vit.num_classes == 0 and len(vit.blocks) == 12 and vit.embed_dim == 192
    assert vit(torch.zeros(1, 3, 32, 32)).shape == (1, 192)


def test_module_is_used_as_is_and_loses_its_head():
    vit = tiny_vit(num_classes=5)
    out = create_backbone(vit)
    assert out is vit and out.num_classes == 0 and isinstance(out.head, torch.nn.Identity)


def test_safetensors_with_sidecar_card(tmp_path):
    vit = tiny_vit()
    path = tmp_path / "w.safetensors"
    save_file(vit.state_dict(), str(path))
    # heads cannot be read from weight shapes, so a card beside the file carries them
    arch = {k: v for k, v in TINY.items() if k != "num_classes"}
    (tmp_path / "w.json").write_text(json.dumps({"architecture": {"timm_class": "VisionTransformer", **arch}}))
    assert same_features(vit, create_backbone(path))


def test_safetensors_with_explicit_arch(tmp_path):
    vit = tiny_vit()
    path = tmp_path / "w.safetensors"
    save_file(vit.state_dict(), str(path))
    loaded = create_backbone(str(path), backbone_arch={k: v for k, v in TINY.items() if k != "num_classes"})
    assert same_features(vit, loaded)


def test_safetensors_infers_width_depth_and_patch_and_is_told_the_heads(tmp_path):
    vit = tiny_vit(embed_dim=64, num_heads=4)
    path = tmp_path / "w.safetensors"
    save_file(vit.state_dict(), str(path))
    loaded = create_backbone(path, backbone_arch={"num_heads": 4})
    assert (len(loaded.blocks), loaded.embed_dim, loaded.patch_embed.patch_size) == (3, 64, (8, 8))
    assert loaded.blocks[0].attn.num_heads == 4 and same_features(vit, loaded)


def test_heads_are_never_guessed(tmp_path):
    """Shapes say width, depth and patch, not the head count: without metadata, card or backbone_arch the file is
    refused (width // 64 would give 1 head here and silently other features)."""
    path = tmp_path / "w.safetensors"
    save_file(tiny_vit(embed_dim=64).state_dict(), str(path))
    for load in (lambda: create_backbone(path), lambda: check_backbone_file(path)):
        with pytest.raises(BackboneError, match=r"w\.safetensors does not say how many attention heads.*"
                                                r"backbone_arch.*w\.json"):
            load()
    with pytest.raises(BackboneError, match="num_heads=3 .* does not divide its width 64"):
        create_backbone(path, backbone_arch={"num_heads": 3})


@pytest.mark.parametrize("metadata", [{"num_heads": "4"}, {"architecture": json.dumps({"num_heads": 4})}])
def test_safetensors_metadata_says_the_heads(tmp_path, metadata):
    vit = tiny_vit()
    path = tmp_path / "w.safetensors"
    save_file(vit.state_dict(), str(path), metadata=metadata)
    check_backbone_file(path)
    assert same_features(vit, create_backbone(path))


def test_pth_wrapper_says_the_architecture(tmp_path):
    vit = tiny_vit()
    path = tmp_path / "w.pth"
    torch.save({"model": vit.state_dict(), "architecture": {"num_heads": 4}}, path)
    assert same_features(vit, create_backbone(path))


def test_architecture_of_records_what_was_built():
    vit = tiny_vit()
    arch = architecture_of(vit)
    assert {k: arch[k] for k in ("embed_dim", "depth", "num_heads", "patch_size", "mlp_ratio")} == \
        dict(embed_dim=32, depth=3, num_heads=4, patch_size=8, mlp_ratio=4.0)
    assert arch["img_size"] == [32, 32] and arch["class_token"] and arch["qkv_bias"]


def test_pth_wrapped_state_dict_loads_with_weights_only(tmp_path):
    vit = tiny_vit(num_classes=4)
    path = tmp_path / "w.pth"
    torch.save({"model": vit.state_dict(), "epoch": 3}, path)
    loaded = create_backbone(path, backbone_arch={k: v for k, v in TINY.items() if k != "num_classes"})
    vit.reset_classifier(0)
    assert same_features(vit, loaded)


def test_pth_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(tiny_vit(), path)  # a pickled module, which weights_only=True will not execute
    with pytest.raises(BackboneError, match="weights_only=True"):
        create_backbone(path)


def test_npz(tmp_path):
    vit = tiny_vit()
    path = export_google_npz(vit, tmp_path / "g.npz")
    loaded = create_backbone(str(path))
    assert loaded.embed_dim == 32 and loaded.blocks[0].attn.num_heads == 4
    assert same_features(vit, loaded)


def test_file_spec_without_pretrained_gives_fresh_weights(tmp_path):
    vit = tiny_vit()
    path = export_google_npz(vit, tmp_path / "g.npz")
    fresh = create_backbone(path, pretrained=False)
    assert fresh.pos_embed.shape == vit.pos_embed.shape
    assert not torch.equal(fresh.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)


def test_mini_random():
    vit = create_backbone("mini", pretrained=False)
    assert (len(vit.blocks), vit.embed_dim, vit.blocks[0].attn.num_heads) == (
        MINI_ARCH["depth"], MINI_ARCH["embed_dim"], MINI_ARCH["num_heads"])
    assert vit(torch.zeros(1, 3, MINI_ARCH["img_size"], MINI_ARCH["img_size"])).shape == (1, MINI_ARCH["embed_dim"])


def test_mini_pretrained_loads_the_committed_checkpoint():
    if not mini.mini_checkpoint_path().is_file():
        pytest.skip(f"{mini.mini_checkpoint_path()} not built yet (python -m shiplib.backbones.distill_mini)")
    from shiplib.backbones import load_state_dict_file

    vit = create_backbone("mini")
    sd = load_state_dict_file(mini.mini_checkpoint_path())
    assert torch.equal(vit.blocks[-1].mlp.fc2.weight, sd["blocks.11.mlp.fc2.weight"])


def test_mini_pretrained_missing_checkpoint_says_how_to_build_it(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("SHIPLIB_HOME", str(tmp_path))  # a project folder without data/checkpoints
    assert mini.mini_checkpoint_path() == tmp_path / "data" / "checkpoints" / "vit_mini_distill.safetensors"
    with pytest.raises(BackboneError, match="distill_mini"):
        create_backbone("mini")
    with pytest.raises(BackboneError, match="pretrain_mini"):
        create_backbone("mini_fmnist")
    monkeypatch.setenv("SHIPLIB_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(BackboneError, match=r"data/checkpoints, but \$SHIPLIB_HOME is '.*nowhere', which does not"):
        create_backbone("mini")


def test_drop_path_rate_is_a_linspace_over_blocks():
    vit = create_backbone(tiny_vit(), drop_path_rate=0.2)
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in vit.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2])


# ---------------------------------------------------------------- refusals


def test_unknown_timm_name():
    with pytest.raises(BackboneError, match="unknown backbone 'vit_does_not_exist'.*'mini'"):
        create_backbone("vit_does_not_exist", pretrained=False)


def test_missing_file(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        create_backbone(tmp_path / "nowhere.safetensors")


def test_wrong_suffix(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\0" * 8)
    with pytest.raises(BackboneError, match=r"unsupported backbone file model\.onnx.*\.npz"):
        create_backbone(path)


def test_mismatched_depth(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(tiny_vit().state_dict(), str(path))
    arch = {k: v for k, v in TINY.items() if k != "num_classes"}
    with pytest.raises(BackboneError, match="does not match the architecture.*backbone_arch"):
        create_backbone(path, backbone_arch={**arch, "depth": 4})


def test_mismatched_width(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(tiny_vit().state_dict(), str(path))
    arch = {k: v for k, v in TINY.items() if k != "num_classes"}
    with pytest.raises(BackboneError, match="does not match the architecture"):
        create_backbone(path, backbone_arch={**arch, "embed_dim": 64})


def test_mismatched_timm_name(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(tiny_vit().state_dict(), str(path))
    with pytest.raises(BackboneError, match="does not match the architecture"):
        create_backbone(path, backbone_arch="vit_tiny_patch16_224")


def test_not_a_vit_state_dict(tmp_path):
    path = tmp_path / "resnet.safetensors"
    save_file(timm.create_model("resnet10t", pretrained=False).state_dict(), str(path))
    with pytest.raises(BackboneError, match="not a timm VisionTransformer state dict"):
        create_backbone(path)


def test_non_vit_module():
    with pytest.raises(BackboneError, match="must be a timm VisionTransformer, got Linear"):
        create_backbone(torch.nn.Linear(3, 3))


def test_nonsense_spec_type():
    with pytest.raises(BackboneError, match="timm name, a file path, a mini name .mini, mini_distill, mini_fmnist"):
        create_backbone(42)


def test_mini_names_and_a_missing_checkpoint_says_how_to_train_it(monkeypatch, tmp_path):
    import torch

    from shiplib.backbones import mini

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    default = create_backbone("mini")
    assert same(default, create_backbone("mini_distill")) and not same(default, create_backbone("mini_fmnist"))
    monkeypatch.setitem(mini.MINI_CHECKPOINTS, "mini_other", "vit_mini_other")
    monkeypatch.setitem(mini.MINI_RECIPES, "vit_mini_other", "`make other`")
    with pytest.raises(BackboneError, match="vit_mini_other.safetensors is missing: train it with `make other`"):
        create_backbone("mini_other")
    with pytest.raises(KeyError, match="valid: mini, mini_distill, mini_fmnist"):
        mini.mini_card_path(name="nope")


def test_offline_pretrained_fails_fast_with_instructions(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(BackboneError) as err:
        create_backbone("vit_base_patch16_224.orig_in21k", pretrained=True)
    assert time.time() - t0 < 10
    msg = str(err.value)
    assert "not in the local cache" in msg and GOOGLE_NPZ_URL in msg and "backbone='mini'" in msg


def test_pretrained_without_network_fails_within_seconds(tmp_path, monkeypatch):
    """The real network check (no HF_HUB_OFFLINE): a quick socket test, not a long download timeout."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    if _hub_reachable():
        pytest.skip("huggingface.co is reachable from here; the offline path cannot be exercised")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    t0 = time.time()
    with pytest.raises(BackboneError, match="cannot be reached"):
        create_backbone("vit_base_patch16_224.orig_in21k", pretrained=True)
    assert time.time() - t0 < 15


def test_pretrained_weights_in_the_hf_cache_load_offline(tmp_path, monkeypatch):
    """Weights already in the Hugging Face cache load with HF_HUB_OFFLINE=1 (a file laid out as the hub does)."""
    import huggingface_hub.constants as hf_constants

    name = "vit_tiny_patch16_224.augreg_in21k"
    hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id
    source = timm.create_model(name, pretrained=False, num_classes=0).eval()
    repo = tmp_path / f"models--{hub_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(source.state_dict(), str(repo / "snapshots" / commit / "model.safetensors"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = create_backbone(name, pretrained=True)
    assert same_features(source, loaded, img_size=224)
