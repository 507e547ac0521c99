"""``build_dataloader``: dataset + transforms + collate + seeded workers from one ``data.<split>`` config."""
from __future__ import annotations

import copy
import os
import random
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import expand_env
from ..errors import ConfigError, UserError
from ..options import check_split
from .build import build_dataset
from .multiscale import build_collate
from .sampler import EpochSampler, SeededDataset, seed_transforms

DEFAULT_TRANSFORMS = [{"type": "Letterbox"}, {"type": "Normalize"}]
check_split_cfg = check_split  # its name here before the check moved to the schema (blazekit.options)


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


def check_dataset_keypoints(dataset: Any, model_cfg: Mapping[str, Any], where: str = "data split") -> None:
    """The dataset's keypoint count equals ``model.num_keypoints`` (else the loss would misread them)."""

    dataset_k = getattr(dataset, "num_keypoints", None)
    if dataset_k is not None and "num_keypoints" in model_cfg and dataset_k != model_cfg["num_keypoints"]:
        raise ConfigError(f"{where}: the dataset gives {dataset_k} keypoints but model.num_keypoints is "
                          f"{model_cfg['num_keypoints']}")


def build_dataloader(split_cfg: Mapping[str, Any], model_cfg: Optional[Mapping[str, Any]] = None, seed: int = 0,
                     train: bool = True, seeded: bool = False, rank: int = 0, world_size: int = 1,
                     where: str = "data split") -> DataLoader:
    """DataLoader for one ``data.<split>`` section (see docs/architecture.md, "Data config and builders").

    Input size, normalisation, pad value and K come from ``model_cfg`` (``input_size``, ``preprocess``,
    ``num_keypoints``). Shuffling follows ``shuffle`` (default: ``train``); ``pin_memory`` defaults to
    CUDA being available, ``persistent_workers`` to ``num_workers > 0``. The same ``seed`` gives the same
    batches, augmentations included, for any ``num_workers`` setting kept fixed.

    ``seeded`` (the trainer) draws through an :class:`EpochSampler` over ``rank`` / ``world_size`` and a
    :class:`SeededDataset`: batches then depend on ``(seed, epoch, index)`` only, whatever the worker count,
    and ``loader.sampler.set_epoch(epoch, skip_samples)`` resumes mid-epoch. ``drop_last`` then defaults to
    "a rank holds at least one full batch" (a partial last batch would make BatchNorm noisy).
    """
    check_split(split_cfg, where)  # a section given directly; one from config.load passes as it did there
    model_cfg = model_cfg or {}
    transforms = split_transforms(split_cfg, model_cfg)
    dataset = build_dataset(copy.deepcopy(split_cfg["dataset"]), transforms=transforms)
    check_dataset_keypoints(dataset, model_cfg, where)
    seed_transforms(dataset, seed)  # the stream used when num_workers == 0
    batch_size = int(split_cfg.get("batch_size", 32))
    workers = int(split_cfg.get("num_workers", 0))
    shuffle = bool(split_cfg.get("shuffle", train))
    generator = torch.Generator()
    generator.manual_seed(seed)
    kwargs: dict = {"shuffle": shuffle, "drop_last": bool(split_cfg.get("drop_last", False))}
    if seeded:
        sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)
        dataset = SeededDataset(dataset, seed, transforms)
        kwargs = {"sampler": sampler, "drop_last": bool(split_cfg.get("drop_last", sampler.per_rank() >= batch_size))}
    if workers > 0:
        kwargs["persistent_workers"] = bool(split_cfg.get("persistent_workers", True))
        if split_cfg.get("prefetch_factor") is not None:
            kwargs["prefetch_factor"] = int(split_cfg["prefetch_factor"])
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                      collate_fn=build_collate(split_cfg.get("multi_scale"), f"{where}.multi_scale"),
                      pin_memory=bool(split_cfg.get("pin_memory", torch.cuda.is_available())),
                      worker_init_fn=worker_init, generator=generator, **kwargs)


# ------------------------------------------------------------------------------ dataset paths

WIDER_HINT = (
    "WIDER FACE is expected at {root} with WIDER_train/images, WIDER_val/images and wider_face_split/ inside. "
    "Get it from the official site (http://shuoyang1213.me/WIDERFACE/) or the Hugging Face dataset "
    "'wider_face' (https://huggingface.co/datasets/wider_face), unpack it there, or point the config at it: "
    "--set data.train.dataset.root=/path/to/widerface"
)


class DatasetNotFoundError(UserError, FileNotFoundError):
    """A dataset path in the config does not exist; the message says where it was expected and how to get it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _dataset_paths(ds_cfg: Any) -> List[Tuple[str, str, str]]:
    """(type, key, path) of every path-like argument in a dataset config (lists and Concat included)."""
    out: List[Tuple[str, str, str]] = []
    if isinstance(ds_cfg, (list, tuple)):
        for d in ds_cfg:
            out += _dataset_paths(d)
    elif isinstance(ds_cfg, Mapping):
        for sub in ds_cfg.get("datasets", []) or []:
            out += _dataset_paths(sub)
        out += _dataset_paths(ds_cfg.get("dataset"))  # wrappers such as Mosaic
        for key in ("root", "ann_file", "data_yaml", "image_root"):
            if isinstance(ds_cfg.get(key), str):
                out.append((str(ds_cfg.get("type", "?")), key, ds_cfg[key]))
    return out


def check_dataset_paths(cfg: Mapping[str, Any], splits: Sequence[str] = ("train", "val")) -> None:
    """Refuse missing dataset folders/files up front, with where they were expected and how to get them."""
    for split in splits:
        split_cfg = (cfg.get("data") or {}).get(split)
        if not split_cfg:
            continue
        try:
            ds_cfg = expand_env(copy.deepcopy(split_cfg.get("dataset")))
        except ConfigError as exc:  # an unset ${VAR} in a path: say which dataset needs it
            raise ConfigError(f"data.{split}.dataset: {exc}") from None
        for typ, key, path in _dataset_paths(ds_cfg):
            if os.path.exists(os.path.expanduser(path)):
                continue
            where = f"data.{split}.dataset.{key}"
            absolute = os.path.abspath(os.path.expanduser(path))
            if typ.lower().startswith("wider"):
                msg = f"{where}: WIDER FACE not found at {absolute!r}. " + WIDER_HINT.format(root=absolute)
            else:
                msg = (f"{where} ({typ}): {absolute!r} does not exist. Fix the path in the config or override it: "
                       f"--set {where}=/path/to/it")
            raise DatasetNotFoundError(msg)
