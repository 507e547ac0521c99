"""Model EMA: exact blend values, ramp-up, integer buffers and state round trip."""
import math

import pytest
import torch
from torch import nn

from blazekit.engine.ema import ModelEMA


def test_ema_blends_weights_and_copies_int_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.9, tau=0)
    old = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model[1].num_batches_tracked += 5
    ema.update(model)
    assert torch.allclose(ema.module[0].weight, 0.9 * old + 0.1 * (old + 1.0))
    assert int(ema.module[1].num_batches_tracked) == 5
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())


def test_ema_decay_ramps_up():
    ema = ModelEMA(nn.Linear(2, 2), decay=0.999, tau=100)
    assert ema.current_decay() == 0.0
    ema.updates = 100
    assert ema.current_decay() == pytest.approx(0.999 * (1 - math.exp(-1)))
    with pytest.raises(ValueError, match="train.ema.decay"):
        ModelEMA(nn.Linear(2, 2), decay=1.5)


def test_ema_state_roundtrip():
    model = nn.Linear(2, 2)
    a = ModelEMA(model, decay=0.5, tau=0)
    with torch.no_grad():
        model.weight.mul_(3)
    a.update(model)
    b = ModelEMA(nn.Linear(2, 2), decay=0.5, tau=0)
    b.load_state_dict(a.state_dict())
    assert b.updates == 1 and torch.equal(b.module.weight, a.module.weight)


def test_ema_keeps_tracking_over_steps_and_in_place_loads():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEMA(model, decay=0.5, tau=0)
    expected = torch.zeros(2, 2)
    for value in (4.0, 8.0):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
        expected = 0.5 * expected + 0.5 * value
    model.load_state_dict({"weight": torch.full((2, 2), 16.0)})  # copies in place: still the same tensors
    ema.update(model)
    expected = 0.5 * expected + 8.0
    assert torch.equal(ema.module.weight, expected)  # 0 -> 2 -> 5 -> 10.5
    other = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        other.weight.fill_(0.0)
    ema.update(other)  # another model: its own tensors are picked up
    assert torch.equal(ema.module.weight, expected * 0.5)
