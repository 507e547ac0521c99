"""Draw samples as the model sees them (after transforms), for ``tools/browse_dataset.py`` and annotation checks."""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Mapping, Optional, Union

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..config import ConfigError
from ..drawing import draw_detections
from ..io.images import save_image
from ..preprocess import NORMALIZATIONS


def to_uint8_image(image: Union[np.ndarray, torch.Tensor], normalization: str = "minus_one_one") -> np.ndarray:
    """A sample's image (uint8 HxWx3, or the normalised float tensor [3, H, W]) as uint8 RGB HxWx3."""
    if isinstance(image, torch.Tensor):
        scale, offset = NORMALIZATIONS[normalization]
        arr = (image.detach().cpu().float().numpy().transpose(1, 2, 0) - offset) / scale
        return np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def draw_sample(sample: Mapping[str, Any], normalization: str = "minus_one_one", zoom: float = 1.0) -> np.ndarray:
    """RGB uint8 image with boxes (green; ignored faces orange) and visible keypoints drawn by predict's
    :func:`~blazekit.drawing.draw_detections`; ``zoom`` enlarges small network inputs so they can be looked at.
    Invisible keypoints are not drawn: validation parks them at (0, 0) and transforms then move them anywhere."""
    img = to_uint8_image(sample["image"], normalization)
    if zoom != 1.0:
        img = cv2.resize(img, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
    img = np.ascontiguousarray(img)
    boxes = np.asarray(sample.get("boxes", np.zeros((0, 4))), np.float32).reshape(-1, 4) * zoom
    kpts = np.asarray(sample.get("keypoints", np.zeros((len(boxes), 0, 2))), np.float32) * zoom
    vis = np.asarray(sample.get("keypoints_visible", np.zeros(kpts.shape[:2], bool)), bool)
    ignore = np.asarray(sample.get("ignore", np.zeros(len(boxes), bool)), bool)
    for faces, colour in ((~ignore, (0, 255, 0)), (ignore, (255, 150, 0))):
        draw_detections(img, {"boxes": boxes[faces], "keypoints": kpts[faces], "keypoints_visible": vis[faces]},
                        color=colour, copy=False)
    return img


def browse(cfg: Mapping[str, Any], split: str = "train", n: int = 16, out: Union[str, Path] = "browse",
           seed: int = 0, zoom: Optional[float] = None) -> List[Path]:
    """Write ``n`` PNGs of ``data.<split>`` samples after its transforms; returns the paths."""
    from . import build_dataset
    from .loader import split_transforms

    data = cfg.get("data") or {}
    if split not in data or not isinstance(data[split], Mapping) or "dataset" not in data[split]:
        raise ConfigError(f"config has no data.{split} with a 'dataset' (data has {sorted(data)})")
    split_cfg, model = data[split], cfg.get("model", {}) or {}
    normalization = (model.get("preprocess", {}) or {}).get("normalize", "minus_one_one")
    transforms = split_transforms(split_cfg, model)
    transforms.reseed(seed)
    dataset = build_dataset(split_cfg["dataset"], transforms=transforms)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    indices = rng.choice(len(dataset), size=min(n, len(dataset)), replace=False) if n < len(dataset) else range(len(dataset))
    paths = []
    for j, i in enumerate(tqdm(list(indices), desc=f"browse {split}", unit="img")):
        sample = dataset[int(i)]
        h = to_uint8_image(sample["image"], normalization).shape[0]
        z = zoom if zoom is not None else max(1.0, 384 / h)
        img = draw_sample(sample, normalization, zoom=z)
        p = out / f"{split}_{j:03d}_{Path(str(sample.get('path', i))).stem}.png"
        save_image(p, img)
        paths.append(p)
    return paths
