"""Batching: images as one tensor, per-image targets as a list (faces per image differ)."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch

TARGET_TENSORS = {"boxes": torch.float32, "labels": torch.int64, "keypoints": torch.float32,
                  "keypoints_visible": torch.bool, "ignore": torch.bool}


def collate(batch: Sequence[Dict[str, Any]]) -> Tuple[torch.Tensor, List[Dict[str, Any]]]:
    """``[sample, ...] -> (images [B, 3, H, W] float32, targets)``.

    Each target holds ``boxes`` (pixels of the network input), ``labels``, ``keypoints``, ``keypoints_visible``,
    ``ignore`` as tensors, plus ``image_id``, ``path``, ``orig_size``, ``letterbox`` and ``extras``.
    """
    if len(batch) == 0:
        raise ValueError("collate: empty batch")
    images, targets = [], []
    for i, s in enumerate(batch):
        img = s["image"]
        if not isinstance(img, torch.Tensor) or img.ndim != 3:
            shape = getattr(img, "shape", None)
            raise TypeError(f"collate: sample {i} ({s.get('path', '?')}) has image of type {type(img).__name__} shape "
                            f"{shape}; expected a float tensor [3, H, W]: end the transforms with Letterbox (or "
                            "Resize) and Normalize")
        images.append(img)
        t: Dict[str, Any] = {}
        n = len(s["boxes"])
        for k, dtype in TARGET_TENSORS.items():
            v = s.get(k)
            if v is None and k == "ignore":
                v = np.zeros(n, bool)
            t[k] = torch.as_tensor(np.asarray(v), dtype=dtype)
        for k in ("image_id", "path", "orig_size", "letterbox", "extras"):
            t[k] = s.get(k)
        targets.append(t)
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise ValueError(f"collate: images in a batch have different shapes {sorted(shapes)}; every pipeline must end "
                         "with Letterbox/Resize to the same input_size")
    return torch.stack(images), targets
