"""Optimizers, per-iteration LR schedules, no-decay parameter groups and freezing."""
import pytest
import torch
from torch import nn

from blazekit.engine.optim import (Cosine, MultiStepDecay, StepDecay, build_lr_scheduler, build_optimizer,
                                   freeze_parameters, frozen_norm_modules, param_groups)
from blazekit.registry import LR_SCHEDULERS, OPTIMIZERS, RegistryError


def small_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def test_param_groups_exclude_bn_and_bias_from_decay():
    net = small_net()
    groups = {g["name"]: g for g in param_groups(net, 5e-4)}
    decay = {id(p) for p in groups["decay"]["params"]}
    no_decay = {id(p) for p in groups["no_decay"]["params"]}
    assert decay == {id(net[0].weight), id(net[3].weight)}
    assert no_decay == {id(net[1].weight), id(net[1].bias), id(net[3].bias)}
    assert groups["decay"]["weight_decay"] == 5e-4 and groups["no_decay"]["weight_decay"] == 0.0
    everything = param_groups(net, 5e-4, no_decay_norm_bias=False)
    assert len(everything) == 1 and len(everything[0]["params"]) == 5


@pytest.mark.parametrize("name,cls", [("SGD", torch.optim.SGD), ("Adam", torch.optim.Adam),
                                      ("AdamW", torch.optim.AdamW), ("RMSprop", torch.optim.RMSprop)])
def test_build_optimizer_from_registry(name, cls):
    opt = build_optimizer(small_net(), {"type": name, "lr": "1e-3", "weight_decay": 0.01})
    assert isinstance(opt, cls)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert all(g["lr"] == 1e-3 for g in opt.param_groups)
    assert set(OPTIMIZERS.names()) >= {"SGD", "Adam", "AdamW", "RMSprop"}


def test_unknown_optimizer_lists_close_match():
    with pytest.raises(RegistryError, match="Did you mean 'AdamW'"):
        build_optimizer(small_net(), {"type": "AdamWW", "lr": 0.1})


def _lrs(sched, n):
    out = []
    for _ in range(n):
        out.append(sched.get_last_lr()[0])
        sched.optimizer.step()  # no gradients: changes nothing, but keeps torch's step order (no warning)
        sched.step()
    return out


def test_cosine_with_linear_warmup_values():
    opt = torch.optim.SGD(small_net().parameters(), lr=0.1)
    s = build_lr_scheduler(opt, {"type": "Cosine", "warmup_iters": 10, "warmup_ratio": 0.1, "min_lr_ratio": 0.0},
                           total_iters=110, iters_per_epoch=11)
    lrs = _lrs(s, 111)
    assert lrs[0] == pytest.approx(0.01)               # warmup_ratio * lr
    assert lrs[5] == pytest.approx(0.1 * (0.1 + 0.9 * 0.5))
    assert lrs[10] == pytest.approx(0.1)               # warmup done, cosine starts at the top
    assert lrs[60] == pytest.approx(0.05)              # half way through the cosine
    assert lrs[110] == pytest.approx(0.0, abs=1e-12)   # end
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_step_schedules_in_epochs_become_iterations():
    opt = torch.optim.SGD(small_net().parameters(), lr=1.0)
    s = MultiStepDecay(opt, total_iters=100, iters_per_epoch=10, milestones=[3, 7], gamma=0.1)
    lrs = _lrs(s, 100)
    assert lrs[29] == 1.0 and lrs[30] == pytest.approx(0.1) and lrs[70] == pytest.approx(0.01)
    opt = torch.optim.SGD(small_net().parameters(), lr=1.0)
    s = StepDecay(opt, total_iters=100, iters_per_epoch=10, step_epochs=4, gamma=0.5, warmup_epochs=1, warmup_ratio=0.0)
    lrs = _lrs(s, 100)
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5) and lrs[10] == 1.0
    assert lrs[40] == pytest.approx(0.5) and lrs[80] == pytest.approx(0.25)


def test_scheduler_state_roundtrip_restores_lr():
    opt = torch.optim.SGD(small_net().parameters(), lr=0.1)
    s = Cosine(opt, total_iters=50, warmup_iters=5)
    _lrs(s, 17)
    state = s.state_dict()
    opt2 = torch.optim.SGD(small_net().parameters(), lr=0.1)
    s2 = Cosine(opt2, total_iters=50, warmup_iters=5)
    s2.load_state_dict(state)
    assert s2.last_epoch == 17 and s2.get_last_lr() == s.get_last_lr()
    assert [g["lr"] for g in opt2.param_groups] == s.get_last_lr()
    with pytest.raises(ValueError, match="StepDecay"):
        StepDecay(opt2, total_iters=50, step_iters=5).load_state_dict(state)
    assert {"Constant", "StepDecay", "MultiStepDecay", "Cosine"} <= set(LR_SCHEDULERS.names())
    assert isinstance(s, torch.optim.lr_scheduler.LambdaLR)
    torch.save(state, "/dev/null")  # plain ints/floats: loadable with weights_only


@pytest.mark.parametrize("old,new", [("ConstantLR", "Constant"), ("StepLR", "StepDecay"),
                                     ("MultiStepLR", "MultiStepDecay"), ("CosineLR", "Cosine")])
def test_old_scheduler_names_are_refused_with_the_new_one(old, new):
    from blazekit.config import ConfigError

    opt = torch.optim.SGD(small_net().parameters(), lr=0.1)
    with pytest.raises(ConfigError, match=rf"{old}' was renamed: use type: {new}\b"):
        build_lr_scheduler(opt, {"type": old}, total_iters=10, iters_per_epoch=1)


def test_default_schedule_is_constant_after_warmup():
    opt = torch.optim.SGD(small_net().parameters(), lr=0.1)
    s = build_lr_scheduler(opt, {"warmup_iters": 4, "warmup_ratio": 0.0}, total_iters=10, iters_per_epoch=2)
    assert type(s).__name__ == "Constant"
    assert _lrs(s, 8) == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1])


def test_freeze_by_pattern_and_frozen_norms():
    net = small_net()
    frozen = freeze_parameters(net, ["0", "1.*"])
    assert frozen == ["0.weight", "1.weight", "1.bias"]
    assert not net[0].weight.requires_grad and net[3].weight.requires_grad
    assert frozen_norm_modules(net) == [net[1]]
    groups = param_groups(net, 1e-4)
    assert sum(len(g["params"]) for g in groups) == 2
    with pytest.raises(ValueError, match="matches no parameter"):
        freeze_parameters(net, ["backbone"])


def test_lr_mult_by_name_scales_backbone_lr_and_survives_scheduler():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    opt = build_optimizer(model, {"type": "AdamW", "lr": 1e-3, "weight_decay": 0.1, "lr_mult": {"0": 0.1, "1.*": 0.5}})
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({"decay_lr_x0.1": 1e-4, "decay": 1e-3, "no_decay_lr_x0.1": 1e-4,
                                 "no_decay_lr_x0.5": 5e-4, "no_decay": 1e-3})
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)  # the trainer logs group 0: keep the base LR there
    by_param = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert by_param[id(model[0].weight)] == pytest.approx(1e-4) and by_param[id(model[2].weight)] == pytest.approx(1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == 6
    sched = Cosine(opt, total_iters=10, min_lr_ratio=0.5)
    for _ in range(10):
        opt.step()  # no gradients: only the step order torch checks
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([g["initial_lr"] * 0.5 for g in opt.param_groups])
    with pytest.raises(ValueError, match="lr_mult: pattern 'head' matches no trainable parameter"):
        build_optimizer(model, {"type": "SGD", "lr": 0.1, "lr_mult": {"head": 0.1}})
