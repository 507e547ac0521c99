"""BatchNorm statistics for converted weights, so BatchNorm can train in train mode.

MediaPipe ships its convolutions with BatchNorm folded in; the converter puts an identity BatchNorm after each
(running mean 0, var 1). In train mode such a layer normalises with the *batch* statistics, which are nothing like
(0, 1), so the first step re-scales every pretrained feature and wrecks the model (hence ``train.norm_eval``).
:func:`calibrate_batchnorm` measures each layer's real input statistics on a few batches and rewrites the layer so
that its eval-mode function is unchanged while its running statistics are the measured ones: train mode then
starts where the pretrained model is.
"""
from __future__ import annotations

from typing import Dict, Iterable

import torch
from torch import Tensor, nn


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Set every BatchNorm's running statistics to its input's mean and variance over ``batches`` (image tensors
    [B, 3, H, W]) and adjust its affine so that eval-mode outputs stay the same (up to float rounding).

    Eval-mode BN is ``(x - m) / sqrt(v + eps) * w + b``; with the measured ``m', v'`` the same function is
    ``w' = w * sqrt(v' + eps) / sqrt(v + eps)`` and ``b' = b + w * (m' - m) / sqrt(v + eps)``. Returns the number
    of layers calibrated. The model's train/eval mode is restored.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    sums: Dict[nn.Module, list] = {m: [0.0, 0.0, 0] for m in bns}

    def collect(module: nn.Module, args: tuple) -> None:
        x = args[0].detach().double().transpose(0, 1).flatten(1)  # [C, N*H*W]
        acc = sums[module]
        acc[0] = acc[0] + x.sum(1)
        acc[1] = acc[1] + (x * x).sum(1)
        acc[2] += x.shape[1]

    was_training = model.training
    hooks = [m.register_forward_pre_hook(collect) for m in bns]
    try:
        model.eval()  # every layer sees the inputs of the pretrained function: calibrating one changes no other
        seen = 0
        for images in batches:
            model(images)
            seen += 1
        if not seen:
            raise ValueError("calibrate_batchnorm: no batches")
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for m in bns:
        s, ss, n = sums[m]
        mean = s / n
        var = (ss / n - mean * mean).clamp_min(0) * n / max(n - 1, 1)  # unbiased, like BN's running_var
        old_std = (m.running_var.double() + m.eps).sqrt()
        new_std = (var + m.eps).sqrt()
        if m.affine:
            w = m.weight.double()
            m.bias.copy_(m.bias.double() + w * (mean - m.running_mean.double()) / old_std)
            m.weight.copy_(w * new_std / old_std)
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
    return len(bns)


__all__ = ["calibrate_batchnorm"]
