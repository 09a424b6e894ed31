"""AdamW groups: timm's no-decay rule over trainable parameters only."""
import pytest
import torch
import torch.nn as nn
from timm.optim import param_groups_weight_decay

from shiplib import build_model
from shiplib.engine.optim import ADAMW_BETAS, ADAMW_EPS, create_optimizer, weight_decay_groups


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.prompt = nn.Parameter(torch.zeros(1, 4, 8))  # 3-D, decayed unless listed
        self.pos = nn.Parameter(torch.zeros(1, 5, 8))  # listed in no_weight_decay
        self.scale = nn.Parameter(torch.ones(8))  # 1-D
        self.fc = nn.Linear(8, 3)  # weight decayed, bias not
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)

    def no_weight_decay(self):
        return {"pos"}


def _names(groups):
    return {g["group"]: set(g["names"]) for g in groups}


def test_groups_follow_timm_rule_and_skip_frozen():
    groups = weight_decay_groups(Toy(), 0.01)
    assert _names(groups) == {"no_decay": {"pos", "scale", "fc.bias"}, "decay": {"prompt", "fc.weight"}}
    assert {g["group"]: g["weight_decay"] for g in groups} == {"no_decay": 0.0, "decay": 0.01}


def test_same_partition_as_timm():
    model = Toy()
    ours = {g["weight_decay"]: {id(p) for p in g["params"]} for g in weight_decay_groups(model, 0.05)}
    theirs = {g["weight_decay"]: {id(p) for p in g["params"]}
              for g in param_groups_weight_decay(model, 0.05, no_weight_decay_list=model.no_weight_decay())}
    assert ours == theirs


def test_zero_weight_decay_single_group_of_trainables():
    groups = weight_decay_groups(Toy(), 0.0)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0
    assert set(groups[0]["names"]) == {"prompt", "pos", "scale", "fc.weight", "fc.bias"}


def test_adamw_settings_and_peft_model():
    model = build_model("linear", backbone="mini", num_classes=5, pretrained=False)
    opt = create_optimizer(model, lr=1e-3, weight_decay=1e-4)
    assert isinstance(opt, torch.optim.AdamW)
    g = opt.param_groups[0]
    assert g["betas"] == ADAMW_BETAS == (0.9, 0.999) and g["eps"] == ADAMW_EPS == 1e-8
    in_opt = {id(p) for group in opt.param_groups for p in group["params"]}
    assert in_opt == {id(p) for p in model.parameters() if p.requires_grad}  # only the head
    assert _names(opt.param_groups) == {"no_decay": {"vit.head.bias"}, "decay": {"vit.head.weight"}}


def test_no_trainable_parameters_fails():
    m = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        weight_decay_groups(m, 0.1)
    with pytest.raises(ValueError, match="weight_decay"):
        weight_decay_groups(Toy(), -1.0)
