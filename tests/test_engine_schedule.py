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


def test_scaled_mode_follows_the_official_shape_at_any_length():
    """A 10-epoch run in mode "scaled" spends the official fraction of its steps at the warm-up start (2 %), ramps
    over the next 10 % to the official values and ends on the official last value; the official schedule itself
    (mode "epoch", 100 epochs) spends the same 2 %."""
    official = LRSchedule(0.1, epochs=100, warmup_epochs=10)
    for epochs, warmup, spe in ((10, 1, 15), (20, 2, 12), (40, 4, 7), (100, 10, 1)):
        s = LRSchedule(0.1, epochs=epochs, warmup_epochs=warmup, mode="scaled")
        lrs = s.step_values(spe)
        at_start = sum(lr == 1e-6 for lr in lrs) / len(lrs)
        assert at_start <= 0.02 + 1e-9, (epochs, at_start)
        assert set(lrs) <= set(official.epoch_values())  # only values of the official curve
        assert lrs == sorted(lrs[: len(lrs) * 11 // 100]) + lrs[len(lrs) * 11 // 100:]  # rising through the warm-up
        assert lrs[-1] == official.epoch_values()[-1]
    assert sum(lr == 1e-6 for lr in official.epoch_values()) == 2
    assert LRSchedule(0.1, epochs=100, warmup_epochs=10, mode="scaled").step_values(1) == official.epoch_values()


def test_scaled_mode_never_jumps_like_the_compressed_epoch_mode():
    """The per-epoch schedule squeezed into 10 epochs jumps from 1e-6 to most of the lr in one step."""
    epoch = LRSchedule(0.3, epochs=10, warmup_epochs=2, mode="epoch").step_values(15)
    scaled = LRSchedule(0.3, epochs=10, warmup_epochs=1, mode="scaled").step_values(15)
    jump = lambda lrs: max(b - a for a, b in zip(lrs, lrs[1:]))  # noqa: E731
    assert jump(epoch) > 0.4 * 0.3
    assert jump(scaled) <= 0.1 * 0.3 + 1e-9  # one official warm-up step at most
