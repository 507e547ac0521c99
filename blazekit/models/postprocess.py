"""Per-image post-processing: score threshold + overlap suppression.

Input: one image's decoded ``boxes [A, 4]`` xyxy, ``scores [A]`` (probabilities) and
``keypoints [A, K, 2]``, all in input pixels. Output: ``{"boxes" [N, 4], "scores" [N],
"keypoints" [N, K, 2]}`` sorted by score, at most ``max_det``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from ..registry import POSTPROCESSORS
from .boxes import box_iou, nms_keep


class _Postprocessor:
    """Score threshold, then :func:`suppress` (plain NMS, or weighted blending when ``blending``); options shared
    by both, with MediaPipe's logit clipping before the sigmoid."""

    blending = False

    def __init__(self, score_thr: float = 0.5, iou_thr: float = 0.3, max_det: int = 100,
                 sigmoid_clip: Optional[float] = 100.0) -> None:
        if not 0.0 <= iou_thr <= 1.0:
            raise ValueError(f"{type(self).__name__}: iou_thr must be in [0, 1], got {iou_thr}")
        if max_det is not None and max_det < 1:
            raise ValueError(f"{type(self).__name__}: max_det must be >= 1, got {max_det}")
        self.score_thr = float(score_thr)
        self.iou_thr = float(iou_thr)
        self.max_det = None if max_det is None else int(max_det)
        self.sigmoid_clip = None if sigmoid_clip is None else float(sigmoid_clip)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(score_thr={self.score_thr}, iou_thr={self.iou_thr}, "
                f"max_det={self.max_det}, sigmoid_clip={self.sigmoid_clip})")

    def scores(self, logits: Tensor) -> Tensor:
        """Logits -> probabilities, clipped to [-sigmoid_clip, sigmoid_clip] first like MediaPipe."""
        if self.sigmoid_clip is not None:
            logits = logits.clamp(-self.sigmoid_clip, self.sigmoid_clip)
        return logits.sigmoid()

    def _candidates(self, boxes: Tensor, scores: Tensor, keypoints: Optional[Tensor],
                    score_thr: Optional[float]):
        thr = self.score_thr if score_thr is None else float(score_thr)
        if keypoints is None:
            keypoints = boxes.new_zeros(boxes.shape[0], 0, 2)
        keep = scores >= thr
        boxes, scores, keypoints = boxes[keep], scores[keep], keypoints[keep]
        order = scores.argsort(descending=True, stable=True)
        return boxes[order], scores[order], keypoints[order]

    def __call__(self, boxes: Tensor, scores: Tensor, keypoints: Optional[Tensor] = None,
                 score_thr: Optional[float] = None, max_det: Optional[int] = None) -> Dict[str, Tensor]:
        boxes, scores, keypoints = self._candidates(boxes, scores, keypoints, score_thr)
        limit = max_det if max_det is not None else self.max_det
        keep, boxes, keypoints = suppress(boxes, scores, keypoints, self.iou_thr, self.blending, max_det=limit)
        return {"boxes": boxes, "scores": scores[keep], "keypoints": keypoints}


def suppress(boxes: Tensor, scores: Tensor, keypoints: Tensor, iou_thr: float, blending: bool,
             groups: Optional[Tensor] = None, max_det: Optional[int] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Greedy NMS, then with ``blending`` MediaPipe's weighted mean over each kept box's cluster.

    ``boxes [M, 4]``, ``scores [M]``, ``keypoints [M, K, 2]`` of candidates; ``groups [M]`` (image index) keeps
    images apart; ``max_det`` caps the detections per group. Returns ``(keep, boxes, keypoints)``: the kept
    candidates' indices by descending score and their (blended) boxes and keypoints. The one implementation
    behind ``detector.predict``, evaluation and the ONNX graph (ops that export to standard ONNX).
    """
    keep = nms_keep(boxes, scores, iou_thr, groups)
    if max_det is not None:
        if groups is None:
            keep = keep[:max_det]
        else:  # rank of each kept row among the kept rows of its own group
            kept_groups = groups[keep]
            same = (kept_groups[:, None] == kept_groups[None, :]).to(torch.float32)
            keep = keep[torch.nonzero(torch.tril(same, diagonal=-1).sum(dim=1) < max_det).reshape(-1)]
    if not blending:
        return keep, boxes[keep], keypoints[keep]
    # A candidate belongs to the first (highest-scoring) kept box that overlaps it by more than iou_thr: the
    # clusters of MediaPipe's greedy loop (a box suppressed earlier is gone by then), computed with matrices.
    overlap = box_iou(boxes[keep], boxes) > iou_thr  # [N, M]
    if groups is not None:
        overlap = overlap & (groups[keep][:, None] == groups[None, :])
    # a kept box always owns itself, even when empty (IoU 0)
    overlap = overlap | (torch.arange(boxes.shape[0], device=boxes.device)[None, :] == keep[:, None])
    first = torch.cumsum(overlap.to(torch.int64), dim=0) == 1
    weights = (overlap & first).to(scores.dtype) * scores[None, :]
    total = weights.sum(dim=1, keepdim=True).clamp(min=1e-12)
    blended_kpts = (weights @ keypoints.flatten(1)) / total
    return keep, (weights @ boxes) / total, blended_kpts.reshape(keep.shape[0], keypoints.shape[1], 2)


@POSTPROCESSORS.register()
class NMS(_Postprocessor):
    """Standard hard NMS (torchvision): keeps the top box of each cluster unchanged."""

    blending = False


@POSTPROCESSORS.register()
class WeightedBlending(_Postprocessor):
    """MediaPipe ``NonMaxSuppressionCalculator`` with ``INTERSECTION_OVER_UNION`` and ``WEIGHTED``.

    Repeatedly take the highest-scoring remaining detection, gather every remaining detection whose
    IoU with it is ``> iou_thr`` (itself included), and output the score-weighted mean of their
    boxes and keypoints with the top detection's score. Blending steadies the box across
    overlapping anchors (BlazeFace's "tie resolution"), which plain NMS makes jitter.
    """

    blending = True


def postprocess_settings(detector: Any, who: str) -> Dict[str, Any]:
    """``score_thr``, ``iou_thr``, ``max_det`` (None: no cap), ``sigmoid_clip`` and ``blending`` of the detector's
    own post-processor, for code that re-implements it elsewhere (ONNX graph, numpy fast path); ``who`` names
    that code in the error when the post-processor is neither :class:`NMS` nor :class:`WeightedBlending`."""
    pp = getattr(detector, "postprocess", None)
    if type(pp) not in (NMS, WeightedBlending):  # exactly: a subclass may suppress differently
        raise ValueError(f"{who} supports the NMS and WeightedBlending post-processors, not "
                         f"{type(pp).__name__}; use detector.predict")
    return {"score_thr": float(pp.score_thr), "iou_thr": float(pp.iou_thr),
            "max_det": None if pp.max_det is None else int(pp.max_det),
            "sigmoid_clip": getattr(pp, "sigmoid_clip", None), "blending": type(pp) is WeightedBlending}


__all__ = ["NMS", "WeightedBlending", "postprocess_settings", "suppress"]
