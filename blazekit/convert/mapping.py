"""The one mapping between source convs and a blazekit detector, used by the import and the ``.tflite`` export.

Tensors are mapped *structurally*: the source convs in graph / state-dict order against the target's conv units
in forward order, checking kernel shapes, channels, strides and padding pair by pair. Anything that does not map
1:1 raises :class:`~.source.ConversionError` naming both sides.

Both sources have BatchNorm folded into conv biases. blazekit's convs are ``bias=False`` + BN, so
each BN is set to an identity plus the source bias: ``running_mean 0, running_var 1,
weight sqrt(1 + eps), bias = source bias``; in eval mode BN then computes ``x + bias`` exactly, and the
model stays trainable (fine-tuning updates the BN statistics and affine parameters as usual).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..registry import DETECTORS
from .source import ConversionError, SourceConv, SourceModel


def build_target(model_cfg: Mapping[str, Any]) -> nn.Module:
    """The detector a model config section describes (head sized by the detector itself; ``init`` not loaded)."""
    for key in ("backbone", "head", "anchors"):
        if key not in model_cfg:
            raise ConversionError(f"model config has no {key!r} section (keys: {sorted(model_cfg)})")
    return DETECTORS.build({"type": "BlazeFace", **model_cfg}, where="model")


def _units(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """Conv+BN units of the backbone, then the neck, in registration (= source graph) order."""
    from ..models.blocks import ConvBN

    out = []
    for part in ("backbone", "neck"):
        sub = getattr(model, part, None)
        if sub is not None:
            out += [(f"{part}.{n}", m) for n, m in sub.named_modules() if isinstance(m, ConvBN)]
    return out


def _target_pads(conv: nn.Conv2d, explicit: Optional[Tuple[int, int, int, int]]) -> Tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding a target conv applies (``explicit``: a ConvBN's F.pad)."""
    if explicit is not None:
        return tuple(int(v) for v in explicit)  # type: ignore[return-value]
    ph, pw = (int(v) for v in conv.padding)
    return pw, pw, ph, ph


def _source_pads(conv: SourceConv, kernel: int) -> Optional[Tuple[int, int, int, int]]:
    """(left, right, top, bottom) padding of a tflite conv (SAME: TF's rule for inputs divisible by the
    stride); None for hollance (not stored). Rows a stride-2 conv never reads are not counted."""
    if conv.padding is None or conv.stride is None:
        return None
    if conv.padding == "SAME":
        from ..models.blocks import tf_same_padding

        return tf_same_padding(kernel, conv.stride)
    return conv.pads or (0, 0, 0, 0)


def _pads_equivalent(src: Tuple[int, int, int, int], dst: Tuple[int, int, int, int], kernel: int,
                     stride: int) -> bool:
    """Same output on inputs divisible by the stride: equal leading pads and the same output size
    (a trailing row that no window reaches does not count, e.g. Keras' pad 1 + VALID vs pad (1, 0))."""
    def rows(lead: int, trail: int) -> int:
        return (lead + trail - kernel) // stride

    return (src[0] == dst[0] and src[2] == dst[2] and rows(src[0], src[1]) == rows(dst[0], dst[1])
            and rows(src[2], src[3]) == rows(dst[2], dst[3]))


@dataclass
class ConvPair:
    """One source conv and the target conv it fills: ``bn`` is the BatchNorm after it (body units), None in the head."""

    source: SourceConv
    key: str  # target state-dict prefix of the conv, e.g. ``backbone.stem.conv`` / ``head.cls_convs.0``
    conv: nn.Conv2d
    bn: Optional[nn.BatchNorm2d] = None
    bn_key: Optional[str] = None


def pair_convs(src: SourceModel, target: nn.Module, source_name: str = "source") -> List[ConvPair]:
    """The source convs against the target's, in order; raise naming both sides on any structural mismatch.

    The one mapping of both directions: import copies source -> target, export (:mod:`blazekit.deploy.tflite`)
    writes target -> the source's tensors.
    """
    def check_conv(conv: SourceConv, key: str, module: nn.Conv2d, explicit_pad: Any = None) -> None:
        depthwise = module.groups == module.in_channels and module.groups > 1
        if depthwise != conv.depthwise and conv.weight.shape[2] > 1:
            raise ConversionError(f"{source_name}: source {conv.name!r} ({'depthwise' if conv.depthwise else 'dense'}) "
                                  f"maps to {key} ({'depthwise' if depthwise else 'dense'})")
        stride = int(module.stride[0])
        if conv.stride is not None and conv.stride != stride:
            raise ConversionError(f"{source_name}: source {conv.name!r} has stride {conv.stride}, target {key} "
                                  f"has stride {stride}")
        k = int(module.kernel_size[0])
        want = _source_pads(conv, k)
        have = _target_pads(module, explicit_pad)
        if want is not None and k > 1 and not _pads_equivalent(want, have, k, stride):
            raise ConversionError(f"{source_name}: source {conv.name!r} pads (left, right, top, bottom) = {want}, "
                                  f"target {key} pads {have}; the outputs would be shifted")
        if tuple(conv.weight.shape) != tuple(module.weight.shape):
            raise ConversionError(f"{source_name}: source {conv.name!r} has shape {tuple(conv.weight.shape)} but "
                                  f"target {key}.weight has {tuple(module.weight.shape)}")

    pairs: List[ConvPair] = []
    units = _units(target)
    if len(units) != len(src.backbone):
        raise ConversionError(
            f"{source_name}: {len(src.backbone)} backbone convs in the source but {len(units)} conv units in "
            f"{type(target.backbone).__name__}"
            f"{' + ' + type(target.neck).__name__ if target.neck is not None else ''}; "
            f"source: {[c.name for c in src.backbone]}; target: {[n for n, _ in units]}. "
            "Is the model config the right one (front/back/full range)?")
    for (key, unit), conv in zip(units, src.backbone):
        check_conv(conv, key, unit.conv, unit.pad)
        pairs.append(ConvPair(conv, f"{key}.conv", unit.conv, unit.bn, f"{key}.bn"))

    n_levels = len(target.head.cls_convs)
    if len(src.head) != n_levels:
        raise ConversionError(f"{source_name}: source head has {len(src.head)} levels "
                              f"({[[c.name for c in lv.values()] for lv in src.head]}), target head has {n_levels}")
    for i, level in enumerate(src.head):
        for role, attr in (("cls", "cls_convs"), ("reg", "reg_convs")):
            module = getattr(target.head, attr)[i]
            # SSDHead: one conv per level; SubPixelSSDHead: {"conv", "dw"} (the source's <role>_post)
            parts = [(role, "", module)] if isinstance(module, nn.Conv2d) else \
                [(role, ".conv", module["conv"]), (role + "_post", ".dw", module["dw"])]
            if {r for r, _, _ in parts} != {r for r in level if r.startswith(role)}:
                raise ConversionError(f"{source_name}: head level {i} {role}: source convs "
                                      f"{[c.name for r, c in level.items() if r.startswith(role)]} do not match "
                                      f"target head.{attr}.{i} ({type(target.head).__name__})")
            for r, suffix, conv_module in parts:
                conv, key = level[r], f"head.{attr}.{i}{suffix}"
                check_conv(conv, key, conv_module)
                pairs.append(ConvPair(conv, key, conv_module))
    return pairs


def map_to_state_dict(src: SourceModel, model_cfg: Mapping[str, Any],
                      source_name: str = "source") -> Dict[str, torch.Tensor]:
    """Fill the target's state dict from ``src``; raise naming the tensors on any mismatch."""
    target = build_target(model_cfg)
    sd = {k: v.detach().clone() for k, v in target.state_dict().items()}
    filled = set()

    def put(key: str, array: np.ndarray, what: str) -> None:
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if tuple(t.shape) != tuple(sd[key].shape):
            raise ConversionError(f"{source_name}: {what} has shape {tuple(t.shape)} but target {key!r} "
                                  f"expects {tuple(sd[key].shape)}")
        sd[key] = t
        filled.add(key)

    for pair in pair_convs(src, target, source_name):
        conv = pair.source
        put(f"{pair.key}.weight", conv.weight, f"source {conv.name!r}")
        if pair.bn is None:
            put(f"{pair.key}.bias", conv.bias, f"bias of {conv.name!r}")
            continue
        put(f"{pair.bn_key}.bias", conv.bias, f"bias of {conv.name!r}")
        put(f"{pair.bn_key}.weight", np.full(conv.bias.shape, math.sqrt(1.0 + pair.bn.eps)), "BN weight")
        put(f"{pair.bn_key}.running_mean", np.zeros(conv.bias.shape), "BN running_mean")
        put(f"{pair.bn_key}.running_var", np.ones(conv.bias.shape), "BN running_var")

    missing = [k for k in sd if k not in filled and not k.endswith("num_batches_tracked")]
    if missing:
        raise ConversionError(f"{source_name}: target tensors not filled from the source: {missing}")
    return sd
