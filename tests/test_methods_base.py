"""The method base, the registry, `linear`, `full` and parameter accounting."""
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

import shiplib


def tiny_vit(**kw):
    cfg = dict(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2, num_classes=0)
    cfg.update(kw)
    return VisionTransformer(**cfg)


def test_registry_lists_core_methods():
    assert {"linear", "full"} <= set(shiplib.list_methods())


def test_unknown_method_and_option_fail_with_the_valid_names():
    with pytest.raises(KeyError, match="Valid methods: .*linear"):
        shiplib.build_model("lineer", backbone=tiny_vit())
    with pytest.raises(TypeError, match="Valid options: drop_path_rate"):
        shiplib.build_model("linear", backbone=tiny_vit(), lr=0.1)


def test_linear_probe_trains_only_the_head_and_keeps_backbone_eval():
    m = shiplib.build_model("linear", backbone=tiny_vit(), num_classes=7)
    counts = shiplib.count_parameters(m)
    assert counts["trainable"] == counts["head"] == 32 * 7 + 7
    assert counts["trainable_without_head"] == 0
    assert counts["total"] == counts["trainable"] + counts["frozen"]
    m.train()
    assert not m.vit.blocks[0].training and m.vit.head.training
    x = torch.randn(2, 3, 32, 32)
    logits, losses = m(x, return_losses=True)
    assert logits.shape == (2, 7) and losses == {}
    # frozen features: identical outputs in train mode
    assert torch.equal(m(x), m(x))


def test_head_init_is_truncated_normal_with_zero_bias():
    m = shiplib.build_model("linear", backbone=tiny_vit(embed_dim=64), num_classes=500)
    assert torch.all(m.vit.head.bias == 0)
    assert 0.015 < m.vit.head.weight.std().item() < 0.025


def test_full_finetune_trains_everything_and_loss_falls():
    torch.manual_seed(0)
    m = shiplib.build_model("full", backbone=tiny_vit(), num_classes=3, drop_path_rate=0.0)
    c = shiplib.count_parameters(m)
    assert c["frozen"] == 0 and c["trainable"] == c["total"]
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 3
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_drop_path_rate_is_applied_as_linspace():
    m = shiplib.build_model("full", backbone=tiny_vit(depth=5), num_classes=2, drop_path_rate=0.2)
    probs = [getattr(b.drop_path1, "drop_prob", 0.0) for b in m.vit.blocks]
    assert probs == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="drop_path_rate"):
        shiplib.build_model("full", backbone=tiny_vit(), drop_path_rate=1.5)
    with pytest.raises(ValueError, match="num_classes"):
        shiplib.build_model("linear", backbone=tiny_vit(), num_classes=0)
    with pytest.raises(TypeError, match="does not use `data`"):
        shiplib.build_model("linear", backbone=tiny_vit(), data=[1])


def test_method_hooks_default_to_nothing_needed():
    from shiplib.methods import get_method, takes_data

    for name in ("linear", "full", "vpt_deep"):
        cls = get_method(name)
        assert cls.data_key(cls.config_class()) is None and not takes_data(name)
        assert cls.bench_options(tiny_vit()) == {}
    spt = get_method("spt")
    assert takes_data("spt") and spt.data_key(spt.config_class()) is not None
    assert spt.bench_options(tiny_vit()) == {"init": "random"}


#: The options SHIP's and SPT's data steps read or fill: theirs alone, so the base class and the engine never say them.
DATA_STEP_OPTIONS = ("threshold", "feature_pool", "num_prototypes", "prototype_seed", "affinity", "prototypes",
                     "levels", "init_prompts", "max_tokens")


def test_no_data_step_option_is_named_by_the_base_class_or_the_engine():
    import inspect
    import re

    from shiplib.engine import prepare, run
    from shiplib.methods import PeftModel, get_method

    assert set(DATA_STEP_OPTIONS) <= {*get_method("ship").config_class.option_names(),
                                      *get_method("spt").config_class.option_names()}
    for module in (PeftModel, prepare, run):
        source = inspect.getsource(module)
        assert not [o for o in DATA_STEP_OPTIONS if re.search(rf"\b{o}\b", source)], module


@pytest.mark.parametrize("method, options", [("ship", dict(threshold=0.9, num_prototypes=4, prompt_length=2)),
                                             ("ship", dict(levels=[0, 2], num_prototypes=4, prompt_length=2)),
                                             ("spt", dict(num_prompts=2))])
def test_the_data_step_gives_arrays_the_constructor_takes_as_options(method, options):
    import copy

    import numpy as np

    from shiplib.methods import get_method

    cls, vit = get_method(method), tiny_vit()
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    config = cls.config_class.from_options(method, options)
    arrays = cls.data_inputs(vit, images, config)
    assert list(arrays) == cls.data_key(config)["inputs"] and set(arrays) <= set(cls.config_class.option_names())
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    assert cls.data_key(cls.config_class.from_options(method, {**options, **arrays})) is None  # nothing left
    built = []
    for kw in (dict(data=images), arrays):  # from images, or from the arrays alone: the same model
        torch.manual_seed(0)
        built.append(shiplib.build_model(method, backbone=copy.deepcopy(vit), num_classes=2, **options, **kw))
    a, b = (m.state_dict() for m in built)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("options, needs", [
    ({}, ["affinity", "prototypes"]),
    ({"levels": [0, 2]}, ["prototypes"]),
    ({"affinity": "a.npy", "threshold": 0.9}, ["prototypes"]),
    ({"threshold": 1.0, "prototypes": "p.npy"}, None),
    ({"threshold": 0.9, "prototypes": "p.npy"}, ["affinity"]),  # a threshold < 1 alone: levels from the images
    ({"ap": False}, ["affinity"]),
    ({"ap": False, "sip": False}, None),
    ({"levels": [0, 2], "prototypes": "p.npy"}, None),
])
def test_ship_says_what_it_would_take_from_the_training_images(options, needs):
    from shiplib.methods import get_method

    ship = get_method("ship")
    full_options = {**shiplib.method_options("ship"), **options}  # as the engine passes them: every default filled
    for opts in (options, full_options):
        key = ship.data_key(ship.config_class.from_options("ship", opts))
        assert (key and key["inputs"]) == needs


def test_option_names_are_checked_in_one_place():
    from shiplib.methods import check_option_names

    check_option_names("ship", ["levels", "prompt_length"])
    with pytest.raises(TypeError, match="no option.*'promt_length'.*Valid options: drop_path_rate"):
        check_option_names("ship", ["promt_length"])
    with pytest.raises(ValueError, match="'lr'"):
        check_option_names("linear", ["lr"], error=ValueError)
    with pytest.raises(TypeError, match="'promt_length'"):
        shiplib.build_model("ship", backbone=tiny_vit(), promt_length=3)


def test_configs_are_frozen_after_validation():
    import dataclasses

    m = shiplib.build_model("linear", backbone=tiny_vit(), num_classes=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.config.drop_path_rate = 0.5
