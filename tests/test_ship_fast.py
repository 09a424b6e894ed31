"""The fast SHIP path against the reference path (same model, `implementation=` chosen per call), and its cache."""
import copy
import dataclasses
import itertools

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

import shiplib
from shiplib.layers.ship_block import PromptRows, add_branch

K, C = 4, 5
TOL = 1e-5


def tiny_vit(seed=0, **kw):
    cfg = dict(img_size=32, patch_size=8, embed_dim=32, depth=6, num_heads=2, num_classes=0)
    cfg.update(kw)
    torch.manual_seed(seed)
    vit = VisionTransformer(**cfg)
    with torch.no_grad():  # non-trivial LayerNorms, so identity/normed prompt rows are told apart
        for m in vit.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0.0, 0.2)
    return vit


def build(vit=None, **opts):
    vit = vit if vit is not None else tiny_vit()
    opts.setdefault("prompt_length", K)
    opts.setdefault("drop_path_rate", 0.0)
    if opts.get("ap", True) and "prototypes" not in opts:
        opts["prototypes"] = 50 * torch.randn(20, vit.embed_dim, generator=torch.Generator().manual_seed(1))
    m = shiplib.build_model("ship", backbone=vit, num_classes=C, pretrained=False, **opts)
    with torch.no_grad():  # trained-looking prompts and head
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.5 * torch.randn_like(p))
    return m


def run(m, impl, x, y, seed=0):
    """Logits, losses and gradients of every trainable parameter under one implementation."""
    m.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    logits, losses = m(x, return_losses=True, implementation=impl)
    loss = F.cross_entropy(logits, y) + sum((m.loss_weights[k] * v for k, v in losses.items()), torch.zeros(()))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad and p.grad is not None}
    return logits.detach(), {k: v.detach() for k, v in losses.items()}, grads


def assert_same(m, x, mode, seed=0):
    m.train(mode == "train")
    y = torch.arange(x.shape[0]) % C
    ref = run(m, "reference", x, y, seed)
    fast = run(m, "fast", x, y, seed)
    assert (fast[0] - ref[0]).abs().max() < TOL
    assert fast[1].keys() == ref[1].keys()
    for k in ref[1]:
        assert (fast[1][k] - ref[1][k]).abs() < TOL, k
    assert fast[2].keys() == ref[2].keys() and len(ref[2]) > 0
    for n in ref[2]:
        assert (fast[2][n] - ref[2][n]).abs().max() < TOL, n


LEVELS = [[0, 2, 4], [0, 1, 2, 3, 4, 5], [0, 5], [0], [0, 3, 4, 5]]


@pytest.mark.parametrize("levels", LEVELS)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_fast_equals_reference_logits_pml_and_gradients(levels, mode):
    assert_same(build(levels=levels), torch.randn(3, 3, 32, 32), mode)


@pytest.mark.parametrize("opts", [dict(prompt_queries="all"), dict(da=False), dict(da=False, ap=False),
                                  dict(num_attribute_prompts=3), dict(ssp_length=3, ap_length=5, top_k=4),
                                  dict(da_scale=0.4, ap_mix_scale=0.6)])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_fast_equals_reference_for_options(opts, mode):
    assert_same(build(levels=[0, 2, 3, 5], **opts), torch.randn(3, 3, 32, 32), mode)


@pytest.mark.parametrize("bits", list(itertools.product([True, False], repeat=5)))
def test_fast_equals_reference_for_every_ablation_combination(bits):
    switches = dict(zip(("sip", "ssp", "ap", "pml", "da"), bits))
    if not (switches["sip"] or switches["ssp"] or switches["ap"]):
        switches["ssp"] = True  # without prompts nothing is trainable but the head (covered by the next test)
    assert_same(build(tiny_vit(depth=4), levels=[0, 1, 3], **switches), torch.randn(2, 3, 32, 32), "train")


def test_without_prompts_fast_is_the_backbone():
    m = build(sip=False, ssp=False, ap=False).eval()
    x = torch.randn(2, 3, 32, 32)
    assert (m(x) - m.forward_head(m.vit.forward_features(x))).abs().max() < TOL


@pytest.mark.parametrize("kw", [dict(reg_tokens=2), dict(img_size=40, embed_dim=48, num_heads=3, depth=4),
                                dict(global_pool="avg"), dict(init_values=0.1)])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_fast_equals_reference_on_other_backbones(kw, mode):
    vit = tiny_vit(**kw)
    size = vit.patch_embed.img_size
    assert_same(build(vit, levels=[0, 1, 3]), torch.randn(2, 3, *size), mode)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_forward_features_returns_every_image_token_in_both_implementations(mode):
    m = build(levels=[0, 2, 4]).train(mode == "train")
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    ref, ref_losses = m.forward_features(x, implementation="reference")
    torch.manual_seed(0)
    fast, fast_losses = m.forward_features(x, implementation="fast")
    assert fast.shape == ref.shape == (2, 17, 32) and (fast - ref).abs().max() < TOL
    assert (fast_losses["pml"] - ref_losses["pml"]).abs() < TOL


def test_drop_path_draws_the_same_masks_in_the_same_order():
    """Both paths draw one per-sample factor per block branch in block order, so a shared seed gives equal runs."""
    m = build(levels=[0, 2, 4], drop_path_rate=0.5)
    x = torch.randn(8, 3, 32, 32)
    assert_same(m, x, "train", seed=3)
    m.train()
    torch.manual_seed(4)
    a = m(x)
    assert not torch.allclose(a, m(x))  # drop path is live


def test_shared_prompt_rows_split_by_drop_path_history():
    g = torch.Generator().manual_seed(0)
    rows = PromptRows(torch.randn(1, 3, 4, generator=g))
    per_sample = rows.values.expand(6, -1, -1)
    for step in range(4):
        mask = (torch.rand(6, generator=g) > 0.4).float() / 0.6

        def branch_fn(v, s=step):
            return torch.tanh(v * (s + 1))

        rows = add_branch(rows, branch_fn(rows.values), mask)
        per_sample = per_sample + mask[:, None, None] * branch_fn(per_sample)
        assert torch.allclose(rows.per_sample(rows.values, 6), per_sample, atol=1e-6)
        assert rows.values.shape[0] <= 6
    all_kept = add_branch(PromptRows(torch.ones(1, 2, 2)), torch.ones(1, 2, 2), torch.full((5,), 2.0))
    assert all_kept.group is None and all_kept.values.shape[0] == 1 and torch.all(all_kept.values == 3)


def test_prompt_cache_is_reused_and_invalidated_by_optimizer_steps():
    m = build(levels=[0, 2, 4]).eval()
    x, y = torch.randn(3, 3, 32, 32), torch.arange(3)
    with torch.no_grad():
        first = m(x)
        entries = m.prompt_cache.lookup(m)
        m(x)
        assert m.prompt_cache.lookup(m) is entries  # reused while nothing changes
    # one optimizer step (in eval mode, so train() does not clear the cache)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1.0)
    loss = F.cross_entropy(m(x), y)
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = m(x)
        assert m.prompt_cache.lookup(m) is not entries
        expected = m(x, implementation="reference")
    assert not torch.allclose(first, after) and (after - expected).abs().max() < TOL


def test_prompt_cache_is_cleared_by_train_and_load_state_dict():
    m = build(levels=[0, 2, 4]).eval()
    other = build(levels=[0, 2, 4])
    other.prototype_bank = m.prototype_bank
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        m(x)
        assert m.prompt_cache.filled
        m.train()
        assert not m.prompt_cache.filled
        m.eval()
        m(x)
        m.load_state_dict(other.state_dict())
        assert not m.prompt_cache.filled
        loaded = m(x)
        assert (loaded - other.eval()(x, implementation="reference")).abs().max() < TOL


def test_prompt_cache_follows_in_place_edits_and_copies():
    m = build(levels=[0, 3]).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = m(x)
        m.ssp_prompt.add_(torch.randn_like(m.ssp_prompt))  # in place: bumps the version counter
        edited = m(x)
        assert (edited - m(x, implementation="reference")).abs().max() < TOL and not torch.allclose(before, edited)
        twin = copy.deepcopy(m)
        twin.sip_prompts[1].zero_()
        assert not torch.allclose(twin(x), m(x))


def test_inference_mode_cache_is_usable_with_gradients_on_the_input():
    m = build(levels=[0, 2, 4]).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        m(x)
    for p in m.parameters():
        p.requires_grad_(False)
    xg = x.clone().requires_grad_(True)
    m(xg).sum().backward()  # uses the cache built in inference mode
    xr = x.clone().requires_grad_(True)
    m(xr, implementation="reference").sum().backward()
    assert (xg.grad - xr.grad).abs().max() < TOL


def test_bad_implementation_fails_clearly():
    with pytest.raises(ValueError, match="implementation must be one of"):
        build(levels=[0], implementation="quick")
    m = build(levels=[0])
    with pytest.raises(ValueError, match="implementation must be one of"):
        m(torch.randn(1, 3, 32, 32), implementation="slow")
    with pytest.raises(dataclasses.FrozenInstanceError):  # the choice is made at construction or per call
        m.config.implementation = "reference"
    assert shiplib.methods.method_options("ship")["implementation"] == "fast" and m.implementation == "fast"
    reference = build(levels=[0], implementation="reference")
    assert reference.implementation == "reference" and reference.implementations == ("fast", "reference")
