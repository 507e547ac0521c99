"""Multi-scale training: every batch is resized to an input size drawn from a list.

The network is fully convolutional and the detector's loss uses the batch's actual size (anchors are made
per size), so only the batch has to change. It happens at collate time, on the stacked tensor (as
Ultralytics does), because only there are all images of one batch together; a per-sample transform cannot
agree with its batch-mates on a size. Let the transforms produce the *largest* size (Letterbox to it), so
the other sizes are downscales of it, never blurry upscales.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..options import check_multi_scale
from ..preprocess import LetterboxInfo
from .collate import collate

Size = Tuple[int, int]


def _as_sizes(sizes: Sequence[Union[int, Sequence[int]]], stride: int) -> List[Size]:
    out: List[Size] = []
    for s in sizes:
        h, w = (int(s), int(s)) if isinstance(s, (int, float)) else (int(s[0]), int(s[1]))
        if h <= 0 or w <= 0 or h % stride or w % stride:
            raise ValueError(f"multi_scale.sizes: {s!r} must be positive and divisible by {stride} (the largest "
                             "stride of the model)")
        out.append((h, w))
    if not out:
        raise ValueError("multi_scale.sizes is empty; give e.g. [96, 112, 128]")
    return out


class MultiScaleCollate:
    """``collate`` then resize the whole batch to one of ``sizes`` (ints = squares, or [H, W]).

    Boxes and keypoints are scaled with the pixels; ``letterbox`` info is updated so it still maps to the
    original image. The size is drawn from torch's global generator, which the trainer reseeds per sample
    (so a batch's size follows from ``(seed, epoch, its last index)``) and ``build_dataloader`` per worker.
    """

    def __init__(self, sizes: Sequence[Union[int, Sequence[int]]], stride: int = 16, mode: str = "bilinear") -> None:
        self.sizes = _as_sizes(sizes, int(stride))
        self.stride, self.mode = int(stride), mode

    def __repr__(self) -> str:
        return f"MultiScaleCollate(sizes={self.sizes}, stride={self.stride}, mode={self.mode!r})"

    def __call__(self, batch: Sequence[Dict[str, Any]]) -> Tuple[torch.Tensor, List[Dict[str, Any]]]:
        images, targets = collate(batch)
        h, w = self.sizes[int(torch.randint(len(self.sizes), ()))]
        return resize_batch(images, targets, (h, w), self.mode)


def resize_batch(images: torch.Tensor, targets: List[Dict[str, Any]], size: Size,
                 mode: str = "bilinear") -> Tuple[torch.Tensor, List[Dict[str, Any]]]:
    """Resize ``images`` [B, 3, H, W] to ``size`` and scale every target's boxes / keypoints with them."""
    h0, w0 = images.shape[-2:]
    h, w = size
    if (h, w) == (h0, w0):
        return images, targets
    smooth = mode in ("bilinear", "bicubic")
    images = F.interpolate(images, size=(h, w), mode=mode, align_corners=False if smooth else None,
                           antialias=smooth and (h < h0 or w < w0))
    sx, sy = w / w0, h / h0
    out = []
    for t in targets:
        t = dict(t)
        t["boxes"] = t["boxes"] * t["boxes"].new_tensor([sx, sy, sx, sy])
        t["keypoints"] = t["keypoints"] * t["keypoints"].new_tensor([sx, sy])
        info = t.get("letterbox")
        if isinstance(info, LetterboxInfo):
            t["letterbox"] = (LetterboxInfo(scale=info.scale * sx, pad_x=info.pad_x * sx, pad_y=info.pad_y * sy,
                                            orig_h=info.orig_h, orig_w=info.orig_w) if abs(sx - sy) < 1e-9 else None)
        out.append(t)
    return images, out


def build_collate(multi_scale: Optional[Mapping[str, Any]] = None, where: str = "data.train.multi_scale") -> Any:
    """The collate function of a ``data.<split>`` section: plain :func:`collate`, or :class:`MultiScaleCollate`
    from its ``multi_scale: {sizes: [...], stride: 16}`` entry (checked by the schema,
    :func:`blazekit.options.check_multi_scale`: a mistake is a ConfigError naming ``where``)."""
    if not multi_scale:
        return collate
    check_multi_scale(multi_scale, where)
    return MultiScaleCollate(**dict(multi_scale))
