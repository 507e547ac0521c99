"""Mosaic (Ultralytics): four images in a 2x2 grid, as a dataset wrapper because it needs other samples.

Why a wrapper and not a transform: a transform sees one sample; mosaic needs three more. The wrapper builds
its inner dataset *without* transforms, draws everything random (whether to mosaic, the 3 partner indices,
the grid centre) from the random stream of the split's transform pipeline, assembles the raw samples, then
runs that pipeline on the result. The trainer reseeds the pipeline per ``(seed, epoch, index)`` before
asking for a sample (``SeededDataset``), and ``build_dataloader`` reseeds it per worker, so the partners and
the augmentation are exactly as reproducible as every other transform.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
from torch.utils.data import Dataset

from ..registry import DATASETS
from .transforms import PER_FACE_KEYS, Compose, Fill, fill_colour, place_sample

Sample = Dict[str, Any]


@DATASETS.register()
class Mosaic(Dataset):
    """``{type: Mosaic, dataset: {type: WiderFace, ...}, p: 0.5, size: 640}``: 2x2 mosaics of the inner dataset.

    With probability ``p`` sample ``i`` becomes a mosaic of itself (top-left) and 3 other random samples
    (distinct when the dataset has 4 or more): each is scaled so its longer side is ``size`` and placed in
    one quadrant around a centre drawn uniformly in the middle half of a ``2 size`` square canvas painted
    ``fill`` (grey level, [R, G, B], ``"mean"``).
    With ``crop: true`` (default, as Ultralytics) the central ``size x size`` window is kept (it always
    shows part of all four), otherwise the whole canvas. Faces cut by a tile or crop edge are kept while
    their box centre is inside (clipped), like :class:`~blazekit.data.transforms.RandomFaceCrop`.
    """

    def __init__(self, dataset: Union[Mapping[str, Any], Sequence[Any], Dataset], p: float = 0.5,
                 size: int = 640, crop: bool = True, fill: Fill = 114,
                 transforms: Optional[Callable] = None) -> None:
        from .build import build_dataset

        if not 0 <= p <= 1:
            raise ValueError(f"Mosaic: p must be in [0, 1], got {p}")
        if int(size) <= 0:
            raise ValueError(f"Mosaic: size must be a positive number of pixels, got {size}")
        fill_colour(np.zeros((1, 1, 3), np.uint8), fill)
        self.dataset = dataset if isinstance(dataset, Dataset) else build_dataset(dataset, transforms=None,
                                                                                  where="Mosaic.dataset")
        if getattr(self.dataset, "transforms", None) is not None:
            raise ValueError("Mosaic: the inner dataset must give raw samples (transforms: None); the split's "
                             "transforms run after the mosaic is assembled")
        self.p, self.size, self.crop, self.fill = float(p), int(size), bool(crop), fill
        self.transforms = transforms
        self._rng = np.random.default_rng()

    # ------------------------------------------------------------------ what the loaders look for
    @property
    def num_keypoints(self) -> Optional[int]:
        return getattr(self.dataset, "num_keypoints", None)

    @property
    def summary(self) -> Any:
        return getattr(self.dataset, "summary", None)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def rng(self) -> np.random.Generator:
        """The pipeline's stream (reseeded per sample by the trainer), or an own one without a pipeline."""
        return self.transforms.rng if isinstance(self.transforms, Compose) else self._rng

    def reseed(self, seed: Optional[int]) -> None:
        """Restart the random stream (the pipeline's when there is one: partners and augmentation share it)."""
        if isinstance(self.transforms, Compose):
            self.transforms.reseed(seed)
        self._rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ serving
    def __getitem__(self, index: int) -> Sample:
        rng = self.rng
        if len(self) > 1 and rng.random() < self.p:
            others = rng.choice(len(self) - 1, size=3, replace=len(self) < 4)  # distinct where possible
            others = others + (others >= index)  # never the sample itself
            sample = self.mosaic([self.dataset[index]] + [self.dataset[int(j)] for j in others], rng)
        else:
            sample = self.dataset[index]
        return self.transforms(sample) if self.transforms is not None else sample

    def mosaic(self, samples: Sequence[Sample], rng: np.random.Generator) -> Sample:
        """Four raw samples -> one: quadrants top-left, top-right, bottom-left, bottom-right around the centre."""
        s = self.size
        xc, yc = (int(rng.uniform(0.5 * s, 1.5 * s)) for _ in range(2))
        colour = fill_colour(samples[0]["image"], self.fill)
        canvas = np.empty((2 * s, 2 * s, 3), np.uint8)
        canvas[:] = np.asarray(colour, np.float32).round().astype(np.uint8)
        parts: List[Sample] = []
        for q, sample in enumerate(samples):
            h, w = sample["image"].shape[:2]
            r = s / max(h, w)
            tw, th = w * r, h * r
            right, bottom = q in (1, 3), q in (2, 3)
            x0, x1 = (xc, 2 * s) if right else (0, xc)  # this quadrant of the canvas
            y0, y1 = (yc, 2 * s) if bottom else (0, yc)
            tx = xc if right else xc - tw  # the tile touches the centre with its inner corner
            ty = yc if bottom else yc - th
            if x1 <= x0 or y1 <= y0:
                continue
            tile = place_sample(sample, r, tx - x0, ty - y0, x1 - x0, y1 - y0, colour)
            canvas[y0:y1, x0:x1] = tile["image"]
            shift = np.array([x0, y0], np.float32)
            tile["boxes"] = tile["boxes"] + np.tile(shift, 2)
            tile["keypoints"] = tile["keypoints"] + shift
            parts.append(tile)
        out = merge_faces(parts, samples[0])
        out["image"] = canvas
        if self.crop:
            out = place_sample(out, 1.0, -(s // 2), -(s // 2), s, s, colour)
        out["orig_size"] = tuple(out["image"].shape[:2])
        return out


def merge_faces(parts: Sequence[Sample], first: Sample) -> Sample:
    """The per-face fields of all parts concatenated; image id / path of ``first`` (the indexed sample).

    ``extras`` are kept only for the keys every part has (a mix of sources may differ)."""
    out: Sample = {k: v for k, v in first.items() if k not in PER_FACE_KEYS and k not in ("image", "extras")}
    for k in PER_FACE_KEYS:
        if all(k in p for p in parts) and parts:
            out[k] = np.concatenate([p[k] for p in parts], axis=0)
    extras = [p.get("extras") or {} for p in parts]
    common = set.intersection(*(set(e) for e in extras)) if extras else set()
    out["extras"] = {k: np.concatenate([np.asarray(e[k]) for e in extras], axis=0) for k in sorted(common)}
    return out
