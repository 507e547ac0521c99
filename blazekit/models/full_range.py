"""MediaPipe full-range BlazeFace parts: backbone with lateral projections, top-down neck, sub-pixel head.

``face_detection_full_range_sparse.tflite`` (192x192 input, one 48x48 level, 2304 anchors) is a small
FPN: a stem and four stages of double BlazeBlocks (strides 4, 8, 16, 32), each stage projected by a
1x1 conv + ReLU; the top-down path adds the bilinearly upsampled coarser level to the finer
projection and refines it with BlazeBlocks; the head predicts at half resolution (1x1 conv, then a
3x3 stride-2 depthwise conv) and unfolds the channels with depth-to-space.

Two details differ from the short-range model and are reproduced exactly:

- Keras ``ZeroPadding2D(1)`` + VALID convs: stride-2 3x3 convs pad one pixel top/left (TF-SAME pads
  bottom/right), so every ConvBN here uses symmetric padding ``k // 2`` (see :func:`symmetric_padding`).
- TF's ``DEPTH_TO_SPACE`` is DCR ordered (channel = (row * block + col) * C + c), not PyTorch's
  ``pixel_shuffle`` (CRD); :func:`depth_to_space` keeps TF's order so converted weights map 1:1.

Module registration order follows the source graph's op order (each stage's projection right after
its blocks; the neck coarse to fine), which is what :mod:`blazekit.convert` maps structurally.
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import BACKBONES, HEADS, NECKS
from .blocks import BlazeBlock, ConvBN, init_conv_bn


def symmetric_padding(module: nn.Module) -> None:
    """Give every ConvBN in ``module`` symmetric padding ``k // 2`` (Keras ZeroPadding2D + VALID conv).

    Same as TF-SAME for stride 1; for stride 2 it pads top/left instead of bottom/right.
    """
    for m in module.modules():
        if isinstance(m, ConvBN):
            m.pad = None
            k = m.conv.kernel_size[0]
            m.conv.padding = (k // 2, k // 2)


def depth_to_space(x: torch.Tensor, block: int) -> torch.Tensor:
    """TF ``depth_to_space`` (DCR): [B, b*b*C, H, W] -> [B, C, H*b, W*b], channel (i*b + j)*C + c -> (c, i, j)."""
    b, ch, h, w = x.shape
    c = ch // (block * block)
    x = x.reshape(b, block, block, c, h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(b, c, h * block, w * block)


def _proj(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 conv + BN + ReLU (the lateral / channel-reducing projection)."""
    return nn.Sequential(ConvBN(in_channels, out_channels, 1), nn.ReLU(inplace=True))


def _double(in_channels: int, out_channels: int, stride: int, mid_ratio: float, residual: bool) -> BlazeBlock:
    return BlazeBlock(in_channels, out_channels, 3, stride, double=True,
                      mid_channels=max(int(out_channels * mid_ratio), 1), residual=residual)


@BACKBONES.register()
class FullRangeBackbone(nn.Module):
    """Stem (3x3 stride-2 conv + ReLU + ``stem_blocks`` double BlazeBlocks), then one level per stage.

    Each stage opens with a stride-2 double BlazeBlock without shortcut, continues with residual
    double blocks (``mid = out * mid_ratio``) and is projected to ``out_channels[i]`` by 1x1 conv + ReLU.

    Args:
        stages: ``[channels, blocks]`` per level (blocks include the opening stride-2 block).
        out_channels: channels of each level's projection (what the neck receives).
        stem_channels, stem_blocks: width and residual double blocks of the stride-2 stem.
        mid_ratio: bottleneck width of the double blocks relative to their output.
    """

    def __init__(self, stages: Sequence[Sequence[int]] = ((64, 3), (128, 3), (192, 3), (384, 4)),
                 out_channels: Sequence[int] = (48, 64, 96, 96), stem_channels: int = 32, stem_blocks: int = 2,
                 mid_ratio: float = 0.25, in_channels: int = 3) -> None:
        super().__init__()
        name = type(self).__name__
        if not stages or len(stages) != len(out_channels):
            raise ValueError(f"{name}: 'stages' ({len(stages)}) and 'out_channels' ({len(out_channels)}) need one "
                             "entry per level")
        self.stem = nn.Sequential(ConvBN(in_channels, stem_channels, 3, stride=2), nn.ReLU(inplace=True),
                                  *[_double(stem_channels, stem_channels, 1, mid_ratio, True)
                                    for _ in range(stem_blocks)])
        # stages[i] = {"blocks", "proj"}: one ModuleDict per level keeps each projection right after its blocks
        self.stages = nn.ModuleList()
        self.strides: List[int] = []
        self.out_channels = [int(c) for c in out_channels]
        ch, stride = stem_channels, 2
        for i, spec in enumerate(stages):
            if len(spec) != 2 or int(spec[1]) < 1:
                raise ValueError(f"{name}: stages[{i}] must be [channels, blocks >= 1], got {spec!r}")
            out, n = int(spec[0]), int(spec[1])
            blocks = [_double(ch, out, 2, mid_ratio, False)] + [_double(out, out, 1, mid_ratio, True)
                                                                 for _ in range(n - 1)]
            self.stages.append(nn.ModuleDict({"blocks": nn.Sequential(*blocks),
                                              "proj": _proj(out, self.out_channels[i])}))
            ch, stride = out, stride * 2
            self.strides.append(stride)
        symmetric_padding(self)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        total = self.strides[-1]
        if not torch.jit.is_tracing() and (h % total or w % total):
            raise ValueError(f"{type(self).__name__}: input H, W = {h}, {w} must be divisible by {total} "
                             "(the total stride); resize or letterbox to e.g. 192x192")
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage["blocks"](x)
            feats.append(stage["proj"](x))
        return feats


@NECKS.register()
class TopDownNeck(nn.Module):
    """Top-down path to the finest level: ``x = blocks_i(upsample2x(x) + feats[i])`` from coarse to fine.

    ``x`` starts as the coarsest level (same channels as the next one). Between levels a 1x1 conv + ReLU
    reduces ``x`` to the next finer level's channels. Upsampling is
    bilinear with half-pixel centres (TF ``half_pixel_centers=True`` == PyTorch ``align_corners=False``).
    Outputs the finest level only, so the head sees one feature map.

    Args:
        in_channels: channels of each input level, fine to coarse (injected from the backbone).
        blocks: residual double BlazeBlocks after each merge, fine to coarse (``len(in_channels) - 1``).
        mid_ratio: bottleneck width of those blocks relative to their channels.
    """

    def __init__(self, in_channels: Sequence[int], blocks: Sequence[int] = (1, 2, 2), mid_ratio: float = 0.5) -> None:
        super().__init__()
        self.in_channels = [int(c) for c in in_channels]
        if len(blocks) != len(self.in_channels) - 1:
            raise ValueError(f"{type(self).__name__}: 'blocks' needs {len(self.in_channels) - 1} entries (one per "
                             f"merge, fine to coarse) for in_channels {self.in_channels}, got {list(blocks)}")
        if self.in_channels[-1] != self.in_channels[-2]:
            raise ValueError(f"{type(self).__name__}: the coarsest level is added to the next one as is, so their "
                             f"channels must match, got in_channels {self.in_channels}")
        # Coarse to fine: merge into level i, refine, then reduce to level i-1's channels (graph order).
        self.merges = nn.ModuleList()
        for i in range(len(self.in_channels) - 2, -1, -1):
            c = self.in_channels[i]
            layers: List[nn.Module] = [_double(c, c, 1, mid_ratio, True) for _ in range(int(blocks[i]))]
            if i > 0:
                layers.append(_proj(c, self.in_channels[i - 1]))
            self.merges.append(nn.Sequential(*layers))
        self.out_channels = [self.in_channels[0]]
        symmetric_padding(self)
        init_conv_bn(self)

    def forward(self, feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        if len(feats) != len(self.in_channels):
            raise ValueError(f"{type(self).__name__}: got {len(feats)} levels, built for {len(self.in_channels)}")
        x = feats[-1]
        for merge, skip in zip(self.merges, reversed(feats[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = merge(x + skip)
        return [x]


@HEADS.register()
class SubPixelSSDHead(nn.Module):
    """Per level: 1x1 conv to ``4 * A * C`` channels, 3x3 stride-2 depthwise conv, then depth-to-space x2.

    MediaPipe full range's head: the depthwise conv sees a 3x3 neighbourhood at half resolution and
    depth-to-space restores the level's grid, so outputs are one ``C``-vector per anchor per location
    in the same layout as :class:`~blazekit.models.heads.SSDHead` (row-major grid, anchors fastest).
    """

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], num_keypoints: int = 6,
                 prior_prob: float = 0.01) -> None:
        super().__init__()
        in_channels, num_anchors = list(in_channels), list(num_anchors)
        if len(in_channels) != len(num_anchors) or not in_channels:
            raise ValueError(f"SubPixelSSDHead: in_channels {in_channels} and num_anchors {num_anchors} must be "
                             "non-empty lists of the same length (one entry per feature level)")
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f"SubPixelSSDHead: prior_prob must be in (0, 1), got {prior_prob}")
        self.in_channels, self.num_anchors, self.num_keypoints = in_channels, num_anchors, int(num_keypoints)
        self.num_coords = 4 + 2 * self.num_keypoints

        def pair(c: int, out: int) -> nn.Module:
            return nn.ModuleDict({"conv": nn.Conv2d(c, 4 * out, 1),
                                  "dw": nn.Conv2d(4 * out, 4 * out, 3, stride=2, padding=1, groups=4 * out)})

        self.cls_convs = nn.ModuleList(pair(c, a) for c, a in zip(in_channels, num_anchors))
        self.reg_convs = nn.ModuleList(pair(c, a * self.num_coords) for c, a in zip(in_channels, num_anchors))
        bias = -math.log((1.0 - prior_prob) / prior_prob)
        for convs, b in ((self.cls_convs, bias), (self.reg_convs, 0.0)):
            for p in convs:
                nn.init.normal_(p["conv"].weight, std=0.01)
                nn.init.zeros_(p["conv"].bias)
                nn.init.zeros_(p["dw"].weight)
                with torch.no_grad():
                    p["dw"].weight[:, :, 1, 1] = 1.0  # starts as a plain stride-2 subsample
                nn.init.constant_(p["dw"].bias, b)

    def forward(self, features: Sequence[torch.Tensor]):
        if len(features) != len(self.cls_convs):
            raise ValueError(f"SubPixelSSDHead: got {len(features)} feature levels, built for {len(self.cls_convs)}")
        regs: List[torch.Tensor] = []
        logits: List[torch.Tensor] = []
        for f, cls, reg in zip(features, self.cls_convs, self.reg_convs):
            b = f.shape[0]
            for p, out, n in ((cls, logits, 1), (reg, regs, self.num_coords)):
                y = depth_to_space(p["dw"](p["conv"](f)), 2)
                out.append(y.permute(0, 2, 3, 1).reshape(b, -1, n))
        return torch.cat(regs, dim=1), torch.cat(logits, dim=1)


__all__ = ["FullRangeBackbone", "TopDownNeck", "SubPixelSSDHead", "depth_to_space", "symmetric_padding"]
