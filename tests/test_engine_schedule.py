"""The official lr schedule (docs/ship_computation.md §1): per-epoch warm-up + cosine, timm's warmup_prefix=False."""
import math

import pytest
import torch
from timm.scheduler import CosineLRScheduler

from shiplib.engine.schedule import LRSchedule


def test_spec_formula_and_measured_values():
    s = LRSchedule(1e-3)  # official defaults: 100 epochs, 10 warm-up, 1e-6 -> cosine to 1e-5
    lrs = s.epoch_values()
    assert len(lrs) == 100
    # spec §1 formula
    for e, lr in enumerate(lrs):
        if e == 0:
            want = 1e-6
        elif e <= 10:
            want = 1e-6 + (e - 1) * (1e-3 - 1e-6) / 10
        else:
            want = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * (e - 1) / 100))
        assert lr == pytest.approx(want, rel=1e-12), e
    # spec §1 measured with lr=1e-3: epochs 0..12 = 1e-6, 1e-6, 1.01e-4, …, 9.0e-4, 9.76e-4, 9.71e-4; 99 = 1.1e-5
    assert lrs[0] == lrs[1] == pytest.approx(1e-6)
    assert lrs[2] == pytest.approx(1.01e-4, abs=5e-7)
    assert lrs[10] == pytest.approx(9.0e-4, abs=5e-7)
    assert lrs[11] == pytest.approx(9.76e-4, abs=5e-7)
    assert lrs[12] == pytest.approx(9.71e-4, abs=5e-7)
    assert lrs[99] == pytest.approx(1.1e-5, abs=5e-8)
    # warmup_prefix=False: the cosine starts below the base lr, so the base lr is never used
    assert max(lrs) < 1e-3


def test_matches_timm_scheduler_stepped_after_each_epoch():
    """Drive timm's CosineLRScheduler the way the official train.py does: step(epoch) after the epoch."""
    for base, epochs in ((1e-3, 100), (0.25, 100), (5e-2, 30)):
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=base)
        sched = CosineLRScheduler(opt, t_initial=epochs, lr_min=1e-5, warmup_lr_init=1e-6, warmup_t=10,
                                  warmup_prefix=False, cycle_limit=1)
        ours = LRSchedule(base, epochs=epochs)
        for epoch in range(epochs):
            assert opt.param_groups[0]["lr"] == pytest.approx(ours.lr_at(epoch), rel=1e-12, abs=0), (base, epoch)
            sched.step(epoch)


def test_step_mode_agrees_at_epoch_starts_and_moves_within():
    e, s = LRSchedule(1e-3, mode="epoch"), LRSchedule(1e-3, mode="step")
    for epoch in range(100):
        assert s.lr_at(epoch, 0, 15) == pytest.approx(e.lr_at(epoch))
    assert s.lr_at(0, 7, 15) == 1e-6  # epoch 0 stays at the warm-up start, like the official run
    assert e.lr_at(5, 0, 15) < s.lr_at(5, 7, 15) < e.lr_at(6, 0, 15)  # warm-up rises within the epoch
    assert e.lr_at(50, 3, 15) == e.lr_at(50, 14, 15)  # epoch mode is constant within an epoch


@pytest.mark.parametrize("kwargs", [dict(base_lr=0), dict(base_lr=float("nan")), dict(base_lr=1e-3, epochs=0),
                                    dict(base_lr=1e-3, mode="cosine"), dict(base_lr=1e-3, warmup_epochs=-1)])
def test_bad_arguments_fail(kwargs):
    with pytest.raises(ValueError):
        LRSchedule(**kwargs)
