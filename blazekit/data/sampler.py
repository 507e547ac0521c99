"""Seeded sampling: the data a training step sees is a function of ``(seed, epoch, index)`` only.

- :class:`EpochSampler` gives each epoch's order from ``(seed, epoch)``, sharded over ranks, and can start
  mid-epoch (resume skips consumed indices without loading them);
- :class:`SeededDataset` seeds python/numpy/torch and the transforms from :func:`sample_seed` before each
  sample, so augmentation does not depend on worker count, rank scheduling or where a run stopped;
- :func:`seed_transforms` is the one walker that finds the transform pipelines (blazekit ``Compose``,
  albumentations) inside a dataset, a ``ConcatDataset`` or a list, and restarts their streams.
"""
from __future__ import annotations

import math
import random
from typing import Any, Iterator, List, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The 32-bit seed of one sample's augmentation in one epoch."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)]).generate_state(1)[0])


def seed_transforms(obj: Any, seed: int, _depth: int = 0) -> None:
    """Restart the random stream of every transform pipeline inside ``obj`` (a dataset, ConcatDataset parts,
    a pipeline or a list); needed because albumentations >= 1.4 ignores the global seeds."""
    if obj is None or _depth > 4:
        return
    for method in ("reseed", "set_random_seed"):  # blazekit Compose / albumentations Compose
        fn = getattr(obj, method, None)
        if callable(fn):
            fn(seed)
            return  # both propagate the stream to their children
    if isinstance(obj, (list, tuple)):
        for t in obj:
            seed_transforms(t, seed, _depth + 1)
        return
    for attr in ("transforms", "transform", "aug", "compose", "pipeline", "datasets"):
        child = getattr(obj, attr, None)
        if child is not None and child is not obj:
            seed_transforms(child, seed, _depth + 1)


class SeededDataset(Dataset):
    """Index with ``(epoch, i)``: seeds python/numpy/torch and the transforms, then returns ``dataset[i]``."""

    def __init__(self, dataset: Any, seed: int, transforms: Any = None) -> None:
        self.dataset, self.seed, self.transforms = dataset, int(seed), transforms

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int]) -> Any:
        epoch, index = key
        s = sample_seed(self.seed, epoch, index)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)
        seed_transforms(self.transforms if self.transforms is not None else self.dataset, s)
        return self.dataset[index]


class EpochSampler(Sampler):
    """Per-epoch order from ``(seed, epoch)``, sharded over ranks, able to start mid-epoch.

    Yields ``(epoch, index)`` for :class:`SeededDataset`. Like ``DistributedSampler`` it pads the
    order by wrapping around so every rank gets the same number of samples.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if size <= 0:
            raise ValueError("the training dataset is empty")
        self.size, self.shuffle, self.seed = size, shuffle, int(seed)
        self.rank, self.world_size = rank, world_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip_samples: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip_samples)

    def per_rank(self) -> int:
        return math.ceil(self.size / self.world_size)

    def indices(self) -> List[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(int(self.seed) * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = self.per_rank() * self.world_size
        while len(order) < total:
            order += order[: total - len(order)]
        return order[self.rank:total:self.world_size]

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        for i in self.indices()[self.skip:]:
            yield (self.epoch, i)

    def __len__(self) -> int:
        return max(0, self.per_rank() - self.skip)
