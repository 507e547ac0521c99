"""COCO-style box AP through pycocotools, with a crowd-friendly ``maxDets`` and ignored faces.

Differences from a bare ``COCOeval`` call, each for a reason:
- ``max_dets`` defaults to ``(1, 10, 1000)``: 59 WIDER val images hold more than 100 faces, and
  pycocotools' default 100 caps their recall. The summary is computed here from ``eval['precision']``
  because ``COCOeval.summarize`` hard-codes ``maxDets=100`` for its first AP.
- Faces flagged ``ignore`` (WIDER invalid faces, faces below the configured minimum size) become
  ``iscrowd=1`` regions: a detection on them is neither a TP nor an FP (pycocotools sets
  ``ignore = iscrowd``).
- No detections at all gives AP 0 instead of pycocotools' ``loadRes`` crash.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Dict, Hashable, Mapping, Optional, Sequence

import numpy as np

#: flat result keys, in the order they are printed
COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR", "ARs", "ARm", "ARl")


@dataclass
class CocoImage:
    """Ground truth of one image: xyxy pixel boxes and which of them are ignored regions."""

    image_id: Hashable
    width: int
    height: int
    boxes: np.ndarray  # [N, 4] xyxy px
    ignore: Optional[np.ndarray] = None  # [N] bool


@dataclass
class CocoDetections:
    boxes: np.ndarray  # [M, 4] xyxy px
    scores: np.ndarray  # [M]


def _xyxy_to_xywh(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def build_coco(images: Sequence[CocoImage], detections: Mapping[Hashable, CocoDetections]):
    """In-memory ``COCO`` ground truth and the detection list for ``loadRes`` (ids mapped to ints)."""
    from pycocotools.coco import COCO

    ids = {im.image_id: i + 1 for i, im in enumerate(images)}
    if len(ids) != len(images):
        raise ValueError("COCO evaluation: duplicate image_id in the ground truth")
    anns, dts = [], []
    for im in images:
        boxes = _xyxy_to_xywh(im.boxes)
        ign = np.zeros(len(boxes), bool) if im.ignore is None else np.asarray(im.ignore, bool).reshape(-1)
        if len(ign) != len(boxes):
            raise ValueError(f"COCO evaluation: image {im.image_id!r} has {len(boxes)} boxes but {len(ign)} ignore flags")
        for b, g in zip(boxes, ign):
            anns.append({"id": len(anns) + 1, "image_id": ids[im.image_id], "category_id": 1, "bbox": b.tolist(),
                         "area": float(max(b[2], 0) * max(b[3], 0)), "iscrowd": int(g)})
    unknown = [k for k in detections if k not in ids]
    if unknown:
        raise ValueError(f"COCO evaluation: detections for {len(unknown)} image(s) not in the ground truth, "
                         f"e.g. {unknown[0]!r}")
    for key, det in detections.items():
        for b, s in zip(_xyxy_to_xywh(det.boxes), np.asarray(det.scores, dtype=np.float64).reshape(-1)):
            dts.append({"image_id": ids[key], "category_id": 1, "bbox": b.tolist(), "score": float(s)})
    gt = COCO()
    gt.dataset = {"images": [{"id": ids[im.image_id], "width": int(im.width), "height": int(im.height)} for im in images],
                  "annotations": anns, "categories": [{"id": 1, "name": "face"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt, dts


def summarize(coco_eval, max_dets: Sequence[int]) -> Dict[str, float]:
    """COCO summary numbers from an evaluated+accumulated ``COCOeval`` with any three ``maxDets``."""
    p = coco_eval.params
    prec, rec = coco_eval.eval["precision"], coco_eval.eval["recall"]
    area = {name: i for i, name in enumerate(p.areaRngLbl)}
    mdet = {m: i for i, m in enumerate(p.maxDets)}

    def mean(x: np.ndarray) -> float:
        x = x[x > -1]
        return float(x.mean()) if x.size else -1.0

    def ap(iou: Optional[float] = None, a: str = "all", m: int = max_dets[-1]) -> float:
        s = prec if iou is None else prec[np.flatnonzero(np.isclose(p.iouThrs, iou))]
        return mean(s[..., area[a], mdet[m]])

    def ar(a: str = "all", m: int = max_dets[-1]) -> float:
        return mean(rec[..., area[a], mdet[m]])

    m0, m1, m2 = max_dets
    return {"AP": ap(), "AP50": ap(0.5), "AP75": ap(0.75), "APs": ap(a="small"), "APm": ap(a="medium"),
            "APl": ap(a="large"), "AR1": ar(m=m0), "AR10": ar(m=m1), "AR": ar(), "ARs": ar("small"),
            "ARm": ar("medium"), "ARl": ar("large")}


def evaluate_coco(images: Sequence[CocoImage], detections: Mapping[Hashable, CocoDetections],
                  max_dets: Sequence[int] = (1, 10, 1000)) -> Dict[str, float]:
    """COCO box AP/AR of face detections; keys as in :data:`COCO_KEYS` (-1 where undefined, like pycocotools)."""
    from pycocotools.cocoeval import COCOeval

    max_dets = sorted(int(m) for m in max_dets)
    if len(max_dets) != 3:
        raise ValueError(f"max_dets must hold three numbers (e.g. [1, 10, 1000]), got {max_dets}")
    gt, dts = build_coco(images, detections)
    has_gt = any(a["iscrowd"] == 0 for a in gt.dataset["annotations"])
    if not dts:
        return {k: (0.0 if has_gt else -1.0) for k in COCO_KEYS}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(dts)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.maxDets = max_dets
        ev.evaluate()
        ev.accumulate()
    return summarize(ev, max_dets)
