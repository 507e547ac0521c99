"""Unlabelled images and video frames for prediction (``tools/predict.py``), same sample dict, no faces."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np
from torch.utils.data import Dataset

from ...io.images import IMAGE_EXTS
from ...io.videos import VIDEO_EXTS
from ...registry import DATASETS
from .base import DataError, PathLike, read_image



@DATASETS.register()
class ImageFolder(Dataset):
    """Every image (and, with ``videos: true``, every ``video_stride``-th video frame) under ``root``.

    ``root`` may also be a single image or video file. Samples carry empty annotations so the same
    transforms and ``collate`` work; ``image_id`` is the relative path (``clip.mp4#12`` for frame 12).
    """

    def __init__(self, root: PathLike, recursive: bool = True, videos: bool = True, video_stride: int = 1,
                 transforms: Optional[Callable] = None, num_keypoints: int = 6) -> None:
        self.root = Path(root)
        self.transforms = transforms
        self.num_keypoints = int(num_keypoints)
        self.video_stride = max(1, int(video_stride))
        if not self.root.exists():
            raise DataError(f"ImageFolder: {self.root} does not exist")
        exts = IMAGE_EXTS | (VIDEO_EXTS if videos else frozenset())  # the predict tool's lists
        if self.root.is_file():
            files = [self.root]
        else:
            files = sorted(p for p in (self.root.rglob("*") if recursive else self.root.iterdir())
                           if p.suffix.lower() in exts)
        self.items: List[Tuple[Path, int]] = []  # (file, frame index or -1 for a still image)
        for f in files:
            if f.suffix.lower() in VIDEO_EXTS:
                cap = cv2.VideoCapture(str(f))
                n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
                cap.release()
                if n <= 0:
                    raise DataError(f"ImageFolder: cannot open video {f} (or it reports no frames)")
                self.items += [(f, i) for i in range(0, n, self.video_stride)]
            else:
                self.items.append((f, -1))
        if not self.items:
            raise DataError(f"ImageFolder: no images{' or videos' if videos else ''} found under {self.root} "
                            f"(extensions {', '.join(exts)})")

    def __len__(self) -> int:
        return len(self.items)

    def _read_frame(self, path: Path, index: int) -> np.ndarray:
        cap = cv2.VideoCapture(str(path))
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
        cap.release()
        if not ok:
            raise DataError(f"ImageFolder: cannot read frame {index} of {path}")
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        path, frame = self.items[index]
        image = read_image(path) if frame < 0 else self._read_frame(path, frame)
        rel = os.path.relpath(path, self.root) if self.root.is_dir() else path.name
        K = self.num_keypoints
        sample = {
            "image": image, "path": str(path), "image_id": rel if frame < 0 else f"{rel}#{frame}",
            "orig_size": tuple(image.shape[:2]), "boxes": np.zeros((0, 4), np.float32),
            "labels": np.zeros(0, np.int64), "keypoints": np.zeros((0, K, 2), np.float32),
            "keypoints_visible": np.zeros((0, K), bool), "ignore": np.zeros(0, bool), "extras": {},
        }
        return self.transforms(sample) if self.transforms is not None else sample
