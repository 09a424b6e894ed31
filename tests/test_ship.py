"""SHIP against an independent restatement of the official forward (docs/ship_computation.md §4-§6), training and
options."""
import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

import shiplib
from shiplib.methods.ship import SHIP

K, C = 4, 5


def tiny_vit(seed=0, **kw):
    cfg = dict(img_size=32, patch_size=8, embed_dim=32, depth=6, num_heads=2, num_classes=0)
    cfg.update(kw)
    torch.manual_seed(seed)
    vit = VisionTransformer(**cfg)
    with torch.no_grad():  # non-trivial LayerNorms, so identity/normed rows are told apart
        for m in vit.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0.0, 0.2)
    return vit


def bank_for(vit, k=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    return 50 * torch.randn(k, vit.embed_dim, generator=g)  # official banks are un-normalised, norms in the 100s


def build(vit=None, **opts):
    vit = vit if vit is not None else tiny_vit()
    opts.setdefault("prompt_length", K)
    if opts.get("ap", True) and "prototypes" not in opts:
        opts["prototypes"] = bank_for(vit)
    return shiplib.build_model("ship", backbone=vit, num_classes=C, pretrained=False, **opts)


# ---------- independent reference of the official forward, written from the spec pseudo-code ----------
def ref_block(blk, x, n, s, full):
    """§6: explicit per-head q, k, v from the fused weights; two softmaxes for image queries."""
    D = x.shape[-1]
    H = blk.attn.num_heads
    d = D // H
    xn = F.layer_norm(x, (D,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
    W, b = blk.attn.qkv.weight, blk.attn.qkv.bias
    Wq, Wk, Wv, bq, bk, bv = W[:D], W[D:2 * D], W[2 * D:], b[:D], b[D:2 * D], b[2 * D:]
    outs, lgs = [], []
    for h in range(H):
        r = slice(h * d, (h + 1) * d)
        Q, Kk, V = xn @ Wq[r].T + bq[r], xn @ Wk[r].T + bk[r], xn @ Wv[r].T + bv[r]
        Lg = (Q if full else Q[:, :n]) @ Kk.transpose(1, 2) / math.sqrt(d)
        Z = (1 - s) * torch.softmax(Lg[:, :n, :n], -1) @ V[:, :n] + s * torch.softmax(Lg[:, :n, n:], -1) @ V[:, n:]
        P = torch.softmax(Lg[:, n:, :], -1) @ V if full else xn[:, n:, r]
        outs.append(torch.cat([Z, P], 1))
        lgs.append(Lg)
    x = x + torch.cat(outs, -1) @ blk.attn.proj.weight.T + blk.attn.proj.bias
    y = F.layer_norm(x, (D,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
    x = x + F.gelu(y @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias) @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias
    return x, torch.stack(lgs, 1)


def ref_topk(logits, n, k=10):
    return logits[:, :, 0, :n].mean(1).topk(k, dim=-1).indices


def ref_ap(param_j, x_prev, logits_prev, bank, n):
    T = ref_topk(logits_prev, n)
    z = torch.stack([x_prev[b, T[b]] for b in range(x_prev.shape[0])])
    w = torch.softmax(F.cosine_similarity(z[:, :, None], bank[None, None], dim=-1), dim=-1)
    return 0.1 * (w @ bank) + 0.9 * param_j


def ref_pml(X, logits, n):
    Z, P = X[:, :n], X[:, n:]
    T = ref_topk(logits, n)
    per_b = []
    for b in range(X.shape[0]):
        cos = F.cosine_similarity(P[b][:, None], Z[b, T[b]][None], dim=-1)  # (prompts, 10)
        per_b.append((1 - cos).min(dim=1).values)
    return torch.stack(per_b).mean()


def reference_forward(model, img, levels):
    """§4 full forward, with the official AP placement levels[-2:] (for >= 3 levels) or our rule otherwise."""
    vit = model.vit
    depth = len(vit.blocks)
    x = vit._pos_embed(vit.patch_embed(img))
    n, B = x.shape[1], x.shape[0]
    ap_at = levels[-2:] if len(levels) >= 3 else [s for s in levels if s > 0]
    SSP = model.ssp_prompt.expand(B, -1, -1)
    sips = [p.expand(B, -1, -1) for p in model.sip_prompts]
    x = torch.cat([x, sips[0], SSP], 1)
    c, logits, pml = 0, None, None
    for i in range(depth):
        if i in levels and i > 0:
            c += 1
            parts = [sips[c]]
            if i in ap_at:
                parts.append(ref_ap(model.attribute_prompts[ap_at.index(i)], x, logits, model.prototype_bank, n))
            x = torch.cat([x[:, :n], *parts, SSP], 1)
        else:
            x = torch.cat([x[:, :-10], SSP], 1)
        x, logits = ref_block(vit.blocks[i], x, n, 0.1, full=(i == depth - 1))
        if i == depth - 1:
            pml = ref_pml(x, logits, n)
    cls = F.layer_norm(x[:, 0], (x.shape[-1],), vit.norm.weight, vit.norm.bias, vit.norm.eps)
    return cls @ vit.head.weight.T + vit.head.bias, pml


LEVEL_CASES = [[0, 2, 4], [0, 1, 2, 3, 4, 5], [0, 5], [0], [0, 3, 4, 5]]


@pytest.mark.parametrize("levels", LEVEL_CASES)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_forward_matches_the_official_restatement(levels, mode):
    m = build(levels=levels, drop_path_rate=0.0)
    m.train(mode == "train")
    x = torch.randn(3, 3, 32, 32)
    logits, losses = m(x, return_losses=True)
    with torch.no_grad():
        ref_logits, ref_pml = reference_forward(m, x, levels)
    assert (logits - ref_logits).abs().max() < 1e-4
    if mode == "train":
        assert (losses["pml"] - ref_pml).abs() < 1e-5
        assert 0.2 < ref_pml < 1.5
    else:
        assert losses["pml"].item() == 0.0


@pytest.mark.parametrize("kw", [dict(reg_tokens=2), dict(img_size=40, embed_dim=48, num_heads=3, depth=4)])
def test_reference_match_holds_for_other_prefixes_sizes_and_widths(kw):
    vit = tiny_vit(**kw)
    levels = [0, 1, 3]
    m = build(vit, levels=levels, drop_path_rate=0.0).train()
    x = torch.randn(2, 3, vit.patch_embed.img_size[0], vit.patch_embed.img_size[1])
    logits, losses = m(x, return_losses=True)
    with torch.no_grad():
        ref_logits, ref_pml = reference_forward(m, x, levels)
    assert (logits - ref_logits).abs().max() < 1e-4 and (losses["pml"] - ref_pml).abs() < 1e-5


def test_attribute_prompts_sit_at_the_last_level_starts_after_block_0():
    assert build(levels=[0, 2, 4]).ap_starts == [2, 4]
    assert build(levels=[0, 1, 2, 3, 4, 5]).ap_starts == [4, 5]
    assert build(levels=[0, 5]).ap_starts == [5]
    m = build(levels=[0])
    assert m.ap_starts == [] and m.attribute_prompts is None and m.prototype_bank is None
    assert build(levels=[0, 1, 2, 3], num_attribute_prompts=3).ap_starts == [1, 2, 3]
    assert tuple(build(levels=[0, 5]).attribute_prompts.shape) == (1, 10, 32)


def test_trainable_set_and_official_initialisations():
    m = build(levels=[0, 2, 4], prompt_length=50)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"sip_prompts.0", "sip_prompts.1", "sip_prompts.2", "ssp_prompt", "attribute_prompts",
                         "vit.head.weight", "vit.head.bias"}
    D = 32
    assert tuple(m.sip_prompts[0].shape) == (1, 50, D) and tuple(m.ssp_prompt.shape) == (10, D)
    assert tuple(m.attribute_prompts.shape) == (2, 10, D)
    bounds = {"sip": math.sqrt(6 / (51 * D)), "ssp": math.sqrt(6 / D), "ap": math.sqrt(6 / (10 * D))}
    for key, p in [("sip", torch.cat(list(m.sip_prompts))), ("ssp", m.ssp_prompt), ("ap", m.attribute_prompts)]:
        assert p.abs().max() <= bounds[key] and p.abs().max() > 0.8 * bounds[key], key
    assert m.loss_weights == {"pml": 0.5}
    # the bank is a buffer that follows the model but stays out of the state dict (as in the official code)
    assert "prototype_bank" in dict(m.named_buffers()) and "prototype_bank" not in m.state_dict()


def test_drop_path_is_active_in_training_by_default():
    m = build(levels=[0, 2, 4])
    assert m.config.drop_path_rate == 0.1 and m.vit.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    x = torch.randn(16, 3, 32, 32)
    m.train()
    torch.manual_seed(0)
    assert not torch.equal(m(x), m(x))
    m.eval()
    assert torch.equal(m(x), m(x))


def test_optimizer_step_changes_prompts_and_head_only():
    torch.manual_seed(0)
    m = build(levels=[0, 2, 4]).train()
    backbone = {n: p.detach().clone() for n, p in m.vit.named_parameters() if not n.startswith("head.")}
    prompts = {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4) % C
    logits, losses = m(x, return_losses=True)
    loss = F.cross_entropy(logits, y) + m.loss_weights["pml"] * losses["pml"]
    loss.backward()
    assert all(p.grad is None for n, p in m.vit.named_parameters() if not n.startswith("head."))
    opt.step()
    for n, p in m.vit.named_parameters():
        if not n.startswith("head."):
            assert torch.equal(p, backbone[n]), n
    for n, p in m.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, prompts[n]), n


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    m = build(levels=[0, 2, 4], drop_path_rate=0.0).train()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=3e-2)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % C
    history = []
    for _ in range(25):
        logits, losses = m(x, return_losses=True)
        loss = F.cross_entropy(logits, y) + 0.5 * losses["pml"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.5 * history[0]


@pytest.mark.parametrize("switches", [dict(zip(("sip", "ssp", "ap", "pml", "da"), bits))
                                      for bits in __import__("itertools").product([True, False], repeat=5)])
def test_every_ablation_combination_runs(switches):
    vit = tiny_vit(depth=4)
    m = build(vit, levels=[0, 1, 3], **switches).train()
    logits, losses = m(torch.randn(2, 3, 32, 32), return_losses=True)
    assert logits.shape == (2, C) and torch.isfinite(logits).all()
    assert set(losses) == ({"pml"} if switches["pml"] else set())
    assert m.loss_weights == ({"pml": 0.5} if switches["pml"] else {})
    (logits.sum() + sum(losses.values(), torch.zeros(()))).backward()
    counts = shiplib.count_parameters(m)
    expected = (3 * K * 32 * switches["sip"] + 10 * 32 * switches["ssp"] + 2 * 10 * 32 * switches["ap"]
                + 32 * C + C)
    assert counts["trainable"] == expected
    assert ("official_trainable" in counts) == all(switches.values())


def test_without_any_prompt_the_model_is_the_frozen_backbone():
    vit = tiny_vit()
    m = build(vit, sip=False, ssp=False, ap=False).eval()
    x = torch.randn(2, 3, 32, 32)
    assert m.levels == [] and (m(x) - m.vit(x)).abs().max() < 1e-5


def test_joint_attention_ablation_runs_prompts_through_the_plain_blocks():
    m = build(levels=[0, 2, 4], da=False, ap=False).eval()
    x = torch.randn(2, 3, 32, 32)
    h = m.embed(x)
    n = h.shape[1]
    ssp = m.ssp_prompt.expand(2, -1, -1)
    for i, blk in enumerate(m.vit.blocks):
        carried = m.sip_prompts[[0, 2, 4].index(i)].expand(2, -1, -1) if i in (0, 2, 4) else h[:, n:n + K]
        h = blk(torch.cat([h[:, :n], carried, ssp], 1))
    assert (m(x) - m.forward_head(m.vit.norm(h[:, :n]))).abs().max() < 1e-5


def test_prompts_attending_everywhere_runs_and_differs():
    torch.manual_seed(0)
    last = build(levels=[0, 2, 4]).eval()
    every = build(levels=[0, 2, 4], prompt_queries="all").eval()
    every.load_state_dict(last.state_dict())
    every.prototype_bank = last.prototype_bank
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(last(x), every(x))


def test_paper_vs_code_options_change_the_output():
    torch.manual_seed(0)
    base = build(levels=[0, 2, 4]).eval()
    x = torch.randn(2, 3, 32, 32)
    ref = base(x)
    for opt in (dict(da_scale=0.3), dict(ap_mix_scale=0.5)):
        other = build(levels=[0, 2, 4], **opt).eval()
        other.load_state_dict(base.state_dict())
        other.prototype_bank = base.prototype_bank
        assert not torch.allclose(ref, other(x)), opt
    m = build(levels=[0, 2, 4], ssp_length=3, ap_length=5, top_k=4, pml_weight=2.0).train()
    _, losses = m(x, return_losses=True)
    assert m.loss_weights == {"pml": 2.0} and tuple(m.attribute_prompts.shape) == (2, 5, 32)
    assert tuple(m.ssp_prompt.shape) == (3, 32)


# ---------- level sources ----------
def banded_affinity(depth, breaks):
    """An affinity whose greedy chain at threshold 0.9 starts a level at each block in `breaks`."""
    A = torch.full((depth, depth), 0.5)
    starts = [0] + list(breaks)
    bounds = starts + [depth]
    for a, b in zip(bounds, bounds[1:]):
        A[a:b, a:b] = 0.95
    A.fill_diagonal_(1.0)
    return A.numpy()


@pytest.mark.parametrize("breaks", [[], [5], [2, 4]])
def test_levels_from_affinity_and_threshold_including_one_or_two_levels(breaks):
    m = build(affinity=banded_affinity(6, breaks), threshold=0.9).train()
    assert m.levels == [0] + breaks and m.level_source == "affinity"
    logits, losses = m(torch.randn(2, 3, 32, 32), return_losses=True)
    (logits.sum() + losses["pml"]).backward()
    assert all(p.grad is not None for p in m.sip_prompts)


def test_threshold_at_least_one_gives_every_block_a_level_without_affinity():
    m = build(threshold=1.0)
    assert m.levels == list(range(6)) and m.level_source == "threshold"


def test_explicit_levels_take_priority_over_affinity():
    m = build(levels=[0, 3], affinity=banded_affinity(6, [2, 4]), threshold=0.9)
    assert m.levels == [0, 3]


def test_levels_and_bank_from_training_images():
    from shiplib.hierarchy import attribute_prototypes, extract_block_features, inter_layer_affinity, semantic_levels

    vit = tiny_vit()
    images = torch.randn(12, 3, 32, 32)
    loader = [(images[:8], torch.zeros(8)), (images[8:], torch.zeros(4))]
    feats = extract_block_features(vit, images, progress=False)
    expected_levels = semantic_levels(inter_layer_affinity(feats), 0.97)
    expected_bank = attribute_prototypes(feats[-1], k=6, seed=42)
    m = shiplib.build_model("ship", backbone=vit, num_classes=C, pretrained=False, data=loader, threshold=0.97,
                            num_prototypes=6, prompt_length=K)
    assert m.level_source == "affinity" and m.levels == expected_levels  # the affinity from the data step
    assert torch.allclose(m.prototype_bank, torch.from_numpy(expected_bank), atol=1e-5)
    # explicit levels + data: only the bank comes from the images
    m2 = shiplib.build_model("ship", backbone=vit, num_classes=C, pretrained=False, data=images, levels=[0, 3],
                             num_prototypes=6, prompt_length=K)
    assert m2.levels == [0, 3] and torch.allclose(m2.prototype_bank, m.prototype_bank, atol=1e-5)
    # the random-bank ablation: the same shape and scale, other vectors, from data or from a given bank
    m3 = shiplib.build_model("ship", backbone=vit, num_classes=C, pretrained=False, data=images, levels=[0, 3],
                             num_prototypes=6, prompt_length=K, prototype_bank="random")
    assert m3.prototype_bank.shape == m.prototype_bank.shape
    assert not torch.allclose(m3.prototype_bank, m.prototype_bank, atol=1e-3)
    m4 = build(vit, levels=[0, 3], prototypes=m.prototype_bank, prototype_bank="random")
    assert torch.equal(m4.prototype_bank, m3.prototype_bank)


# ---------- bad inputs ----------
@pytest.mark.parametrize("levels, match", [([1, 2], "start with block 0"), ([0, 2, 2], "strictly increasing"),
                                           ([0, 6], "has 6 blocks"), ([], "start with block 0"),
                                           ("0,2", "list of level-start"), ([0, 1.5], "hold ints")])
def test_bad_levels_fail_clearly(levels, match):
    with pytest.raises(ValueError, match=match):
        build(levels=levels)


def test_missing_sources_and_bad_banks_fail_clearly():
    vit = tiny_vit()
    with pytest.raises(ValueError, match="levels=.*affinity=.*data="):
        shiplib.build_model("ship", backbone=vit, num_classes=C, prototypes=bank_for(vit))
    with pytest.raises(ValueError, match="need a prototype bank.*prototypes=.*data="):
        shiplib.build_model("ship", backbone=vit, num_classes=C, levels=[0, 2, 4])
    with pytest.raises(ValueError, match="feature dim 16 but the backbone width is 32"):
        build(vit, levels=[0, 2, 4], prototypes=torch.randn(20, 16))
    with pytest.raises(ValueError, match="must be a \\(k prototypes, D dims\\) matrix"):
        build(vit, levels=[0, 2, 4], prototypes=torch.randn(32))
    with pytest.raises(ValueError, match="without threshold"):
        build(vit, affinity=banded_affinity(6, [2]))
    with pytest.raises(ValueError, match="backbone has 6 blocks"):
        build(vit, affinity=banded_affinity(4, [2]), threshold=0.9)
    with pytest.raises(ValueError, match="need a threshold"):
        shiplib.build_model("ship", backbone=vit, num_classes=C, data=torch.randn(4, 3, 32, 32))


def test_bad_options_fail_clearly():
    with pytest.raises(TypeError, match="no option.*'promt_length'.*Valid options"):
        build(levels=[0], promt_length=3)
    with pytest.raises(ValueError, match="prompt_queries must be one of"):
        build(levels=[0], prompt_queries="first")
    with pytest.raises(ValueError, match="prompt_length must be a positive int"):
        build(levels=[0], prompt_length=0)
    with pytest.raises(ValueError, match="da_scale must be a number in \\[0, 1\\]"):
        build(levels=[0], da_scale=1.5)
    with pytest.raises(ValueError, match="on/off switch"):
        build(levels=[0], sip="yes")
    with pytest.raises(ValueError, match="prototype_bank must be one of"):
        build(levels=[0], prototype_bank="uniform")
    with pytest.raises(ValueError, match="no class token"):
        build(tiny_vit(class_token=False, global_pool="avg"), levels=[0])
    m = build(levels=[0, 2], top_k=30).train()
    with pytest.raises(ValueError, match="top 30 of 17 image tokens"):
        m(torch.randn(1, 3, 32, 32), return_losses=True)


def test_registered_and_data_is_accepted():
    assert "ship" in shiplib.list_methods() and shiplib.methods.get_method("ship") is SHIP
    assert shiplib.methods.takes_data("ship")
    opts = shiplib.methods.method_options("ship")
    assert opts["prompt_length"] == 50 and opts["da_scale"] == 0.1 and opts["prompt_queries"] == "last"


def test_pml_function_pulls_prompts_and_image_tokens_and_is_zero_without_prompts():
    from shiplib.losses import prompt_matching_loss

    prompts = torch.randn(2, 3, 8, requires_grad=True)
    targets = torch.randn(2, 4, 8, requires_grad=True)
    loss = prompt_matching_loss(prompts, targets)
    cos = F.cosine_similarity(prompts[:, :, None], targets[:, None], dim=-1)
    assert torch.allclose(loss, (1 - cos).min(-1).values.mean())
    loss.backward()
    assert prompts.grad.abs().sum() > 0 and targets.grad.abs().sum() > 0  # no stop-gradient
    assert prompt_matching_loss(torch.randn(2, 0, 8), targets).item() == 0.0
    assert prompt_matching_loss(targets[:, :1], targets).item() == pytest.approx(0.0, abs=1e-6)


# ---------- the block plan ----------
def test_block_plan_of_the_official_cifar100_levels():
    from shiplib.methods.ship import ShipConfig
    from shiplib.methods.ship_plan import BlockPlan

    plan = BlockPlan.build(12, [0, 2, 4, 6, 8, 11], [8, 11], ShipConfig(sip=True, ssp=True, da=True,
                                                                         prompt_queries="last"))
    s = plan.steps
    assert [st.sip_level for st in s] == [0, None, 1, None, 2, None, 3, None, 4, None, None, 5]
    assert [st.ap_row for st in s if st.ap_row is not None] == [0, 1] and s[8].ap_row == 0 and s[11].ap_row == 1
    assert s[0].prompts == ("sip", "ssp") and s[0].inserted == ("sip", "ssp") and s[0].carried == ()
    assert s[9].prompts == ("sip", "ap", "ssp") and s[9].carried == ("sip", "ap") and s[9].inserted == ("ssp",)
    assert s[8].hands_on == ("sip", "ap") and s[10].hands_on == () and s[11].hands_on == ()
    assert [st.index for st in s if st.cls_row_for_next] == [7, 10]  # the blocks before the AP starts
    assert [st.prompts_query for st in s] == [False] * 11 + [True] and all(st.attention == "decoupled" for st in s)
    rows = plan.rows_read(s[11], head_rows=1, pml=True)
    assert rows.image == 1 and rows.prompts == ("sip", "ap", "ssp") and rows.targets
    assert plan.rows_read(s[11], head_rows=1, pml=False).image == 1 and not plan.rows_read(s[11], 1, False).targets
    assert plan.rows_read(s[9], head_rows=1, pml=True, skip=("sip", "ssp")).prompts == ("ap",)


def test_block_plan_follows_the_switches():
    from shiplib.methods.ship import ShipConfig
    from shiplib.methods.ship_plan import BlockPlan

    joint = BlockPlan.build(4, [0, 1, 3], [1, 3], ShipConfig(sip=False, ssp=False, da=False, prompt_queries="last"))
    assert [st.prompts for st in joint.steps] == [(), ("ap",), ("ap",), ("ap",)]
    assert all(st.prompts_query and st.attention == "joint" for st in joint.steps)
    none = BlockPlan.build(3, [], [], ShipConfig(sip=False, ssp=False, da=True, prompt_queries="all"))
    assert all(st.prompts == () and st.sip_level is None for st in none.steps)
    m = build(levels=[0, 2, 4])
    assert m.plan.levels == (0, 2, 4) and m.plan.ap_starts == (2, 4) and len(m.plan.steps) == m.depth
