"""Optimizers and per-iteration learning-rate schedules, both built from config through registries.

Schedules are per *iteration* (not per epoch) so warmup is smooth, resume lands on the exact learning
rate, and a schedule written in epochs means the same thing at any batch size. Each schedule is a pure
function ``iteration -> lr factor`` run by torch's ``LambdaLR``; its only state is the iteration counter,
so checkpoints stay tiny and exact. Names (``Constant``, ``StepDecay``, ``MultiStepDecay``, ``Cosine``) differ
from torch's classes on purpose: theirs count epochs and take other arguments.
"""
from __future__ import annotations

import fnmatch
import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..config import ConfigError
from ..registry import LR_SCHEDULERS, OPTIMIZERS

for _name in ("SGD", "Adam", "AdamW", "RMSprop"):
    OPTIMIZERS.add(_name, getattr(torch.optim, _name))

#: modules whose weights are scales/shifts of normalised activations: decaying them only hurts
NORM_TYPES: Tuple[type, ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def freeze_parameters(model: nn.Module, patterns: Sequence[str]) -> List[str]:
    """Set ``requires_grad=False`` on parameters whose name matches any fnmatch pattern.

    A bare prefix such as ``backbone`` also matches ``backbone.*``. Returns the frozen names;
    a pattern that matches nothing is an error (a typo would otherwise silently train everything).
    """
    frozen: List[str] = []
    names = [n for n, _ in model.named_parameters()]
    for pat in patterns or []:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pat) or n.startswith(pat.rstrip(".") + ".")]
        if not hits:
            tops = sorted({n.split(".")[0] for n in names})
            raise ConfigError(f"train.freeze: pattern {pat!r} matches no parameter. "
                             f"Parameter names start with: {', '.join(tops)} (e.g. {names[0]!r})")
        frozen.extend(h for h in hits if h not in frozen)
    params = dict(model.named_parameters())
    for n in frozen:
        params[n].requires_grad_(False)
    return frozen


def frozen_norm_modules(model: nn.Module) -> List[nn.Module]:
    """Norm layers whose parameters are all frozen: they must also keep their running statistics."""
    out = []
    for m in model.modules():
        if isinstance(m, NORM_TYPES):
            ps = list(m.parameters(recurse=False))
            if ps and not any(p.requires_grad for p in ps):
                out.append(m)
    return out


def param_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool = True) -> List[Dict[str, Any]]:
    """Trainable parameters split into a decayed group and one without decay (norm weights, biases).

    Weight decay on BatchNorm scales and on biases shrinks them towards zero without regularising
    anything useful (they do not set the function's capacity), which is why every modern detection
    recipe excludes them.
    """
    decay, no_decay = [], []
    seen = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if no_decay_norm_bias and (isinstance(module, NORM_TYPES) or name == "bias" or p.ndim <= 1):
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    if not decay and not no_decay:
        raise ConfigError("no trainable parameters: every parameter is frozen (check train.freeze)")
    return [g for g in groups if g["params"]]


def scale_lr_by_name(model: nn.Module, groups: List[Dict[str, Any]], base_lr: float,
                     lr_mult: Mapping[str, float]) -> List[Dict[str, Any]]:
    """Split ``groups`` so parameters whose name matches a pattern train at ``base_lr * mult``.

    Fine-tuning usually wants the pretrained backbone to move less than the head (less forgetting).
    Patterns work as in :func:`freeze_parameters` (fnmatch, or a bare prefix); the first matching pattern
    wins, and a pattern that matches no trainable parameter is an error.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    mult_of: Dict[int, float] = {}
    for pat, mult in lr_mult.items():
        hits = [p for n, p in named if fnmatch.fnmatchcase(n, pat) or n.startswith(pat.rstrip(".") + ".")]
        if not hits:
            raise ConfigError(f"train.optimizer.lr_mult: pattern {pat!r} matches no trainable parameter "
                             f"(e.g. {named[0][0]!r})")
        for p in hits:
            mult_of.setdefault(id(p), float(mult))
    out: List[Dict[str, Any]] = []
    for g in groups:
        by_mult: Dict[float, List[nn.Parameter]] = {}
        for p in g["params"]:
            by_mult.setdefault(mult_of.get(id(p), 1.0), []).append(p)
        for mult, params in sorted(by_mult.items(), key=lambda kv: kv[0] != 1.0):  # base LR first: it is logged
            name = g["name"] if mult == 1.0 else f"{g['name']}_lr_x{mult:g}"
            out.append({**g, "params": params, "lr": base_lr * mult, "name": name})
    return out


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any], no_decay_norm_bias: bool = True) -> torch.optim.Optimizer:
    """``cfg`` = ``{type: SGD, lr: 0.01, momentum: 0.9, weight_decay: 5e-4, ...}`` (train.optimizer).

    Optional ``lr_mult: {pattern: multiplier}`` (e.g. ``{backbone: 0.1}``) sets per-parameter learning rates.
    """
    cfg = dict(cfg)
    wd = float(cfg.pop("weight_decay", 0.0))
    lr_mult = cfg.pop("lr_mult", None)
    groups = param_groups(model, wd, no_decay_norm_bias)
    if "lr" in cfg:
        cfg["lr"] = float(cfg["lr"])
    if lr_mult:
        if "lr" not in cfg:
            raise ConfigError("train.optimizer.lr_mult needs train.optimizer.lr (the base learning rate)")
        groups = scale_lr_by_name(model, groups, cfg["lr"], lr_mult)
    return OPTIMIZERS.build(cfg, where="train.optimizer", params=groups)


class IterLRScheduler(torch.optim.lr_scheduler.LambdaLR):
    """Base per-iteration schedule on torch's ``LambdaLR``: ``lr = base_lr * warmup(it) * factor(it)``.

    ``warmup_iters`` (or ``warmup_epochs``) ramps linearly from ``warmup_ratio`` to 1, the way
    Detectron2/MMDetection do, which keeps the first steps on a pretrained model from blowing it up.
    Epoch-valued arguments are converted with ``iters_per_epoch`` (injected by the trainer).
    ``last_epoch`` counts iterations (call ``step()`` once per optimizer step).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_iters: int, iters_per_epoch: int = 1,
                 warmup_iters: Optional[int] = None, warmup_epochs: Optional[float] = None,
                 warmup_ratio: float = 0.001) -> None:
        if total_iters <= 0:
            raise ConfigError(f"lr_scheduler: total_iters must be > 0, got {total_iters}")
        self.total_iters = int(total_iters)
        self.iters_per_epoch = max(1, int(iters_per_epoch))
        if warmup_iters is None:
            warmup_iters = int(round((warmup_epochs or 0.0) * self.iters_per_epoch))
        self.warmup_iters = max(0, int(warmup_iters))
        self.warmup_ratio = float(warmup_ratio)
        super().__init__(optimizer, self.lr_factor)

    def factor(self, it: int) -> float:  # pragma: no cover - overridden
        return 1.0

    def warmup_factor(self, it: int) -> float:
        if it >= self.warmup_iters or self.warmup_iters == 0:
            return 1.0
        alpha = it / self.warmup_iters
        return self.warmup_ratio + (1.0 - self.warmup_ratio) * alpha

    def lr_factor(self, it: int) -> float:
        return self.warmup_factor(it) * self.factor(min(it, self.total_iters))

    def state_dict(self) -> Dict[str, Any]:
        """Only the progress (plain ints/floats): the schedule itself comes from the config."""
        return {"type": type(self).__name__, "last_epoch": self.last_epoch, "_step_count": self._step_count,
                "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("type", type(self).__name__) != type(self).__name__:
            raise ConfigError(f"checkpoint scheduler is {state.get('type')}, config asks for {type(self).__name__}")
        self.last_epoch, self._step_count = int(state["last_epoch"]), int(state["_step_count"])
        self.base_lrs = list(state["base_lrs"])
        self._last_lr = [base * self.lr_factor(self.last_epoch) for base in self.base_lrs]
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr


@LR_SCHEDULERS.register()
class Constant(IterLRScheduler):
    """Constant learning rate after warmup (fine-tuning, quick experiments)."""


@LR_SCHEDULERS.register()
class StepDecay(IterLRScheduler):
    """Multiply by ``gamma`` every ``step_epochs`` epochs (or ``step_iters`` iterations)."""

    def __init__(self, optimizer, total_iters, iters_per_epoch=1, step_epochs: Optional[float] = None,
                 step_iters: Optional[int] = None, gamma: float = 0.1, **kw) -> None:
        if step_iters is None:
            if step_epochs is None:
                raise ConfigError("lr_scheduler StepDecay: give step_epochs or step_iters")
            step_iters = int(round(step_epochs * max(1, iters_per_epoch)))
        self.step_iters, self.gamma = max(1, int(step_iters)), float(gamma)
        super().__init__(optimizer, total_iters, iters_per_epoch, **kw)

    def factor(self, it: int) -> float:
        return self.gamma ** (it // self.step_iters)


@LR_SCHEDULERS.register()
class MultiStepDecay(IterLRScheduler):
    """Multiply by ``gamma`` at each milestone (``milestones`` in epochs, or ``milestone_iters``)."""

    def __init__(self, optimizer, total_iters, iters_per_epoch=1, milestones: Iterable[float] = (),
                 milestone_iters: Optional[Iterable[int]] = None, gamma: float = 0.1, **kw) -> None:
        if milestone_iters is None:
            milestone_iters = [int(round(m * max(1, iters_per_epoch))) for m in milestones]
        self.milestone_iters = sorted(int(m) for m in milestone_iters)
        self.gamma = float(gamma)
        super().__init__(optimizer, total_iters, iters_per_epoch, **kw)

    def factor(self, it: int) -> float:
        return self.gamma ** sum(1 for m in self.milestone_iters if it >= m)


@LR_SCHEDULERS.register()
class Cosine(IterLRScheduler):
    """Cosine decay from the base LR to ``min_lr_ratio * base`` at the last iteration (after warmup)."""

    def __init__(self, optimizer, total_iters, iters_per_epoch=1, min_lr_ratio: float = 0.01, **kw) -> None:
        self.min_lr_ratio = float(min_lr_ratio)
        super().__init__(optimizer, total_iters, iters_per_epoch, **kw)

    def factor(self, it: int) -> float:
        start = self.warmup_iters
        span = max(1, self.total_iters - start)
        t = min(max(it - start, 0) / span, 1.0)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


#: names used before the schedules were built on LambdaLR; torch's classes of the same names mean other things
#: (torch's ConstantLR is a warm-up factor, its StepLR counts epochs), so they are refused, not aliased
RENAMED_SCHEDULERS = {"ConstantLR": "Constant", "StepLR": "StepDecay", "MultiStepLR": "MultiStepDecay",
                      "CosineLR": "Cosine"}


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: Optional[Mapping[str, Any]], total_iters: int,
                       iters_per_epoch: int) -> IterLRScheduler:
    """``train.lr_scheduler`` (default: ``Constant``) with the run length injected; old names get the new one."""
    cfg = dict(cfg or {})
    cfg.setdefault("type", "Constant")
    new = RENAMED_SCHEDULERS.get(str(cfg["type"]))
    if new:
        raise ConfigError(f"train.lr_scheduler.type {cfg['type']!r} was renamed: use type: {new} (same arguments; "
                          f"the old name clashed with torch.optim.lr_scheduler.{cfg['type']}, which means something else)")
    return LR_SCHEDULERS.build(cfg, where="train.lr_scheduler", optimizer=optimizer,
                               total_iters=total_iters, iters_per_epoch=iters_per_epoch)
