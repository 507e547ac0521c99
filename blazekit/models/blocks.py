"""BlazeFace building blocks: conv + BatchNorm units and the (double) BlazeBlock.

MediaPipe ships BlazeFace with BatchNorm folded into conv biases; here every conv is ``bias=False``
followed by ``BatchNorm2d`` so the network trains well, and :mod:`blazekit.convert` sets the BN
layers so that the trainable model computes exactly what the folded source computes.

Padding follows TensorFlow's ``SAME`` rule (TFLite's convs use it): for an input divisible by the
stride the total padding is ``max(k - s, 0)``, split with the extra pixel on the right/bottom.
PyTorch's symmetric ``padding=`` differs for stride 2, which would shift every feature by a pixel.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def tf_same_padding(kernel_size: int, stride: int) -> Tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` TF-SAME padding for inputs divisible by ``stride``."""
    total = max(kernel_size - stride, 0)
    before = total // 2
    after = total - before
    return (before, after, before, after)


def init_conv_bn(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, relu) convs with zero bias, BN weight 1 / bias 0 (torchvision style)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ConvBN(nn.Module):
    """``pad -> conv(bias=False) -> BatchNorm2d``; padding is TF-SAME (asymmetric for stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__()
        left, right, top, bottom = tf_same_padding(kernel_size, stride)
        symmetric = left == right and top == bottom
        # Symmetric padding goes into the conv (cheaper, cleaner exports); asymmetric needs F.pad.
        self.pad: Optional[Tuple[int, int, int, int]] = None if symmetric else (left, right, top, bottom)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=left if symmetric else 0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    @property
    def stride(self) -> int:
        return self.conv.stride[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return self.bn(self.conv(x))


class BlazeBlock(nn.Module):
    """Single or double BlazeBlock (BlazeFace paper, Fig. 1) with a residual shortcut.

    single: ``dw kxk (stride) -> 1x1 -> + shortcut -> ReLU``;
    double: ``dw kxk (stride) -> 1x1 to mid -> ReLU -> dw kxk -> 1x1 to out -> + shortcut -> ReLU``.
    The shortcut is a 2x2 max-pool when ``stride == 2`` and zero-padded channels when the block
    widens (MediaPipe's ``channel_padding``), so it adds no parameters. ``residual=False`` drops
    the shortcut (the last block of the hollance back model).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 double: bool = False, mid_channels: Optional[int] = None, residual: bool = True) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"BlazeBlock: stride must be 1 or 2, got {stride}")
        if kernel_size % 2 != 1:
            raise ValueError(f"BlazeBlock: kernel_size must be odd, got {kernel_size}")
        if residual and out_channels < in_channels:
            raise ValueError(f"BlazeBlock: a residual block cannot shrink channels ({in_channels} -> {out_channels}); "
                             "the shortcut only zero-pads. Use residual=False.")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.residual = residual
        self.channel_pad = out_channels - in_channels
        if double:
            mid = mid_channels or max(in_channels // 2, 1)
            layers = [ConvBN(in_channels, in_channels, kernel_size, stride, groups=in_channels),
                      ConvBN(in_channels, mid, 1), nn.ReLU(inplace=True),
                      ConvBN(mid, mid, kernel_size, 1, groups=mid),
                      ConvBN(mid, out_channels, 1)]
        else:
            if mid_channels is not None:
                raise ValueError("BlazeBlock: mid_channels only applies to double=True blocks")
            layers = [ConvBN(in_channels, in_channels, kernel_size, stride, groups=in_channels),
                      ConvBN(in_channels, out_channels, 1)]
        self.convs = nn.Sequential(*layers)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x)
        if not self.residual:
            return self.act(h)
        if self.stride == 2:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        if self.channel_pad > 0:
            x = F.pad(x, (0, 0, 0, 0, 0, self.channel_pad))
        return self.act(h + x)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}->{self.out_channels}, stride={self.stride}"
                + ("" if self.residual else ", residual=False"))
