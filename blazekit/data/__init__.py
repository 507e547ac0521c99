"""Data: datasets (WIDER FACE, COCO, YOLO, folders, user-registered), transforms, collate and the loader.

``build_dataset``, ``build_transforms``, ``build_dataloader`` and ``collate`` are the contract of
docs/architecture.md ("Data config and builders"). Importing this package registers every built-in
dataset and transform.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

from ..config import DEMO_DIR, expand_env
from ..registry import DATASETS, BuildError, build
from .collate import collate
from .datasets import (CocoFaces, ConcatDataset, DataError, DatasetSummary, FaceDataset, FaceRecord, ImageFolder,
                       WiderFace, YoloFaces, read_image)
from .loader import build_dataloader, seed_transforms, split_transforms
from . import mosaic  # noqa: F401,E402  (registers the Mosaic wrapper)
from .transforms import Compose, build_transforms

#: the bundled demo set (COCO json with ``split`` train/val per image); see demo/ATTRIBUTION.md
DEMO_ROOT = DEMO_DIR  # configs name it ${BLAZEKIT_DEMO}
DEMO_ANNOTATIONS = DEMO_ROOT / "annotations.json"


def build_dataset(cfg: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]], transforms: Optional[Callable] = None,
                  where: str = "data.dataset") -> Any:
    """``{type: WiderFace, ...}`` -> dataset; a list of configs -> :class:`ConcatDataset` of them.

    ``${VAR}`` / ``${VAR:-default}`` in paths are expanded here (:func:`blazekit.config.expand_env`), so every
    caller (trainer, evaluator, browse tool, a user's script) resolves ``${BLAZEKIT_SHARED}`` the same way.
    """
    cfg = expand_env(cfg)
    if isinstance(cfg, (list, tuple)):
        return ConcatDataset(datasets=list(cfg), transforms=transforms)
    if not isinstance(cfg, Mapping):
        raise BuildError(f"{where}: expected a dataset config mapping (or a list of them), got {cfg!r}")
    return build(DATASETS, cfg, where=where, transforms=transforms)


__all__ = ["build_dataset", "build_transforms", "build_dataloader", "collate", "Compose", "seed_transforms", "split_transforms",
           "FaceDataset", "FaceRecord", "DataError", "DatasetSummary", "WiderFace", "CocoFaces", "YoloFaces",
           "ImageFolder", "ConcatDataset", "read_image", "DEMO_ROOT", "DEMO_ANNOTATIONS"]
