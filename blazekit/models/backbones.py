"""BlazeFace backbones (BACKBONES registry).

Every backbone is a 5x5 stride-2 stem followed by stages of BlazeBlocks; the output of each stage
is one feature level for the head (high resolution first). :class:`BlazeBackbone` builds any such
layout from a compact spec, so a custom network fits on one screen of YAML; the three named
classes are the published layouts:

- :class:`BlazeFaceFrontBackbone`: MediaPipe short-range / hollance front model (128 input).
- :class:`BlazeFaceBackBackbone`: hollance back-camera model (256 input).
- :class:`BlazeFacePaperBackbone`: the BlazeFace paper (5x5 depthwise, single + double blocks).
"""
from __future__ import annotations

from typing import Any, List, Mapping, Sequence, Union

import torch
from torch import nn

from ..registry import BACKBONES
from .blocks import BlazeBlock, ConvBN, init_conv_bn

#: A block spec: ``[out_channels, stride]`` or a mapping with keys
#: ``out``, ``stride`` (1), ``double`` (False), ``mid`` (None), ``residual`` (True).
BlockSpec = Union[Sequence[int], Mapping[str, Any]]

_BLOCK_KEYS = {"out", "stride", "double", "mid", "residual"}


def _parse_block(spec: BlockSpec, where: str) -> dict:
    if isinstance(spec, Mapping):
        unknown = set(spec) - _BLOCK_KEYS
        if unknown or "out" not in spec:
            raise ValueError(f"{where}: block spec {dict(spec)!r} needs 'out' and only keys {sorted(_BLOCK_KEYS)}")
        return {"out": int(spec["out"]), "stride": int(spec.get("stride", 1)),
                "double": bool(spec.get("double", False)),
                "mid": spec.get("mid"), "residual": bool(spec.get("residual", True))}
    if isinstance(spec, Sequence) and len(spec) == 2:
        return {"out": int(spec[0]), "stride": int(spec[1]), "double": False, "mid": None, "residual": True}
    raise ValueError(f"{where}: block spec must be [out_channels, stride] or a mapping, got {spec!r}")


@BACKBONES.register()
class BlazeBackbone(nn.Module):
    """Stem (5x5 stride-2 conv + BN + ReLU) and stages of BlazeBlocks; each stage is a feature level.

    Args:
        stages: one list of block specs per output level (see :data:`BlockSpec`).
        stem_channels: channels of the stem conv.
        kernel_size: depthwise kernel size of every BlazeBlock (3 in MediaPipe, 5 in the paper).
        in_channels: image channels.
    """

    def __init__(self, stages: Sequence[Sequence[BlockSpec]], stem_channels: int = 24, kernel_size: int = 3,
                 in_channels: int = 3) -> None:
        super().__init__()
        if not stages or any(len(s) == 0 for s in stages):
            raise ValueError(f"{type(self).__name__}: 'stages' must be a non-empty list of non-empty block lists")
        self.stem = nn.Sequential(ConvBN(in_channels, stem_channels, 5, stride=2), nn.ReLU(inplace=True))
        self.stages = nn.ModuleList()
        self.out_channels: List[int] = []
        self.strides: List[int] = []
        ch, stride = stem_channels, 2
        for i, stage in enumerate(stages):
            blocks = []
            for j, raw in enumerate(stage):
                b = _parse_block(raw, f"{type(self).__name__} stages[{i}][{j}]")
                blocks.append(BlazeBlock(ch, b["out"], kernel_size, b["stride"], double=b["double"],
                                         mid_channels=b["mid"], residual=b["residual"]))
                ch, stride = b["out"], stride * b["stride"]
            self.stages.append(nn.Sequential(*blocks))
            self.out_channels.append(ch)
            self.strides.append(stride)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__}: expected input [B, C, H, W], got shape {tuple(x.shape)}")
        h, w = int(x.shape[-2]), int(x.shape[-1])
        total = self.strides[-1]
        if not torch.jit.is_tracing() and (h % total or w % total):
            raise ValueError(f"{type(self).__name__}: input H, W = {h}, {w} must be divisible by {total} "
                             "(the total stride); resize or letterbox to e.g. 128x128")
        feats = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def _front_stages() -> List[List[List[int]]]:
    return [
        [[24, 1], [28, 1], [32, 2], [36, 1], [42, 1], [48, 2], [56, 1], [64, 1], [72, 1], [80, 1], [88, 1]],
        [[96, 2], [96, 1], [96, 1], [96, 1], [96, 1]],
    ]


@BACKBONES.register()
class BlazeFaceFrontBackbone(BlazeBackbone):
    """MediaPipe short-range (front camera) layout: 128 input -> [88 ch @ 16x16, 96 ch @ 8x8].

    Matches ``face_detection_short_range.tflite`` and hollance's ``blazeface.pth`` op for op.
    ``kernel_size=5`` gives the paper's 5x5 depthwise convs on the same layout.
    """

    def __init__(self, kernel_size: int = 3, in_channels: int = 3) -> None:
        super().__init__(_front_stages(), stem_channels=24, kernel_size=kernel_size, in_channels=in_channels)


@BACKBONES.register()
class BlazeFaceBackBackbone(BlazeBackbone):
    """hollance back-camera layout: 256 input -> [96 ch @ 16x16, 96 ch @ 8x8].

    Four groups of 8 blocks (24, 24, 48, 96 channels; each group after the first opens with a
    stride-2 block), then a final stride-2 96->96 block *without* residual, which is its own level.
    """

    def __init__(self, kernel_size: int = 3, in_channels: int = 3) -> None:
        body: List[List[int]] = [[24, 1]] * 7
        for out in (24, 48, 96):
            body += [[out, 2]] + [[out, 1]] * 7
        final = [{"out": 96, "stride": 2, "residual": False}]
        super().__init__([body, final], stem_channels=24, kernel_size=kernel_size, in_channels=in_channels)


@BACKBONES.register()
class BlazeFacePaperBackbone(BlazeBackbone):
    """BlazeFace paper (Bazarevsky et al. 2019, architecture table): 5x5 depthwise, 5 single + 6 double blocks.

    128 input -> [96 ch @ 16x16, 96 ch @ 8x8]; double blocks project to ``mid_channels`` (24).
    """

    def __init__(self, kernel_size: int = 5, mid_channels: int = 24, in_channels: int = 3) -> None:
        def dbl(stride: int) -> dict:
            return {"out": 96, "stride": stride, "double": True, "mid": mid_channels}

        stages = [
            [[24, 1], [24, 1], [48, 2], [48, 1], [48, 1], dbl(2), dbl(1), dbl(1)],
            [dbl(2), dbl(1), dbl(1)],
        ]
        super().__init__(stages, stem_channels=24, kernel_size=kernel_size, in_channels=in_channels)


def conv_bn_units(backbone: nn.Module) -> List[ConvBN]:
    """The backbone's conv+BN units in forward (registration) order, for structural weight import."""
    return [m for m in backbone.modules() if isinstance(m, ConvBN)]


__all__ = ["BlazeBackbone", "BlazeFaceFrontBackbone", "BlazeFaceBackBackbone", "BlazeFacePaperBackbone",
           "conv_bn_units"]
