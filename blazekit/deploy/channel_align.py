"""Export-time channel alignment: the same BlazeFace function on SIMD-friendly channel widths.

Why: BlazeFace widens by a few channels per block (24, 28, 32, 36, 42, ... 88) and its widening
shortcuts zero-pad channels. onnxruntime's fast NCHWc convolutions work on blocks of 8 (AVX2) or 16
(AVX-512) channels: a conv whose width is not a multiple of the block, and every Pad, falls back to
plain NCHW with layout reorders around it. :func:`align_channels` rounds every width up to ``multiple``
with zero weights, so the extra channels are exactly 0 after every ReLU and change nothing, and turns
each widening shortcut that is left into a concatenation,

    relu(pw(h) + pad(x)) == cat(relu(pw[:C](h) + x), relu(pw[C:](h))),

so the graph holds no channel Pad at all. This makes onnxruntime faster although it adds multiply-adds
(RESULTS.md has the A/B over multiples; ``benchmarks/latency.py`` keeps measuring it, the ``MP-w`` rows).
Outputs equal the original's up to float summation order (checked when aligning). Inference only:
the widened model is built from a BN-folded copy and has nothing to train.
"""
from __future__ import annotations

import copy
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.backbones import BlazeBackbone
from ..models.blocks import BlazeBlock, ConvBN
from ..models.heads import SSDHead
from .fuse import count_batchnorm, fuse_bn

#: onnxruntime's NCHWc block on AVX-512 (AVX2 uses 8, which 16 is a multiple of).
DEFAULT_MULTIPLE = 16


def round_up(channels: int, multiple: int) -> int:
    return -(-int(channels) // multiple) * multiple


def pad_conv(conv: nn.Conv2d, out_channels: int, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` with zero filters / zero input weights / zero bias for the added channels.

    Depthwise convs (``groups == in_channels == out_channels``) stay depthwise; grouped convs are refused.
    """
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    if conv.groups > 1 and not depthwise:
        raise ValueError(f"pad_conv: grouped conv {conv} is not supported (only dense and depthwise)")
    if out_channels < conv.out_channels or in_channels < conv.in_channels or (depthwise and out_channels != in_channels):
        raise ValueError(f"pad_conv: cannot pad {conv} to {in_channels}->{out_channels} channels")
    groups = out_channels if depthwise else 1
    new = nn.Conv2d(in_channels, out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, groups=groups, bias=True, padding_mode=conv.padding_mode)
    w = conv.weight.detach()
    weight = torch.zeros(out_channels, in_channels // groups, *conv.kernel_size, dtype=w.dtype, device=w.device)
    weight[:conv.out_channels, :w.shape[1]] = w
    bias = torch.zeros(out_channels, dtype=w.dtype, device=w.device)
    if conv.bias is not None:
        bias[:conv.out_channels] = conv.bias.detach()
    new.weight = nn.Parameter(weight, requires_grad=False)
    new.bias = nn.Parameter(bias, requires_grad=False)
    return new


def _pad_unit(unit: ConvBN, out_channels: int, in_channels: int) -> None:
    if not isinstance(unit.bn, nn.Identity):
        raise ValueError("align_channels needs BatchNorm folded first (blazekit.deploy.fuse.fuse_bn)")
    unit.conv = pad_conv(unit.conv, out_channels, in_channels)


class ConcatShortcutBlock(nn.Module):
    """A widening BlazeBlock with its last 1x1 conv split at the input width: no channel Pad in the graph."""

    def __init__(self, body: nn.Sequential, keep: nn.Conv2d, extra: nn.Conv2d, stride: int) -> None:
        super().__init__()
        self.body, self.keep, self.extra, self.stride = body, keep, extra, stride

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(x)
        if self.stride == 2:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        return torch.cat([F.relu(self.keep(h) + x), F.relu(self.extra(h))], dim=1)


def _split_out(conv: nn.Conv2d, at: int) -> List[nn.Conv2d]:
    parts = []
    for lo, hi in ((0, at), (at, conv.out_channels)):
        part = nn.Conv2d(conv.in_channels, hi - lo, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                         bias=True)
        part.weight = nn.Parameter(conv.weight.detach()[lo:hi].clone(), requires_grad=False)
        part.bias = nn.Parameter(conv.bias.detach()[lo:hi].clone(), requires_grad=False)
        parts.append(part)
    return parts


def _align_block(block: BlazeBlock, in_channels: int, multiple: int) -> nn.Module:
    """``block`` widened to take ``in_channels`` (already aligned) and give ``round_up(out)`` channels."""
    out_channels = round_up(block.out_channels, multiple)
    units = [m for m in block.convs if isinstance(m, ConvBN)]
    cur = in_channels
    for i, unit in enumerate(units):
        conv = unit.conv
        if conv.groups > 1:  # depthwise: keeps the width
            _pad_unit(unit, cur, cur)
        else:
            width = out_channels if i == len(units) - 1 else round_up(conv.out_channels, multiple)
            _pad_unit(unit, width, cur)
            cur = width
    block.in_channels, block.out_channels = in_channels, out_channels
    widen = out_channels - in_channels
    if not block.residual or widen == 0:
        block.channel_pad = 0
        return block
    last = units[-1]
    if list(block.convs)[-1] is not last:
        raise ValueError("align_channels: a BlazeBlock must end with its 1x1 ConvBN")
    keep, extra = _split_out(last.conv, in_channels)
    body = nn.Sequential(*list(block.convs)[:-1])
    return ConcatShortcutBlock(body, keep, extra, block.stride)


class _SliceFeatures(nn.Module):
    """Backbone wrapper that hands the original widths on (for necks/heads align_channels does not know)."""

    def __init__(self, backbone: nn.Module, channels: Sequence[int]) -> None:
        super().__init__()
        self.backbone, self.channels = backbone, list(channels)
        self.out_channels = list(channels)
        self.strides = list(getattr(backbone, "strides", []))

    def forward(self, x: Tensor) -> List[Tensor]:
        return [f[:, :c] for f, c in zip(self.backbone(x), self.channels)]


def align_channels(detector: nn.Module, multiple: int = DEFAULT_MULTIPLE, verify: bool = True,
                   example_input: Optional[Tensor] = None) -> nn.Module:
    """An eval-mode copy of ``detector`` whose :class:`BlazeBackbone` widths are multiples of ``multiple``.

    BatchNorm is folded first when needed. An :class:`SSDHead` right after the backbone takes the wider
    features directly (zero input weights); any other neck/head gets the original widths back by slicing.
    Detectors without a ``BlazeBackbone`` come back folded but otherwise unchanged. ``verify`` compares
    ``raw`` outputs on a random input and raises if they differ beyond float rounding.
    """
    if multiple < 1:
        raise ValueError(f"align_channels: multiple must be >= 1, got {multiple}")
    model = fuse_bn(detector) if count_batchnorm(detector) else copy.deepcopy(detector).eval()
    backbone = getattr(model, "backbone", None)
    if multiple == 1 or not isinstance(backbone, BlazeBackbone):
        return model
    stem = [m for m in backbone.stem if isinstance(m, ConvBN)]
    if len(stem) != 1:
        raise ValueError("align_channels: expected one ConvBN in the BlazeBackbone stem")
    ch = round_up(stem[0].conv.out_channels, multiple)
    _pad_unit(stem[0], ch, stem[0].conv.in_channels)
    original = list(backbone.out_channels)
    for stage in backbone.stages:
        for j, block in enumerate(list(stage)):
            new = _align_block(block, ch, multiple)
            stage[j] = new
            ch = round_up(block.out_channels, multiple)
    widths = [round_up(c, multiple) for c in original]
    backbone.out_channels = widths
    if getattr(model, "neck", None) is None and isinstance(getattr(model, "head", None), SSDHead):
        head = model.head
        for convs in (head.cls_convs, head.reg_convs):
            for i, (conv, width) in enumerate(zip(list(convs), widths)):
                convs[i] = pad_conv(conv, conv.out_channels, width)
    else:
        model.backbone = _SliceFeatures(backbone, original)
    for p in model.parameters():
        p.requires_grad_(False)
    if verify:
        _verify(detector, model, example_input)
    return model


def _verify(reference: nn.Module, aligned: nn.Module, example_input: Optional[Tensor]) -> None:
    if example_input is None:
        size = tuple(getattr(reference, "input_size", (128, 128)))
        example_input = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    p = next(reference.parameters())
    x = example_input.to(p.device, p.dtype)
    was_training = reference.training
    reference.eval()
    with torch.no_grad():
        ref = reference.raw(x)
        got = aligned.raw(x)
    if was_training:
        reference.train()
    for r, g in zip(ref, got):
        scale = float(r.abs().max()) + 1e-6
        if r.shape != g.shape or not torch.allclose(r, g, rtol=1e-4, atol=1e-5 * scale):
            diff = float((r - g).abs().max()) if r.shape == g.shape else float("nan")
            raise RuntimeError(f"align_channels changed the model output (shapes {tuple(r.shape)} / "
                               f"{tuple(g.shape)}, max abs diff {diff:.3g}); export with channel_multiple=1 (--channel-multiple 1)")


__all__ = ["DEFAULT_MULTIPLE", "ConcatShortcutBlock", "align_channels", "pad_conv", "round_up"]
