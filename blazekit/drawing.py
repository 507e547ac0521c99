"""Drawing detections on images: one :func:`draw_detections` for predict's annotated copies, evaluation's and
training's ``vis/`` PNGs and the dataset browser, so a box looks the same wherever it is shown.

Named ``drawing`` (not ``visualize``): ``data/visualize.py`` is the dataset browser, a user of this module.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from .results import as_numpy

#: one RGB colour per keypoint index (cycled for K > 6)
KEYPOINT_COLORS = ((255, 64, 64), (64, 160, 255), (255, 220, 0), (255, 64, 255), (0, 230, 230), (160, 255, 64))

#: drawing coordinates are clipped to +-2**15 px: far outside any image, and inside the int range OpenCV takes
#: (a finite blow-up such as boxes at 1e20 px from diverged weights would otherwise raise cv2.error)
_DRAW_LIMIT = float(2 ** 15)


def _px(v: Any) -> int:
    """A finite coordinate as an int pixel position OpenCV accepts, however far outside the image."""
    return int(round(min(max(float(v), -_DRAW_LIMIT), _DRAW_LIMIT)))


def draw_detections(image: np.ndarray, det: Mapping[str, Any], *, score_thr: float = 0.0,
                    color: Tuple[int, int, int] = (0, 255, 0), thickness: Optional[int] = None,
                    keypoint_colors: Optional[Sequence[Tuple[int, int, int]]] = KEYPOINT_COLORS,
                    draw_scores: bool = True, draw_keypoints: bool = True, copy: bool = True) -> np.ndarray:
    """Draw ``det`` (``boxes`` [N,4] xyxy px, optional ``scores`` [N], ``keypoints`` [N,K,2],
    ``keypoints_visible`` [N,K], ``labels`` [N] of str/int) on an HxWx3 uint8 RGB ``image``.

    Works for predictions and ground truth alike (pass another ``color`` and ``draw_scores=False`` to
    overlay both). Line width and font scale follow the image size so small and 4K images stay readable.
    Boxes below ``score_thr`` are skipped. Returns a new image unless ``copy=False``.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"draw_detections: expected an HxWx3 uint8 image, got shape {image.shape} "
                         f"dtype {image.dtype}")
    out = image.copy() if copy else image
    boxes = as_numpy(det.get("boxes"))
    if boxes is None or boxes.size == 0:
        return out
    boxes = boxes.reshape(-1, 4)
    n = len(boxes)
    scores = as_numpy(det.get("scores"))
    kpts = as_numpy(det.get("keypoints"))
    vis = as_numpy(det.get("keypoints_visible"))
    labels = det.get("labels")
    if scores is not None and len(scores) != n:
        raise ValueError(f"draw_detections: {n} boxes but {len(scores)} scores")
    if kpts is not None and len(kpts) != n:
        raise ValueError(f"draw_detections: {n} boxes but keypoints for {len(kpts)}")
    h, w = out.shape[:2]
    t = thickness or max(1, int(round(min(h, w) / 320)))
    font_scale = max(0.35, min(h, w) / 900)
    for i in range(n):
        if scores is not None and float(scores[i]) < score_thr:
            continue
        if not np.all(np.isfinite(boxes[i])):
            continue
        x1, y1, x2, y2 = (_px(v) for v in boxes[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), color, t, cv2.LINE_AA)
        text = []
        if labels is not None:
            text.append(str(labels[i]))
        if draw_scores and scores is not None:
            text.append(f"{float(scores[i]):.2f}")
        if text:
            msg = " ".join(text)
            (tw, th), base = cv2.getTextSize(msg, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(1, t // 2))
            ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + base + 2  # inside the box at the top edge
            cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 2, ty + base // 2), color, -1)
            cv2.putText(out, msg, (x1 + 1, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0),
                        max(1, t // 2), cv2.LINE_AA)
        if draw_keypoints and kpts is not None:
            radius = max(1, t + 1)
            for k, (kx, ky) in enumerate(kpts[i].reshape(-1, 2)):
                if (vis is not None and not bool(vis[i][k])) or not (np.isfinite(kx) and np.isfinite(ky)):
                    continue
                kc = keypoint_colors[k % len(keypoint_colors)] if keypoint_colors else color
                cv2.circle(out, (_px(kx), _px(ky)), radius, kc, -1, cv2.LINE_AA)
    return out
