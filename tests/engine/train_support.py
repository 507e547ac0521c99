"""Tiny synthetic face dataset and configs for the trainer tests (imported by subprocesses via --import).

Images are noise with bright ellipses ("faces") whose boxes and keypoints are known exactly, so a few
training steps on them are fast and the loss has something real to fit. Every ``empty_every``-th image
has no face at all, which exercises batches of negatives only.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Dict

import cv2
import numpy as np

from blazekit.registry import DATASETS

REPO = Path(__file__).resolve().parents[2]  # not tests.conftest: tool subprocesses import this module (no pytest)


@DATASETS.register(force=True)
class SyntheticFaces:
    """``num_images`` deterministic images of ``size`` px with 0-2 elliptic faces each."""

    def __init__(self, num_images: int = 16, size: int = 96, empty_every: int = 0, transforms: Any = None,
                 seed: int = 0, delay: float = 0.0, **_: Any) -> None:
        self.num_images, self.size, self.empty_every = int(num_images), int(size), int(empty_every)
        self.delay = float(delay)  # seconds per sample: slows a subprocess run enough to kill it mid-epoch
        self.transforms, self.seed = transforms, int(seed)

    def __len__(self) -> int:
        return self.num_images

    def raw(self, index: int) -> Dict[str, Any]:
        rng = np.random.default_rng(self.seed * 7919 + index)
        s = self.size
        img = rng.integers(0, 60, size=(s, s, 3), dtype=np.uint8)
        n = 0 if (self.empty_every and index % self.empty_every == 0) else int(rng.integers(1, 3))
        boxes, kpts = [], []
        for _ in range(n):
            w = float(rng.uniform(0.25, 0.45) * s)
            cx, cy = float(rng.uniform(w / 2, s - w / 2)), float(rng.uniform(w / 2, s - w / 2))
            cv2.ellipse(img, (int(cx), int(cy)), (int(w / 2), int(w / 2)), 0, 0, 360, (230, 200, 170), -1)
            boxes.append([cx - w / 2, cy - w / 2, cx + w / 2, cy + w / 2])
            kpts.append([[cx - w / 5, cy - w / 6], [cx + w / 5, cy - w / 6], [cx, cy], [cx, cy + w / 4],
                         [cx - w / 2, cy], [cx + w / 2, cy]])
        return {
            "image": img,
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "labels": np.zeros(n, np.int64),
            "keypoints": np.asarray(kpts, np.float32).reshape(-1, 6, 2),
            "keypoints_visible": np.ones((n, 6), bool),
            "ignore": np.zeros(n, bool),
            "image_id": index,
            "path": f"synthetic/{index}.png",
            "orig_size": (s, s),
        }

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if self.delay:
            time.sleep(self.delay)
        sample = self.raw(index)
        return self.transforms(sample) if self.transforms is not None else sample


#: a complete small training config on SyntheticFaces (front model, 128 input, 1 epoch of 4 steps)
TINY_CFG: Dict[str, Any] = {
    "_base_": str(REPO / "configs" / "_base_" / "models" / "blazeface_front.yml"),
    "imports": ["tests.engine.train_support"],
    "data": {
        "train": {
            "dataset": {"type": "SyntheticFaces", "num_images": 16, "size": 96},
            "transforms": [{"type": "HorizontalFlip", "p": 0.5}, {"type": "Letterbox"}, {"type": "Normalize"}],
            "batch_size": 4,
            "num_workers": 0,
            "shuffle": True,
        },
    },
    "train": {
        "epochs": 1,
        "optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4},
        "lr_scheduler": {"type": "Cosine", "warmup_iters": 2},
        "log_interval": 1,
        "progress_bar": False,
        "tensorboard": False,
    },
}


def tiny_cfg(tmp_path: Path, dataset: Any = None, **train: Any) -> Path:
    """Write TINY_CFG (``train`` / ``dataset`` options updated) to ``tmp_path/tiny.yml`` and return the path."""
    import yaml

    cfg = copy.deepcopy(TINY_CFG)
    cfg["train"].update(train)
    cfg["data"]["train"]["dataset"].update(dataset or {})
    path = Path(tmp_path) / "tiny.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
