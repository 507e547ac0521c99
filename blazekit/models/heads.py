"""SSD-style prediction head (HEADS registry) with MediaPipe's output layout.

``in_channels`` (from ``backbone.out_channels``) and ``num_anchors`` (from the anchor generator's
``num_anchors_per_level``) are injected by the detector, so the config never repeats them and they
cannot disagree.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
from torch import nn

from ..registry import HEADS


@HEADS.register()
class SSDHead(nn.Module):
    """Per level one 1x1 classifier conv (``A`` logits) and one 1x1 regressor conv (``A * (4 + 2K)``).

    Outputs follow MediaPipe: each level is flattened ``permute(0, 2, 3, 1).reshape(B, -1, C)``
    (row-major over the grid, anchors fastest) and the levels are concatenated in order.

    Args:
        in_channels: channels of each feature level.
        num_anchors: anchors per location of each level.
        num_keypoints: keypoints per face (6 for BlazeFace).
        prior_prob: initial foreground probability of the classifier bias (RetinaNet trick: keeps
            the first iterations from being swamped by the loss of ~900 easy negatives).
    """

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], num_keypoints: int = 6,
                 prior_prob: float = 0.01) -> None:
        super().__init__()
        in_channels, num_anchors = list(in_channels), list(num_anchors)
        if len(in_channels) != len(num_anchors) or not in_channels:
            raise ValueError(f"SSDHead: in_channels {in_channels} and num_anchors {num_anchors} must be non-empty "
                             "lists of the same length (one entry per feature level)")
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f"SSDHead: prior_prob must be in (0, 1), got {prior_prob}")
        self.in_channels, self.num_anchors, self.num_keypoints = in_channels, num_anchors, int(num_keypoints)
        self.num_coords = 4 + 2 * self.num_keypoints
        self.cls_convs = nn.ModuleList(nn.Conv2d(c, a, 1) for c, a in zip(in_channels, num_anchors))
        self.reg_convs = nn.ModuleList(nn.Conv2d(c, a * self.num_coords, 1) for c, a in zip(in_channels, num_anchors))
        # Small weights so initial regressions are ~0 (predict the anchor) and scores ~prior_prob.
        bias = -math.log((1.0 - prior_prob) / prior_prob)
        for conv in self.cls_convs:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.constant_(conv.bias, bias)
        for conv in self.reg_convs:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """``features`` (high resolution first) -> ``(regressors [B, A, 4+2K], logits [B, A, 1])``."""
        if len(features) != len(self.cls_convs):
            raise ValueError(f"SSDHead: got {len(features)} feature levels, built for {len(self.cls_convs)} "
                             f"(in_channels={self.in_channels})")
        regs: List[torch.Tensor] = []
        logits: List[torch.Tensor] = []
        for f, cls_conv, reg_conv in zip(features, self.cls_convs, self.reg_convs):
            b = f.shape[0]
            logits.append(cls_conv(f).permute(0, 2, 3, 1).reshape(b, -1, 1))
            regs.append(reg_conv(f).permute(0, 2, 3, 1).reshape(b, -1, self.num_coords))
        return torch.cat(regs, dim=1), torch.cat(logits, dim=1)
