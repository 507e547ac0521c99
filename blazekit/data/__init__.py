"""Data: datasets (WIDER FACE, COCO, YOLO, folders, user-registered), transforms, collate and the loader.

``build_dataset``, ``build_transforms``, ``build_dataloader`` and ``collate`` are the contract of
docs/architecture.md ("Data config and builders"). Importing this package registers every built-in
dataset and transform.
"""
from __future__ import annotations

from ..config import DEMO_DIR
from .build import build_dataset
from .collate import collate
from .datasets import (CocoFaces, ConcatDataset, DataError, DatasetSummary, FaceDataset, FaceRecord, ImageFolder,
                       WiderFace, YoloFaces, read_image)
from .loader import build_dataloader, seed_transforms, split_transforms
from . import mosaic  # noqa: F401,E402  (registers the Mosaic wrapper)
from .transforms import Compose, build_transforms

#: the bundled demo set (COCO json with ``split`` train/val per image); see demo/ATTRIBUTION.md
DEMO_ROOT = DEMO_DIR  # configs name it ${BLAZEKIT_DEMO}
DEMO_ANNOTATIONS = DEMO_ROOT / "annotations.json"


__all__ = ["build_dataset", "build_transforms", "build_dataloader", "collate", "Compose", "seed_transforms", "split_transforms",
           "FaceDataset", "FaceRecord", "DataError", "DatasetSummary", "WiderFace", "CocoFaces", "YoloFaces",
           "ImageFolder", "ConcatDataset", "read_image", "DEMO_ROOT", "DEMO_ANNOTATIONS"]
