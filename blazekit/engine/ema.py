"""Exponential moving average of model weights (the YOLOv5/timm ``ModelEMA`` recipe).

Averaging the weights of the last few thousand steps gives a smoother, usually better model than the
last step's weights at no training cost. The decay ramps up (``decay * (1 - exp(-updates / tau))``)
so the early average is not dominated by the initial (random or pretrained) weights.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Dict, Mapping

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / DataParallel wrappers."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


class ModelEMA:
    """Keeps ``self.module``, an eval-mode copy whose float tensors track the training model."""

    def __init__(self, model: nn.Module, decay: float = 0.9998, tau: float = 2000.0, updates: int = 0) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema.decay must be in (0, 1), got {decay}")
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = float(decay), float(tau), int(updates)
        self._pairs_for: Any = None  # (source model, float dst/src lists, other dst/src lists)

    def current_decay(self) -> float:
        if self.tau <= 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-self.updates / self.tau))

    def _pairs(self, model: nn.Module) -> Any:
        """Matching (EMA, training) tensors, found once per training model: their identities do not change
        (loading weights copies in place), and building two state_dicts every step is slow
        (benchmarks/train_throughput.py)."""
        model = unwrap(model)
        if self._pairs_for is None or self._pairs_for[0] is not model:
            src = model.state_dict()
            dst = self.module.state_dict()
            floats = [k for k, v in dst.items() if v.dtype.is_floating_point and src[k].dtype == v.dtype]
            others = [k for k in dst if k not in floats]
            self._pairs_for = (model, [dst[k] for k in floats], [src[k].detach() for k in floats],
                               [dst[k] for k in others], [src[k].detach() for k in others])
        return self._pairs_for[1:]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the training weights in; integer buffers (BN's step counter) are copied."""
        self.updates += 1
        d = self.current_decay()
        dst_f, src_f, dst_o, src_o = self._pairs(model)
        if dst_f:
            torch._foreach_mul_(dst_f, d)
            torch._foreach_add_(dst_f, src_f, alpha=1.0 - d)
        for v, s in zip(dst_o, src_o):
            if v.dtype.is_floating_point:  # a float tensor whose dtype differs from the training model's
                v.mul_(d).add_(s.to(v.dtype), alpha=1.0 - d)
            else:
                v.copy_(s)

    def state_dict(self) -> Dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay, "tau": self.tau}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
