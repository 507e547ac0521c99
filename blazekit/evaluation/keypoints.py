"""Keypoint NME: mean point error over visible keypoints, normalized by the inter-ocular distance.

Only detected faces can be scored, so each ground-truth face is paired with at most one detection
(highest score first, IoU >= ``iou_thr``); unmatched faces are reported as a count, not as an error.
The eyes are keypoints 0 and 1 in MediaPipe order (right eye, left eye).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plain IoU of xyxy boxes [N,4] x [M,4] (continuous coordinates, no +1)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def face_nme(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, eyes: Sequence[int] = (0, 1)) -> Optional[float]:
    """NME of one face ([K,2] each); None when the eyes are not both visible or coincide."""
    visible = np.asarray(visible, bool)
    if not (visible[eyes[0]] and visible[eyes[1]]):
        return None
    iod = float(np.linalg.norm(gt[eyes[0]] - gt[eyes[1]]))
    if iod <= 0:
        return None
    err = np.linalg.norm(np.asarray(pred, np.float64)[visible] - np.asarray(gt, np.float64)[visible], axis=1)
    return float(err.mean() / iod)


class NMEAccumulator:
    """Collects per-face NMEs image by image; ``result()`` gives ``nme`` and the face counts."""

    def __init__(self, iou_thr: float = 0.5, eyes: Sequence[int] = (0, 1)) -> None:
        self.iou_thr = iou_thr
        self.eyes = tuple(eyes)
        self.errors: list = []
        self.face_ids: list = []  # running index (over every face added) of the face behind each error
        self.faces = 0  # faces with both eyes visible
        self._seen = 0

    def add(self, gt_boxes, gt_keypoints, gt_visible, pred_boxes, pred_scores, pred_keypoints, gt_ignore=None) -> None:
        gt_keypoints = np.asarray(gt_keypoints, np.float64)
        gt_visible = np.asarray(gt_visible, bool)
        first = self._seen
        self._seen += len(np.asarray(gt_boxes).reshape(-1, 4))
        if gt_keypoints.size == 0:
            return
        k = gt_keypoints.shape[1]
        usable = gt_visible[:, self.eyes[0]] & gt_visible[:, self.eyes[1]]
        if gt_ignore is not None:
            usable &= ~np.asarray(gt_ignore, bool)
        self.faces += int(usable.sum())
        pred_keypoints = np.asarray(pred_keypoints, np.float64).reshape(-1, k, 2) if len(pred_boxes) else np.zeros((0, k, 2))
        iou = box_iou(pred_boxes, gt_boxes)
        taken = np.zeros(len(gt_boxes), bool)
        for p in np.argsort(-np.asarray(pred_scores, np.float64), kind="stable"):
            cand = np.where(taken | ~usable, -1.0, iou[p])
            g = int(cand.argmax()) if cand.size else -1
            if g < 0 or cand[g] < self.iou_thr:
                continue
            taken[g] = True
            e = face_nme(pred_keypoints[p], gt_keypoints[g], gt_visible[g], self.eyes)
            if e is not None:
                self.errors.append(e)
                self.face_ids.append(first + g)

    def result(self) -> Dict[str, float]:
        matched = len(self.errors)
        return {"nme": float(np.mean(self.errors)) if matched else float("nan"),
                "nme/faces_matched": float(matched), "nme/faces": float(self.faces)}


def common_nme(model: NMEAccumulator, reference: NMEAccumulator) -> Dict[str, float]:
    """NME of two models on the faces *both* detect (fed the same ground truth in the same order).

    A model that finds more (harder, smaller) faces has a worse plain NME for finding them; on the common faces
    the two NMEs compare like for like."""
    ref = dict(zip(reference.face_ids, reference.errors))
    pairs = [(e, ref[f]) for f, e in zip(model.face_ids, model.errors) if f in ref]
    if not pairs:
        return {"nme/common": float("nan"), "nme/common_reference": float("nan"), "nme/common_faces": 0.0}
    mine, theirs = np.array(pairs, np.float64).T
    return {"nme/common": float(mine.mean()), "nme/common_reference": float(theirs.mean()),
            "nme/common_faces": float(len(pairs))}
