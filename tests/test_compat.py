"""Official SHIP state dicts <-> shiplib (docs/ship_computation.md §11)."""
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

import shiplib
from shiplib.compat import convert_official_state_dict, to_official_state_dict

D, DEPTH, K, C = 32, 6, 4, 5


def tiny_vit(seed=0):
    torch.manual_seed(seed)
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=D, depth=DEPTH, num_heads=2, num_classes=0)


def build(levels, seed=0, bank=None):
    bank = torch.randn(20, D, generator=torch.Generator().manual_seed(1)) * 50 if bank is None else bank
    torch.manual_seed(seed)
    return shiplib.build_model("ship", backbone=tiny_vit(seed), num_classes=C, pretrained=False, levels=levels,
                               prompt_length=K, prototypes=bank).eval()


def official_names(levels):
    per_block = [f"blocks.{i}.{n}.{w}" for i in range(DEPTH) for n in
                 ("norm1", "attn.q", "attn.k", "attn.v", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
                 for w in ("weight", "bias")]
    return {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight",
            "norm.bias", "head.weight", "head.bias", "semantic_share_prompt", "attribute_prompt",
            "visual_prompt_token_pos_embed", *per_block, *(f"compound_prompts_visual.{c}" for c in range(len(levels)))}


@pytest.mark.parametrize("levels", [[0, 2, 4], [0, 1, 2, 3, 4, 5], [0, 5], [0]])
def test_round_trip_gives_identical_logits(levels):
    src = build(levels, seed=0)
    with torch.no_grad():  # trained-looking prompts and head
        for p in src.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    official = to_official_state_dict(src)
    assert set(official) == official_names(levels)
    assert len(official) == 6 + 16 * DEPTH + len(levels) + 5  # 203 + L for the 12-block ViT-B (spec §11)
    assert tuple(official["attribute_prompt"].shape) == (2, 10, D)
    assert tuple(official["blocks.0.attn.k.weight"].shape) == (D, D)
    dst = build(levels, seed=1, bank=src.prototype_bank)
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(src(x), dst(x))
    dst.load_state_dict(convert_official_state_dict(official, levels=levels), strict=True)
    assert torch.equal(src(x), dst(x))


def test_q_k_v_are_stacked_in_that_order_and_extras_dropped():
    official = to_official_state_dict(build([0, 2, 4]))
    for i, part in enumerate("qkv"):
        official[f"blocks.3.attn.{part}.weight"] = torch.full((D, D), float(i + 1))
        official[f"blocks.3.attn.{part}.bias"] = torch.full((D,), float(i + 1))
    ours = convert_official_state_dict({"model": official, "optimizer": {}, "epoch": 3})
    assert torch.equal(ours["vit.blocks.3.attn.qkv.weight"][:, 0], torch.arange(1, 4).repeat_interleave(D).float())
    assert torch.equal(ours["vit.blocks.3.attn.qkv.bias"], torch.arange(1, 4).repeat_interleave(D).float())
    assert "visual_prompt_token_pos_embed" not in ours and not any(".attn.q." in k for k in ours)
    assert torch.equal(ours["sip_prompts.2"], official["compound_prompts_visual.2"])
    assert torch.equal(ours["ssp_prompt"], official["semantic_share_prompt"])
    assert torch.equal(ours["vit.head.weight"], official["head.weight"])
    # DistributedDataParallel prefixes are accepted
    assert set(convert_official_state_dict({f"module.{k}": v for k, v in official.items()})) == set(ours)


def test_attribute_rows_follow_the_usable_level_starts():
    official = to_official_state_dict(build([0, 2, 4]))
    ap = torch.randn(2, 10, D)
    official["attribute_prompt"] = ap
    assert torch.equal(convert_official_state_dict(official)["attribute_prompts"], ap)
    two = {k: v for k, v in official.items() if k != "compound_prompts_visual.2"}
    assert torch.equal(convert_official_state_dict(two, levels=[0, 5])["attribute_prompts"], ap[1:])
    one = {k: v for k, v in two.items() if k != "compound_prompts_visual.1"}
    assert "attribute_prompts" not in convert_official_state_dict(one, levels=[0])


def test_bad_state_dicts_fail_clearly():
    official = to_official_state_dict(build([0, 2, 4]))
    with pytest.raises(ValueError, match="unexpected tensors.*blocks.0.adapter.weight"):
        convert_official_state_dict({**official, "blocks.0.adapter.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="fused qkv, not an official one"):
        convert_official_state_dict(build([0, 2, 4]).vit.state_dict())
    no_v = {k: v for k, v in official.items() if k != "blocks.1.attn.v.weight"}
    with pytest.raises(ValueError, match="block 1 lacks attn.v.weight"):
        convert_official_state_dict(no_v)
    with pytest.raises(ValueError, match="has 3 SIPs .* 2 levels"):
        convert_official_state_dict(official, levels=[0, 3])
    with pytest.raises(TypeError, match="state dict"):
        convert_official_state_dict([1, 2])
    no_ssp = shiplib.build_model("ship", backbone=tiny_vit(), num_classes=C, levels=[0, 2], ssp=False, ap=False)
    with pytest.raises(ValueError, match="switched off"):
        to_official_state_dict(no_ssp)
