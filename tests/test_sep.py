"""SEP: per-input top-energy token selection, the Token Fusion Module, and the prompted forward."""
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

import shiplib
from shiplib.layers.token_fusion import TokenFusion, select_high_energy_tokens, token_energy

K = 3


def tiny_vit(**kw):
    cfg = dict(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2, num_classes=0)
    cfg.update(kw)
    return VisionTransformer(**cfg)


def build(vit=None, **opts):
    opts.setdefault("num_prompts", K)
    return shiplib.build_model("sep", backbone=vit or tiny_vit(), num_classes=4, pretrained=False, **opts)


def test_selection_is_per_input_by_mean_squared_activation_highest_first():
    t = torch.zeros(2, 5, 4)
    scale = torch.tensor([[1.0, 5.0, 2.0, 4.0, 3.0], [6.0, 1.0, 2.0, 0.5, 7.0]])
    t += scale[..., None]
    t[1, 2, 0] = 9.0  # energy (81 + 3 * 2^2) / 4 = 23.25: third in sample 1 (after 49 and 36)
    assert torch.allclose(token_energy(t)[0], scale[0] ** 2)
    t.requires_grad_(True)
    sel = select_high_energy_tokens(t, 3)
    assert torch.equal(sel[0, :, 0].detach(), torch.tensor([5.0, 4.0, 3.0]))
    assert torch.equal(sel[1, :, 1].detach(), torch.tensor([7.0, 6.0, 2.0]))  # token 2 via its large channel 0
    sel.sum().backward()
    assert t.grad[0].sum(dim=1).tolist() == [0.0, 4.0, 0.0, 4.0, 4.0]
    with pytest.raises(ValueError, match="cannot select 6 tokens from 5"):
        select_high_energy_tokens(t, 6)


def test_token_fusion_attends_over_tokens_not_over_the_batch():
    torch.manual_seed(0)
    tfm = TokenFusion(16, 2, 8)
    p, s = torch.randn(3, 4, 16), torch.randn(3, 4, 16)
    together = tfm(p, s)
    alone = torch.cat([tfm(p[i:i + 1], s[i:i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-6)


def test_token_fusion_formula_and_init():
    torch.manual_seed(0)
    tfm = TokenFusion(16, 4, 6)
    assert tfm.attn_scale.item() == tfm.mlp_scale.item() == 0.75
    assert tfm.attn.num_heads == 4 and tfm.mlp[0].out_features == 6 and tfm.mlp[0].bias is None
    p, s = torch.randn(2, 3, 16), torch.randn(2, 3, 16)
    with torch.no_grad():
        tfm.attn_scale.fill_(1.0)
        tfm.mlp_scale.fill_(1.0)
    assert torch.allclose(tfm(p, s), s)  # both mixes fully on the selected tokens
    with torch.no_grad():
        tfm.attn_scale.fill_(0.0)
    kv = tfm.norm1(s)
    expected = tfm.attn(tfm.norm1(p), kv, kv)[0]  # prompts are the queries
    assert torch.allclose(tfm(p, s), expected, atol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        tfm(p, s[:, :2])
    with pytest.raises(ValueError, match="not divisible"):
        TokenFusion(16, 3, 4)


def test_default_layout_init_and_parameter_count():
    m = build()
    assert m.fusion_layers == [1, 2, 3]
    assert tuple(m.prompt.shape) == (1, K, 32)
    d, h = 32, round(32 / 3)
    per_block = (4 * d * d + 4 * d) + 2 * (2 * d) + 2 * d * h + 2  # MHA, two LayerNorms, bias-free MLP, 2 scalars
    c = shiplib.count_parameters(m)
    assert c["trainable_without_head"] == K * d + 3 * per_block
    assert c["head"] == 32 * 4 + 4
    assert m.fusion["1"].attn.num_heads == m.vit.blocks[0].attn.num_heads == 2
    defaults = shiplib.method_options("sep")
    assert defaults["num_prompts"] == 16 and defaults["prompt_dropout"] == 0.0
    big = build(num_prompts=400)
    assert 0.018 < big.prompt.std().item() < 0.022


def test_fused_prompts_replace_the_prompt_slots_before_each_fusion_block():
    m = build(fusion_layers=[2, 3]).eval()
    x = torch.randn(2, 3, 32, 32)
    ins, outs = [], []
    hooks = [b.register_forward_pre_hook(lambda mod, a: ins.append(a[0].detach())) for b in m.vit.blocks]
    hooks += [b.register_forward_hook(lambda mod, a, o: outs.append(o.detach())) for b in m.vit.blocks]
    with torch.no_grad():
        m(x)
    for hk in hooks:
        hk.remove()
    assert torch.equal(ins[0][:, 1:1 + K], m.prompt.detach().expand(2, -1, -1))
    assert torch.equal(ins[1], outs[0])  # block 1 is not a fusion block: prompt outputs carried unchanged
    for i in (2, 3):
        prev = outs[i - 1]
        image = torch.cat([prev[:, :1], prev[:, 1 + K:]], dim=1)
        with torch.no_grad():
            fused = m.fusion[str(i)](prev[:, 1:1 + K], select_high_energy_tokens(image, K))
        assert torch.equal(ins[i][:, :1], prev[:, :1]) and torch.equal(ins[i][:, 1 + K:], prev[:, 1 + K:])
        assert torch.allclose(ins[i][:, 1:1 + K], fused, atol=1e-6)


def test_each_input_is_processed_independently_of_the_batch():
    m = build().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(m(x), torch.cat([m(x[i:i + 1]) for i in range(3)]), atol=1e-5)


def test_gradient_reaches_the_prompt_and_every_fusion_module():
    m = build()
    m(torch.randn(2, 3, 32, 32)).sum().backward()
    assert m.prompt.grad.abs().sum() > 0
    for i, tfm in m.fusion.items():
        assert tfm.attn.in_proj_weight.grad.abs().sum() > 0, f"fusion {i} got no gradient"
        assert tfm.attn_scale.grad is not None


def test_bad_options_fail_clearly():
    with pytest.raises(ValueError, match=r"fusion_layers \[4\] are outside the backbone's blocks 0..3"):
        build(fusion_layers=[1, 4])
    with pytest.raises(ValueError, match="distinct block indices"):
        build(fusion_layers=[1, 1])
    with pytest.raises(ValueError, match="fusion_heads"):
        build(fusion_heads=0)
    with pytest.raises(ValueError, match="cannot select 18 tokens from 17"):
        build(num_prompts=18)(torch.randn(1, 3, 32, 32))
    with pytest.raises(TypeError, match="Valid options: .*fusion_layers"):
        build(fusion_blocks=[1])
