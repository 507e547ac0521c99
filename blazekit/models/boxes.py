"""The box toolbox of blazekit, over ``torchvision.ops``: format conversion, IoU and NMS.

One definition of each, used by the matcher, the coders, the post-processors and the ONNX graph. Two
copies elsewhere are deliberate: the numpy deployment path (:mod:`blazekit.deploy.fastpath`, no torch at
run time) and WIDER FACE's MATLAB arithmetic (:mod:`blazekit.evaluation.wider`, integer ``+1`` areas).
Boxes are ``xyxy`` unless a name says otherwise.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_convert, nms
from torchvision.ops import box_iou as _torchvision_box_iou


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(cx, cy, w, h) [..., 4] -> (x1, y1, x2, y2) [..., 4]."""
    return box_convert(boxes, "cxcywh", "xyxy")


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(x1, y1, x2, y2) [..., 4] -> (cx, cy, w, h) [..., 4]."""
    return box_convert(boxes, "xyxy", "cxcywh")


def clip_flipped(boxes: Tensor) -> Tensor:
    """Boxes whose corners are flipped (x2 < x1 or y2 < y1) get zero extent there, so every IoU sees them as
    empty. (An untrained head can decode negative sizes; ONNX NonMaxSuppression would reorder the corners
    while torchvision does not, so both get the fixed boxes.)"""
    return torch.cat([boxes[..., :2], torch.max(boxes[..., :2], boxes[..., 2:])], dim=-1)


def box_iou(boxes: Tensor, others: Tensor) -> Tensor:
    """IoU ``[..., N, M]`` of ``[..., N, 4]`` with ``[..., M, 4]`` (broadcast over leading dims).

    Flipped boxes count as empty, and a pair of empty boxes has IoU 0 (torchvision alone gives 0/0).
    """
    iou = _torchvision_box_iou(clip_flipped(boxes), clip_flipped(others))
    return torch.where(torch.isnan(iou), torch.zeros_like(iou), iou)


def batched_box_iou(boxes: Tensor, others: Tensor) -> Tensor:
    """IoU of per-image boxes ``[B, N, 4]`` with shared boxes ``[A, 4]`` -> ``[B, N, A]``."""
    return box_iou(boxes, others)


def nms_keep(boxes: Tensor, scores: Tensor, iou_thr: float, groups: Optional[Tensor] = None) -> Tensor:
    """Indices kept by greedy NMS (IoU ``> iou_thr`` suppresses), by descending score; boxes of different
    ``groups`` (e.g. image index) never suppress each other. Exports to ONNX NonMaxSuppression."""
    boxes, scores = clip_flipped(boxes).float(), scores.float()
    if groups is None:
        return nms(boxes, scores, iou_thr)
    return batched_nms(boxes, scores, groups, iou_thr)


__all__ = ["batched_box_iou", "box_iou", "clip_flipped", "cxcywh_to_xyxy", "nms_keep", "xyxy_to_cxcywh"]
