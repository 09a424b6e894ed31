"""VPT-shallow / VPT-deep: token layout, replacement, init, dropout, parameter counts."""
import math

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

import shiplib
from shiplib.methods._prompt_init import xavier_prompt_bound
from shiplib.methods.vpt import insert_prompts, remove_prompts, replace_prompts

K = 3


def tiny_vit(**kw):
    cfg = dict(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2, num_classes=0)
    cfg.update(kw)
    return VisionTransformer(**cfg)


def build(method, vit=None, **opts):
    opts.setdefault("num_prompts", K)
    return shiplib.build_model(method, backbone=vit or tiny_vit(), num_classes=5, pretrained=False, **opts)


def block_inputs(model, x):
    """The token sequence entering every block (forward pre-hooks, independent of the method's own loop)."""
    seen = []
    hooks = [b.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
             for b in model.vit.blocks]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_layout_helpers_round_trip():
    x, p = torch.randn(2, 7, 4), torch.randn(2, 3, 4)
    y = insert_prompts(x, p, 2)
    assert torch.equal(y[:, 2:5], p) and torch.equal(remove_prompts(y, 2, 3), x)
    q = torch.randn(2, 3, 4)
    assert torch.equal(replace_prompts(y, q, 2)[:, 2:5], q)
    assert torch.equal(remove_prompts(replace_prompts(y, q, 2), 2, 3), x)


@pytest.mark.parametrize("reg_tokens", [0, 2])
def test_deep_prompts_sit_after_the_prefix_tokens_and_replace_outputs_every_block(reg_tokens):
    m = build("vpt_deep", tiny_vit(reg_tokens=reg_tokens)).eval()
    x = torch.randn(2, 3, 32, 32)
    ins = block_inputs(m, x)
    P = m.num_prefix_tokens
    assert P == 1 + reg_tokens
    n_img = m.num_image_tokens(x)
    embedded = m.embed(x)
    for i, h in enumerate(ins):
        assert h.shape == (2, n_img + K, 32)
        assert torch.equal(h[:, P:P + K], m.prompts[i].detach().expand(2, -1, -1))  # fresh prompt at every block
    assert torch.equal(ins[0][:, :P], embedded[:, :P]) and torch.equal(ins[0][:, P + K:], embedded[:, P:])


def test_shallow_prompt_is_inserted_once_and_its_outputs_are_carried():
    m = build("vpt_shallow").eval()
    x = torch.randn(2, 3, 32, 32)
    ins = block_inputs(m, x)
    assert tuple(m.prompts.shape) == (1, K, 32)
    assert torch.equal(ins[0][:, 1:1 + K], m.prompts[0].detach().expand(2, -1, -1))
    out0 = m.vit.blocks[0](ins[0])
    assert torch.allclose(ins[1], out0)  # block 1 sees block 0's prompt outputs, not a new prompt
    assert not torch.allclose(ins[1][:, 1:1 + K], m.prompts[0].detach().expand(2, -1, -1))


def test_features_drop_the_prompts_and_every_deep_prompt_gets_gradient():
    m = build("vpt_deep").eval()
    x = torch.randn(2, 3, 32, 32)
    feats, losses = m.forward_features(x)
    assert feats.shape == (2, m.num_image_tokens(x), 32) and losses == {}
    m(x).sum().backward()
    assert all(m.prompts.grad[i].abs().sum() > 0 for i in range(m.depth))


def test_prompts_are_queries_joint_attention_is_permutation_invariant():
    # Where the prompts sit must not matter (no position embedding on prompts, joint softmax over all tokens):
    # recompute with the prompts appended after the patches and compare the CLS logits.
    m = build("vpt_deep").eval()
    x = torch.randn(2, 3, 32, 32)
    h = m.embed(x)
    n = h.shape[1]
    for i, blk in enumerate(m.vit.blocks):
        p = m.prompts[i].expand(2, -1, -1)
        h = torch.cat([h[:, :n], p], dim=1)
        h = blk(h)
    ref = m.forward_head(m.vit.norm(h)[:, :n])
    assert torch.allclose(m(x), ref, atol=1e-5)


def test_init_is_vpt_xavier_uniform_from_the_backbone_patch_and_channels():
    m = build("vpt_deep", tiny_vit(in_chans=2), num_prompts=200)
    bound = math.sqrt(6 / (2 * 8 * 8 + 32))
    assert xavier_prompt_bound(m.vit) == pytest.approx(bound)
    assert m.prompts.abs().max() <= bound and m.prompts.abs().max() > 0.95 * bound
    assert m.prompts.mean().abs() < 0.1 * bound


def test_parameter_counts():
    for method, layers in [("vpt_shallow", 1), ("vpt_deep", 4)]:
        c = shiplib.count_parameters(build(method))
        assert c["trainable_without_head"] == layers * K * 32
        assert c["head"] == 32 * 5 + 5


def test_prompt_dropout_is_active_only_in_training():
    m = build("vpt_deep", prompt_dropout=0.5, drop_path_rate=0.0)
    x = torch.randn(2, 3, 32, 32)
    m.train()
    assert not torch.allclose(m(x), m(x))
    m.eval()
    assert torch.equal(m(x), m(x))
    m0 = build("vpt_deep", prompt_dropout=0.0, drop_path_rate=0.0).train()
    assert torch.equal(m0(x), m0(x))


def test_defaults_and_training_recipe():
    opts = shiplib.method_options("vpt_deep")
    assert opts["num_prompts"] == 50 and opts["prompt_dropout"] == 0.1 and opts["drop_path_rate"] == 0.1
    m = shiplib.build_model("vpt_deep", backbone=tiny_vit(), num_classes=2, pretrained=False)
    assert m.vit.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    assert {n for n, p in m.named_parameters() if p.requires_grad} == {"prompts", "vit.head.weight", "vit.head.bias"}


def test_no_class_token_avg_pool_and_dynamic_size_backbones():
    m = build("vpt_deep", tiny_vit(class_token=False, global_pool="avg")).eval()
    assert m.num_prefix_tokens == 0
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    m = build("vpt_shallow", tiny_vit(dynamic_img_size=True)).eval()
    x = torch.randn(1, 3, 48, 40)
    assert m.forward_features(x)[0].shape[1] == m.num_image_tokens(x) == 1 + 6 * 5


def test_bad_options_fail_clearly():
    with pytest.raises(ValueError, match="num_prompts"):
        build("vpt_deep", num_prompts=0)
    with pytest.raises(ValueError, match="prompt_dropout"):
        build("vpt_shallow", prompt_dropout=1.0)
    with pytest.raises(TypeError, match="Valid options: .*num_prompts"):
        build("vpt_deep", prompt_lenght=5)
