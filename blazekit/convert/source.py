"""What a weight reader produces: the source model's convs, and the error naming what does not fit.

Both readers (:mod:`.tflite`, :mod:`.hollance`) give a :class:`SourceModel`; :mod:`.mapping` pairs it with the
target detector, for the import and for the ``.tflite`` export alike.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from ..errors import UserError

PathLike = Union[str, os.PathLike]


class ConversionError(UserError, ValueError):
    """Source weights that do not fit the target architecture; the message names the tensors."""


@dataclass
class SourceConv:
    """One conv of the source model, already in PyTorch layout (OIHW; depthwise O1HW)."""

    name: str
    weight: np.ndarray
    bias: np.ndarray
    stride: Optional[int] = None  # None: unknown (hollance state dicts do not store strides)
    depthwise: bool = False
    padding: Optional[str] = None  # "SAME" / "VALID" for tflite
    pads: Optional[Tuple[int, int, int, int]] = None  # (left, right, top, bottom) of a PAD op feeding the conv
    weight_tensor: Optional[int] = None  # tflite: index of the tensor storing the weight (behind DEQUANTIZE/DENSIFY)
    bias_tensor: Optional[int] = None  # tflite: likewise for the bias; export writes back into both


@dataclass
class SourceModel:
    """Body convs (backbone, then neck) in graph order and head convs per level.

    ``head[level] = {"cls": .., "reg": ..}`` are the convs reading the feature; a head that refines
    them (MediaPipe full range: a depthwise conv before depth-to-space) adds ``"cls_post"`` / ``"reg_post"``.
    """

    backbone: List[SourceConv]
    head: List[Dict[str, SourceConv]]
    input_hw: Optional[Tuple[int, int]] = None


def group_head(items: List[Tuple[Any, str, SourceConv]], where: str) -> List[Dict[str, SourceConv]]:
    """Group head convs into levels ordered by ``items[i][0]`` (the feature they read)."""
    levels: Dict[Any, Dict[str, SourceConv]] = {}
    for key, role, conv in items:
        slot = levels.setdefault(key, {})
        if role in slot:
            raise ConversionError(f"{where}: two {role} convs on one feature level: {slot[role].name!r}, {conv.name!r}")
        slot[role] = conv
    out = [levels[k] for k in sorted(levels)]
    for i, lv in enumerate(out):
        if not {"cls", "reg"} <= set(lv) <= {"cls", "reg", "cls_post", "reg_post"}:
            names = [c.name for c in lv.values()]
            raise ConversionError(f"{where}: head level {i} needs one classifier and one regressor conv, got {names}")
    return out
