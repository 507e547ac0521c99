"""fp16 weights: what MediaPipe's .tflite stores, applied to the PyTorch model itself.

MediaPipe keeps every conv weight and bias as float16 (behind DEQUANTIZE), so an fp16 export rounds a fine-tuned
model's BN-folded weights to that grid. MediaPipe's own weights sit on it already; fine-tuned ones do not, and on
a full-range fine-tune the rounding moves the outputs by up to ~4e-3 of their range (91 convs in a row; RESULTS.md).
Rounding the model the same way makes the checkpoint, its validation numbers and the fp16 file one function:
``train.fp16_weights`` does it at every epoch end, :func:`fp16_deviation` measures what an export would change.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from .fuse import conv_bn_pairs, fold_conv_bn

FP16_MAX = float(np.finfo(np.float16).max)  # 65504


@dataclass
class Fp16Rounding:
    """What :func:`round_to_fp16_` did: tensors on the fp16 grid afterwards, how many values moved, and the tensors
    that would overflow fp16 (then nothing was changed)."""

    tensors: int = 0
    moved: int = 0
    overflow: List[str] = field(default_factory=list)


def _fp16(x: Tensor) -> Tensor:
    """``x`` rounded to the nearest float16 (ties to even, as numpy's ``astype(float16)`` the export uses), float32."""
    return x.detach().to(torch.float16).to(x.dtype)


@torch.no_grad()
def round_to_fp16_(model: nn.Module, example_input: Optional[Tensor] = None) -> Fp16Rounding:
    """Round ``model``'s deployed weights to float16, in place: every conv's weight and bias *with its BatchNorm
    folded in* (eval statistics) become float16 values, which is exactly what the fp16 .tflite export stores.

    A BatchNorm is kept with its statistics (so training can go on in train mode): the conv weight becomes
    ``R / s`` and the BN bias ``R_b - (b_conv - mean) * s`` for the rounded folded values ``R``, ``R_b`` and the
    BN scale ``s``, so folding gives ``R`` again up to float32 rounding, far inside half an fp16 step. Zeros stay
    zero (a sparse layout survives). Nothing changes when a value would overflow fp16 (``overflow`` names it).
    """
    report = Fp16Rounding()
    if example_input is None:  # zeros, not conv_bn_pairs' random image: training's random state stays untouched
        size = getattr(model, "input_size", None) or (128, 128)
        p = next(model.parameters())
        example_input = torch.zeros(1, 3, *((size, size) if isinstance(size, int) else size), device=p.device)
    bn_of = {c: b for c, b in conv_bn_pairs(model, example_input)}
    plan = []
    for name, conv in model.named_modules():
        if not isinstance(conv, nn.Conv2d):
            continue
        bn = model.get_submodule(bn_of[name]) if name in bn_of else None
        if bn is not None and bn.weight is None:
            raise ValueError(f"{bn_of[name]}: a BatchNorm without affine parameters cannot take rounded weights")
        folded = fold_conv_bn(copy.deepcopy(conv), copy.deepcopy(bn)) if bn is not None else conv
        weight = folded.weight.detach().float()
        bias = folded.bias.detach().float() if folded.bias is not None else None
        for role, t in (("weight", weight), ("bias", bias)):
            if t is not None and bool((t.abs() > FP16_MAX).any()):
                report.overflow.append(f"{name}.{role} (|value| up to {float(t.abs().max()):.4g})")
        plan.append((conv, bn, weight, bias))
    if report.overflow:
        return report
    for conv, bn, weight, bias in plan:
        r_w = _fp16(weight)
        report.moved += int((r_w != weight).sum())
        if bn is None:
            conv.weight.copy_(r_w)
            if bias is not None:
                report.moved += int((_fp16(bias) != bias).sum())
                conv.bias.copy_(_fp16(bias))
            report.tensors += 1 + (bias is not None)
            continue
        # the same scale torch.nn.utils.fusion.fuse_conv_bn_weights folds with
        scale = bn.weight.detach().float() * torch.rsqrt(bn.running_var.float() + bn.eps)
        shape = [-1] + [1] * (conv.weight.dim() - 1)
        safe = torch.where(scale == 0, torch.ones_like(scale), scale)
        conv.weight.copy_(torch.where((scale == 0).reshape(shape), conv.weight, r_w / safe.reshape(shape)))
        conv_b = conv.bias.detach().float() if conv.bias is not None else torch.zeros_like(scale)
        r_b = _fp16(bias)
        report.moved += int((r_b != bias).sum())
        bn.bias.copy_(r_b - (conv_b - bn.running_mean.float()) * scale)
        report.tensors += 2
    return report


def fp16_rounded(model: nn.Module, example_input: Optional[Tensor] = None) -> nn.Module:
    """A copy of ``model`` whose weights are what an fp16 export stores (:func:`round_to_fp16_`)."""
    out = copy.deepcopy(model)
    report = round_to_fp16_(out, example_input)
    if report.overflow:
        raise ValueError(f"values overflow fp16 (max {FP16_MAX:.0f}): {', '.join(report.overflow)}")
    return out


@torch.no_grad()
def fp16_deviation(detector: nn.Module, images: Tensor) -> Dict[str, float]:
    """How far fp16 weights move ``detector.raw`` on ``images`` [N, 3, H, W] (network input): per output
    (``regressors``, ``classificators``), the largest absolute change relative to the output's largest magnitude,
    the measure the .tflite parity is checked with."""
    was_training = detector.training
    detector.eval()
    try:
        ref = detector.raw(images)
        got = fp16_rounded(detector, images[:1]).eval().raw(images)
    finally:
        detector.train(was_training)
    names = ("regressors", "classificators")
    return {n: float((g - r).abs().max() / r.abs().max().clamp_min(1e-12)) for n, r, g in zip(names, ref, got)}


def demo_inputs(detector: nn.Module) -> Tensor:
    """The shipped demo photos as ``detector``'s network input (letterboxed to its size, normalised its way)."""
    from ..config import DEMO_DIR
    from ..io.images import read_image
    from ..preprocess import letterbox, normalize

    h, w = detector.input_size
    mode = detector.preprocess_cfg.get("normalize", "minus_one_one")
    paths = sorted((DEMO_DIR / "images").glob("*.jpg"))
    return torch.from_numpy(np.stack([normalize(letterbox(read_image(p), (h, w))[0], mode) for p in paths]))


def fp16_note(detector: nn.Module) -> str:
    """One line for an fp16 export: what storing ``detector``'s weights in fp16 changes on the demo photos."""
    x = demo_inputs(detector)
    cost = fp16_deviation(detector, x)
    if max(cost.values()) < 1e-6:
        return f"note: fp16 stores these weights exactly (outputs on the {len(x)} demo photos unchanged)"
    return (f"note: fp16 storage moves the outputs on the {len(x)} demo photos by up to {cost['regressors']:.1e} "
            f"(boxes, keypoints) and {cost['classificators']:.1e} (scores) of their range; --tflite-precision fp32 "
            "keeps them exact, and a fine-tune with train.fp16_weights=true saves weights fp16 stores exactly")


__all__ = ["FP16_MAX", "Fp16Rounding", "demo_inputs", "fp16_deviation", "fp16_note", "fp16_rounded",
           "round_to_fp16_"]
