"""Per-image post-processing: score threshold + overlap suppression.

Input: one image's decoded ``boxes [A, 4]`` xyxy, ``scores [A]`` (probabilities) and
``keypoints [A, K, 2]``, all in input pixels. Output: ``{"boxes" [N, 4], "scores" [N],
"keypoints" [N, K, 2]}`` sorted by score, at most ``max_det``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor
from torchvision.ops import nms

from .matcher import batched_box_iou
from .registry import POSTPROCESSORS


class _Postprocessor:
    """Shared options: thresholds and MediaPipe's logit clipping before the sigmoid."""

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
        raise NotImplementedError


@POSTPROCESSORS.register()
class NMS(_Postprocessor):
    """Standard hard NMS (torchvision): keeps the top box of each cluster unchanged."""

    def __call__(self, boxes: Tensor, scores: Tensor, keypoints: Optional[Tensor] = None,
                 score_thr: Optional[float] = None, max_det: Optional[int] = None) -> Dict[str, Tensor]:
        boxes, scores, keypoints = self._candidates(boxes, scores, keypoints, score_thr)
        keep = nms(boxes.float(), scores.float(), self.iou_thr)
        limit = max_det if max_det is not None else self.max_det
        if limit is not None:
            keep = keep[:limit]
        return {"boxes": boxes[keep], "scores": scores[keep], "keypoints": keypoints[keep]}


@POSTPROCESSORS.register()
class WeightedBlending(_Postprocessor):
    """MediaPipe ``NonMaxSuppressionCalculator`` with ``INTERSECTION_OVER_UNION`` and ``WEIGHTED``.

    Repeatedly take the highest-scoring remaining detection, gather every remaining detection whose
    IoU with it is ``> iou_thr`` (itself included), and output the score-weighted mean of their
    boxes and keypoints with the top detection's score. Blending steadies the box across
    overlapping anchors (BlazeFace's "tie resolution"), which plain NMS makes jitter.
    """

    def __call__(self, boxes: Tensor, scores: Tensor, keypoints: Optional[Tensor] = None,
                 score_thr: Optional[float] = None, max_det: Optional[int] = None) -> Dict[str, Tensor]:
        boxes, scores, keypoints = self._candidates(boxes, scores, keypoints, score_thr)
        limit = max_det if max_det is not None else self.max_det
        out_boxes, out_scores, out_kpts = [], [], []
        remaining = torch.arange(len(scores), device=scores.device)
        while len(remaining) and (limit is None or len(out_scores) < limit):
            top = remaining[0]
            overlap = batched_box_iou(boxes[top][None], boxes[remaining])[0] > self.iou_thr
            overlap[0] = True  # the top box always belongs to its own cluster (even if empty)
            cluster = remaining[overlap]
            w = scores[cluster]
            total = w.sum()
            out_boxes.append((boxes[cluster] * w[:, None]).sum(0) / total)
            out_kpts.append((keypoints[cluster] * w[:, None, None]).sum(0) / total)
            out_scores.append(scores[top])
            remaining = remaining[~overlap]
        if not out_scores:
            return {"boxes": boxes[:0], "scores": scores[:0], "keypoints": keypoints[:0]}
        return {"boxes": torch.stack(out_boxes), "scores": torch.stack(out_scores),
                "keypoints": torch.stack(out_kpts)}


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
