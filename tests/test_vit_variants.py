"""Every method on timm `VisionTransformer` variants, built by name with random weights at small sizes.

Covered: class token or global pooling (avg, attention pooling), register tokens, DeiT's distillation token,
dynamic image size, pre-norm (CLIP), layer scale, other patch sizes, widths and depths. Each method trains one step;
SHIP's fast path equals its readable path (logits, PML, gradients). Where a method cannot apply, it says so in one
line before any work.
"""
import copy

import pytest
import timm
import torch
import torch.nn.functional as F

import shiplib
from shiplib.errors import ShiplibError
from shiplib.methods import get_method
from shiplib.methods.registry import takes_data

SMALL = dict(depth=3, embed_dim=48, num_heads=2)  # few, narrow blocks: fast on CPU
# timm name -> timm kwargs (on top of SMALL); the image side (`img_size`) gives at least 10 image tokens, the
# default number of tokens SHIP's AP and PML select
VARIANTS = {
    "vit_tiny_patch16_224": dict(img_size=64),  # class token
    "deit_tiny_distilled_patch16_224": dict(img_size=64),  # class + distillation token, two-token head
    "vit_base_patch16_clip_224": dict(img_size=64),  # pre-norm (CLIP)
    "vit_small_patch14_reg4_dinov2": dict(img_size=56),  # class + register tokens, layer scale
    "vit_medium_patch16_reg4_gap_256": dict(img_size=64),  # register tokens, no class token, average pooling
    "vit_base_patch16_gap_224": dict(img_size=64),  # no prefix token at all, average pooling
    "vit_base_patch16_siglip_224": dict(img_size=64),  # attention pooling ('map'), no class token
    "vit_small_patch16_224": dict(img_size=64, dynamic_img_size=True),  # fed larger images than built for
    "vit_base_patch32_224": dict(img_size=128, depth=5, embed_dim=64, num_heads=4),  # other patch, width, depth
}
POOLED = {"vit_tiny_patch16_224": "avg"}  # also run with this global pooling: a class token the head does not read
CASES = [(name, None) for name in VARIANTS] + list(POOLED.items())
IDS = [name if pool is None else f"{name}-{pool}" for name, pool in CASES]
METHODS = shiplib.list_methods()
CLASSES = 3
TOL = 1e-5


def make_vit(name: str, pool: str | None = None):
    kw = {**SMALL, **VARIANTS[name], **({} if pool is None else dict(global_pool=pool))}
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=0, **kw)


def image_batch(vit, name: str, batch: int = 4) -> torch.Tensor:
    h, w = vit.patch_embed.img_size
    if VARIANTS[name].get("dynamic_img_size"):  # one more row and column of patches than the backbone was built for
        h, w = h + vit.patch_embed.patch_size[0], w + vit.patch_embed.patch_size[1]
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(1))


def options_for(method: str, vit, x: torch.Tensor, **extra) -> dict:
    cls = get_method(method)
    opts = {**cls.bench_options(vit), **extra}
    if method == "ship":
        opts["prompt_length"] = 4
    if method in ("vpt_shallow", "vpt_deep", "spt", "sep"):
        opts["num_prompts"] = 4
    if takes_data(method):
        opts["data"] = [x]
    return opts


def build(method: str, vit, x: torch.Tensor, **extra):
    return shiplib.build_model(method, backbone=copy.deepcopy(vit), num_classes=CLASSES, pretrained=False,
                               **options_for(method, vit, x, **extra))


def has_class_token(vit) -> bool:
    return getattr(vit, "cls_token", None) is not None


def total_loss(m, logits, losses, y):
    weights = getattr(m, "loss_weights", {})
    return F.cross_entropy(logits, y) + sum((weights[k] * v for k, v in losses.items()), torch.zeros(()))


def test_variants_cover_the_listed_kinds():
    vits = {i: make_vit(name, pool) for i, (name, pool) in zip(IDS, CASES)}
    assert len(VARIANTS) >= 8
    assert any(getattr(v, "dist_token", None) is not None for v in vits.values())
    assert any(has_class_token(v) and v.num_prefix_tokens > 1 and getattr(v, "dist_token", None) is None
               for v in vits.values())  # register tokens beside the class token
    assert any(v.dynamic_img_size for v in vits.values())
    assert any(not isinstance(v.norm_pre, torch.nn.Identity) for v in vits.values())
    assert {v.global_pool for v in vits.values()} >= {"token", "avg", "map"}
    assert len({(v.embed_dim, len(v.blocks)) for v in vits.values()}) > 1


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name, pool", CASES, ids=IDS)
def test_every_method_trains_one_step_on_every_variant(name, pool, method):
    vit = make_vit(name, pool)
    x = image_batch(vit, name)
    y = torch.arange(x.shape[0]) % CLASSES
    extra = {}
    if method == "ship" and not has_class_token(vit):
        with pytest.raises(ShiplibError, match="no class token") as refused:  # before any work
            get_method("ship").check_backbone(get_method("ship").bench_options(vit), vit)
        assert "\n" not in str(refused.value)
        with pytest.raises(ShiplibError, match="no class token"):
            build(method, vit, x)
        extra = dict(ap=False, pml=False)  # what the message offers
    torch.manual_seed(0)
    m = build(method, vit, x, **extra).train()
    before = {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    logits, losses = m(x, return_losses=True)
    assert logits.shape == (x.shape[0], CLASSES)
    total_loss(m, logits, losses, y).backward()
    opt.step()
    changed = {n for n, p in m.named_parameters() if n in before and not torch.equal(p, before[n])}
    assert {"vit.head.weight", "vit.head.bias"} <= changed
    if method != "linear":
        assert changed - {"vit.head.weight", "vit.head.bias"}, "only the head trained"
    assert torch.isfinite(m.eval()(x)).all()


def _run(m, impl, x, y):
    m.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    logits, losses = m(x, return_losses=True, implementation=impl)
    total_loss(m, logits, losses, y).backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    return logits.detach(), {k: v.detach() for k, v in losses.items()}, grads


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name, pool", CASES, ids=IDS)
def test_ship_fast_path_equals_its_reference_on_every_variant(name, pool, mode):
    vit = make_vit(name, pool)
    x = image_batch(vit, name, batch=3)
    y = torch.arange(x.shape[0]) % CLASSES
    extra = {} if has_class_token(vit) else dict(ap=False, pml=False)
    m = build("ship", vit, x, drop_path_rate=0.1, **extra).train(mode == "train")
    with torch.no_grad():  # trained-looking prompts
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.5 * torch.randn_like(p))
    ref, fast = _run(m, "reference", x, y), _run(m, "fast", x, y)
    assert (fast[0] - ref[0]).abs().max() < TOL
    assert fast[1].keys() == ref[1].keys() and all((fast[1][k] - ref[1][k]).abs() < TOL for k in ref[1])
    assert fast[2].keys() == ref[2].keys() and len(ref[2]) > 2
    for n in ref[2]:
        assert (fast[2][n] - ref[2][n]).abs().max() < TOL, n
