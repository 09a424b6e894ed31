"""Every registered method: forward contract, training lowers the loss, frozen weights stay put, sane counts."""
import copy
import re

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import DataLoader, TensorDataset

import shiplib
from shiplib.methods import get_method, takes_data

METHODS = shiplib.list_methods()
# Small prompt lengths keep the tiny models tiny; methods not listed run with their defaults.
TINY_OPTIONS = {"vpt_shallow": dict(num_prompts=4), "vpt_deep": dict(num_prompts=4), "spt": dict(num_prompts=4),
                "sep": dict(num_prompts=4), "ship": dict(prompt_length=4, threshold=0.95, num_prototypes=8)}
# ViT-B/16 runs at the defaults, plus what a 2-image "dataset" cannot provide (SHIP: levels and a bank).
VIT_B_OPTIONS = {"ship": dict(threshold=1.0, prototypes=torch.randn(200, 768))}
NUM_CLASSES = 3


def tiny_vit(**kw):
    cfg = dict(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2, num_classes=0)
    cfg.update(kw)
    return VisionTransformer(**cfg)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 32, 32, generator=g), torch.arange(8) % NUM_CLASSES


def build(method, backbone, data, **opts):
    kw = dict(data=data) if takes_data(method) else {}
    return shiplib.build_model(method, backbone=backbone, num_classes=NUM_CLASSES, pretrained=False,
                               **kw, **{**TINY_OPTIONS.get(method, {}), **opts})


def loader_of(x, y):
    return DataLoader(TensorDataset(x, y), batch_size=4)


def test_the_four_baselines_are_registered():
    assert {"vpt_shallow", "vpt_deep", "spt", "sep", "linear", "full"} <= set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_forward_contract_and_parameter_counts(method, batch):
    x, y = batch
    torch.manual_seed(0)
    m = build(method, tiny_vit(), loader_of(x, y)).eval()
    logits, losses = m(x, return_losses=True)
    assert logits.shape == (8, NUM_CLASSES) and logits.dtype == torch.float32
    assert isinstance(losses, dict)
    for name, v in losses.items():
        assert isinstance(v, torch.Tensor) and v.ndim == 0 and torch.isfinite(v), name
    assert torch.allclose(m(x), logits)

    c = shiplib.count_parameters(m)
    assert c["total"] == sum(p.numel() for p in m.parameters())
    assert c["trainable"] + c["frozen"] == c["total"]
    assert c["head"] == 32 * NUM_CLASSES + NUM_CLASSES
    assert c["trainable_without_head"] + c["head"] == c["trainable"]
    backbone = [p for n, p in m.vit.named_parameters() if not n.startswith("head.")]
    if method == "full":
        assert c["frozen"] == 0
    else:
        assert not any(p.requires_grad for p in backbone), "backbone weights must be frozen"
    if method not in ("full", "linear"):
        assert 0 < c["trainable_without_head"] < sum(p.numel() for p in backbone)


@pytest.mark.parametrize("method", METHODS)
def test_training_lowers_the_loss_and_leaves_frozen_weights_untouched(method, batch):
    x, y = batch
    torch.manual_seed(0)
    m = build(method, tiny_vit(), loader_of(x, y))
    frozen = {n: p.detach().clone() for n, p in m.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}

    def eval_loss():
        m.eval()
        with torch.no_grad():
            return F.cross_entropy(m(x), y).item()

    before = eval_loss()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    m.train()
    for _ in range(30):
        logits, aux = m(x, return_losses=True)
        loss = F.cross_entropy(logits, y) + sum(aux.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.7 * before, f"{method}: eval loss {before:.3f} -> {after:.3f}"
    for n, p in m.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"frozen {n} changed"
    changed = {n for n, p in m.named_parameters() if n in trainable and not torch.equal(p, trainable[n])}
    assert {"vit.head.weight", "vit.head.bias"} <= changed
    if method != "linear":
        assert changed - {"vit.head.weight", "vit.head.bias"}, f"{method}: only the head trained"


@pytest.mark.parametrize("method", METHODS)
def test_unknown_options_fail_with_the_valid_names(method, batch):
    with pytest.raises(TypeError, match="Valid options: .*drop_path_rate"):
        build(method, tiny_vit(), loader_of(*batch), no_such_option=1)


# Invalid values of the options every method shares, and of each method's own options.
SHARED_BAD = [dict(drop_path_rate=2.0), dict(head_init_std=-1.0)]
OWN_BAD = {"vpt_shallow": dict(num_prompts=0), "vpt_deep": dict(prompt_dropout=1.5), "spt": dict(init="knn"),
           "sep": dict(fusion_heads=0), "ship": dict(da_scale=7)}
BAD = [(m, o) for m in METHODS for o in SHARED_BAD + ([OWN_BAD[m]] if m in OWN_BAD else [])]


@pytest.mark.parametrize("method, options", BAD, ids=[f"{m}-{next(iter(o))}" for m, o in BAD])
def test_a_config_made_directly_is_refused_as_from_options_refuses_it(method, options):
    """Validation runs when a config is made, so `Method(vit, n, Config(...))` cannot skip it."""
    cls = get_method(method)
    with pytest.raises(ValueError) as via_options:
        cls.config_class.from_options(method, options)
    with pytest.raises(type(via_options.value), match=re.escape(str(via_options.value))):
        cls(tiny_vit(), NUM_CLASSES, cls.config_class(**options))


@pytest.fixture(scope="module")
def vit_b16():
    import timm

    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)


@pytest.mark.parametrize("method", METHODS)
def test_one_forward_on_a_vit_b16_shape(method, vit_b16):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    kw = dict(data=[x]) if takes_data(method) else {}
    m = shiplib.build_model(method, backbone=copy.deepcopy(vit_b16), num_classes=10, pretrained=False, **kw,
                            **VIT_B_OPTIONS.get(method, {})).eval()
    with torch.no_grad():
        assert m(x[:1]).shape == (1, 10)
    c = shiplib.count_parameters(m)
    expected = {"vpt_shallow": 50 * 768, "vpt_deep": 12 * 50 * 768, "spt": 12 * 50 * 768, "linear": 0}
    if method in expected:
        assert c["trainable_without_head"] == expected[method]
    if method == "vpt_deep":
        assert 0.062 < m.prompts.abs().max().item() <= 0.0625  # VPT's U(+-sqrt(6 / (3*16*16 + 768)))
