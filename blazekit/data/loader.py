"""``build_dataloader``: dataset + transforms + collate + seeded workers from one ``data.<split>`` config."""
from __future__ import annotations

import random
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .collate import collate
from .transforms import Compose

DEFAULT_TRANSFORMS = [{"type": "Letterbox"}, {"type": "Normalize"}]
LOADER_KEYS = {"dataset", "transforms", "batch_size", "num_workers", "shuffle", "pin_memory", "persistent_workers",
               "drop_last", "prefetch_factor"}


def _find_composes(dataset: Dataset, found=None) -> list:
    found = [] if found is None else found
    t = getattr(dataset, "transforms", None)
    if isinstance(t, Compose) and all(t is not f for f in found):
        found.append(t)
    for child in getattr(dataset, "datasets", []) or []:
        _find_composes(child, found)
    return found


def seed_transforms(dataset: Dataset, seed: int) -> None:
    """Restart the random stream of every transform pipeline inside ``dataset`` (ConcatDataset parts included)."""
    for c in _find_composes(dataset):
        c.reseed(seed)


def worker_init(worker_id: int) -> None:
    """Per-worker seeding: torch derives ``initial_seed`` from the loader's generator + worker id.

    (OpenCV's thread count is deliberately not touched here: ``cv2.setNumThreads`` in a forked worker can
    deadlock on the parent's thread-pool lock.)"""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        seed_transforms(info.dataset, seed)


def split_transforms(split_cfg: Mapping[str, Any], model_cfg: Optional[Mapping[str, Any]] = None) -> Compose:
    """The transforms of one ``data.<split>`` section (default: Letterbox + Normalize), with the input size,
    normalisation, pad value and K of ``model_cfg``; shared by the loader and the browse tool so both show
    the model exactly the same pixels."""
    from .transforms import build_transforms

    model_cfg = model_cfg or {}
    pre = model_cfg.get("preprocess", {}) or {}
    return build_transforms(split_cfg.get("transforms", DEFAULT_TRANSFORMS),
                            input_size=model_cfg.get("input_size", (128, 128)),
                            normalize=pre.get("normalize", "minus_one_one"),
                            num_keypoints=model_cfg.get("num_keypoints", 6), pad_value=pre.get("pad_value", 0),
                            where="transforms")


def check_split_cfg(split_cfg: Any, where: str = "data split") -> None:
    """A ``data.<split>`` section has a ``dataset`` and only keys a loader reads (a typo is an error)."""
    from ..config import ConfigError
    from ..registry import close_matches

    if not isinstance(split_cfg, Mapping) or "dataset" not in split_cfg:
        raise ConfigError(f"{where} config needs a 'dataset' entry, got {split_cfg!r}")
    unknown = sorted(set(split_cfg) - LOADER_KEYS)
    if unknown:
        hints = "".join(f" ({k!r}: did you mean {m[0]!r}?)" for k in unknown
                        for m in [close_matches(k, sorted(LOADER_KEYS))] if m)
        raise ConfigError(f"{where}: unknown keys {unknown}{hints}; accepted: {sorted(LOADER_KEYS)}")


def check_dataset_keypoints(dataset: Any, model_cfg: Mapping[str, Any], where: str = "data split") -> None:
    """The dataset's keypoint count equals ``model.num_keypoints`` (else the loss would misread them)."""
    from ..config import ConfigError

    dataset_k = getattr(dataset, "num_keypoints", None)
    if dataset_k is not None and "num_keypoints" in model_cfg and dataset_k != model_cfg["num_keypoints"]:
        raise ConfigError(f"{where}: the dataset gives {dataset_k} keypoints but model.num_keypoints is "
                          f"{model_cfg['num_keypoints']}")


def build_dataloader(split_cfg: Mapping[str, Any], model_cfg: Optional[Mapping[str, Any]] = None, seed: int = 0,
                     train: bool = True) -> DataLoader:
    """DataLoader for one ``data.<split>`` section (see docs/architecture.md, "Data config and builders").

    Input size, normalisation, pad value and K come from ``model_cfg`` (``input_size``, ``preprocess``,
    ``num_keypoints``). Shuffling follows ``shuffle`` (default: ``train``); ``pin_memory`` defaults to
    CUDA being available, ``persistent_workers`` to ``num_workers > 0``. The same ``seed`` gives the same
    batches, augmentations included, for any ``num_workers`` setting kept fixed.
    """
    from . import build_dataset

    check_split_cfg(split_cfg)
    model_cfg = model_cfg or {}
    transforms = split_transforms(split_cfg, model_cfg)
    dataset = build_dataset(split_cfg["dataset"], transforms=transforms)
    check_dataset_keypoints(dataset, model_cfg)
    seed_transforms(dataset, seed)  # the stream used when num_workers == 0
    workers = int(split_cfg.get("num_workers", 0))
    shuffle = bool(split_cfg.get("shuffle", train))
    generator = torch.Generator()
    generator.manual_seed(seed)
    kwargs = {}
    if workers > 0:
        kwargs["persistent_workers"] = bool(split_cfg.get("persistent_workers", True))
        if split_cfg.get("prefetch_factor") is not None:
            kwargs["prefetch_factor"] = int(split_cfg["prefetch_factor"])
    return DataLoader(dataset, batch_size=int(split_cfg.get("batch_size", 32)), shuffle=shuffle,
                      num_workers=workers, collate_fn=collate,
                      pin_memory=bool(split_cfg.get("pin_memory", torch.cuda.is_available())),
                      drop_last=bool(split_cfg.get("drop_last", False)), worker_init_fn=worker_init,
                      generator=generator, **kwargs)
