"""A detection result as plain data: the dict ``detector.predict`` returns, read as numpy and written as JSON.

One place for the JSON that ``tools/predict.py`` writes (one file per image, one per video) and for reading
a result dict whose values may be tensors or arrays (drawing and JSON both do).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

#: MediaPipe keypoint order (K=6); other K get numbered names
KEYPOINT_NAMES_6 = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")


def as_numpy(x: Any) -> Optional[np.ndarray]:
    """A tensor, array or list as a numpy array (None stays None)."""
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def num_boxes(det: Mapping[str, Any]) -> int:
    return len(as_numpy(det["boxes"]).reshape(-1, 4))


def num_keypoints(det: Mapping[str, Any]) -> int:
    """K of a result's ``keypoints`` [N, K, 2]; 0 without keypoints."""
    k = as_numpy(det.get("keypoints"))
    return int(k.shape[1]) if k is not None and k.ndim == 3 else 0


def keypoint_names(k: int) -> List[str]:
    return list(KEYPOINT_NAMES_6) if k == 6 else [f"kp{i}" for i in range(k)]


def detections_to_json(det: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """One image's detections as plain JSON-able dicts: ``box`` [x1,y1,x2,y2] px, ``score``, ``keypoints``."""
    boxes = as_numpy(det.get("boxes"))
    boxes = np.zeros((0, 4), np.float32) if boxes is None else boxes.reshape(-1, 4)
    scores = as_numpy(det.get("scores"))
    kpts = as_numpy(det.get("keypoints"))
    out = []
    for i in range(len(boxes)):
        d: Dict[str, Any] = {"box": [round(float(v), 2) for v in boxes[i]]}
        if scores is not None:
            d["score"] = round(float(scores[i]), 5)
        if kpts is not None:
            d["keypoints"] = [[round(float(x), 2), round(float(y), 2)] for x, y in kpts[i].reshape(-1, 2)]
        out.append(d)
    return out


def image_record(source: Path, image: np.ndarray, det: Mapping[str, Any]) -> Dict[str, Any]:
    """``{"source", "width", "height", "keypoint_names", "detections"}``: one image's JSON file."""
    return {"source": str(source), "width": int(image.shape[1]), "height": int(image.shape[0]),
            "keypoint_names": keypoint_names(num_keypoints(det)), "detections": detections_to_json(det)}


def video_record(source: Path, width: int, height: int, fps: float, k: int,
                 frames: List[Dict[str, Any]]) -> Dict[str, Any]:
    """``{"source", "width", "height", "fps", "keypoint_names", "frames": [{"frame", "detections"}]}``."""
    return {"source": str(source), "width": width, "height": height, "fps": fps, "keypoint_names": keypoint_names(k),
            "frames": frames}


def write_json(path: Path, record: Mapping[str, Any], indent: Optional[int] = None) -> None:
    path.write_text(json.dumps(record, indent=indent), encoding="utf-8")
