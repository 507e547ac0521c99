"""Image -> network input, and network coordinates -> original pixels.

One implementation shared by the validation transforms, ``Detector.predict`` and export, so the
model sees the same pixels in training, evaluation and deployment.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import cv2
import numpy as np

#: name -> (scale, offset): network input = uint8 * scale + offset
NORMALIZATIONS = {
    "minus_one_one": (1.0 / 127.5, -1.0),  # MediaPipe BlazeFace: RGB in [-1, 1]
    "zero_one": (1.0 / 255.0, 0.0),
}


@dataclass
class LetterboxInfo:
    """How an original image was placed into the network input (for mapping results back)."""

    scale: float  # input pixels per original pixel
    pad_x: float  # left padding, input pixels
    pad_y: float  # top padding, input pixels
    orig_h: int
    orig_w: int

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        """Input-pixel coordinates [..., 2k] (x, y interleaved) -> original-image pixels."""
        out = np.asarray(xy, dtype=np.float32).copy()
        out[..., 0::2] = (out[..., 0::2] - self.pad_x) / self.scale
        out[..., 1::2] = (out[..., 1::2] - self.pad_y) / self.scale
        return out


def letterbox(image: np.ndarray, out_hw: Sequence[int], pad_value: int = 0,
              mode: str = "letterbox") -> Tuple[np.ndarray, LetterboxInfo]:
    """Resize ``image`` (HxWx3 uint8) into ``out_hw``.

    ``letterbox`` keeps the aspect ratio and pads evenly on both sides (MediaPipe's default);
    ``stretch`` resizes to exactly ``out_hw``, which only keeps geometry for square inputs and is
    given as scale x with ``pad`` 0 (non-uniform scale is not representable, so it is refused for
    non-matching aspect ratios).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    h, w = image.shape[:2]
    scale, nw, nh, x0, y0 = letterbox_geometry(h, w, out_hw, mode)
    resized = resize_for(image, nw, nh, scale)
    out = np.full((int(out_hw[0]), int(out_hw[1]), 3), pad_value, dtype=np.uint8)
    out[y0:y0 + nh, x0:x0 + nw] = resized
    return out, LetterboxInfo(scale=scale, pad_x=float(x0), pad_y=float(y0), orig_h=h, orig_w=w)


def letterbox_geometry(h: int, w: int, out_hw: Tuple[int, int], mode: str = "letterbox"
                       ) -> Tuple[float, int, int, int, int]:
    """``(scale, new_w, new_h, x0, y0)``: where an HxW image lands in ``out_hw`` (the one placement rule)."""
    oh, ow = int(out_hw[0]), int(out_hw[1])
    if mode == "stretch":
        if abs(h / w - oh / ow) > 1e-6:
            raise ValueError("stretch resize needs the image aspect ratio to match the input; use letterbox")
        return ow / w, ow, oh, 0, 0
    if mode != "letterbox":
        raise ValueError(f"unknown resize mode {mode!r}; expected 'letterbox' or 'stretch'")
    scale = min(oh / h, ow / w)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    return scale, nw, nh, int(np.floor((ow - nw) / 2.0)), int(np.floor((oh - nh) / 2.0))


def resize_for(image: np.ndarray, nw: int, nh: int, scale: float) -> np.ndarray:
    """``image`` resized to ``nw`` x ``nh``: area averaging when shrinking (no aliasing), bilinear when growing."""
    h, w = image.shape[:2]
    if (nw, nh) == (w, h):
        return image
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def normalize(image: np.ndarray, mode: str = "minus_one_one") -> np.ndarray:
    """uint8 HxWx3 -> float32 3xHxW in the model's input range."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {mode!r}; expected one of {sorted(NORMALIZATIONS)}")
    scale, offset = NORMALIZATIONS[mode]
    return (np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32) * scale + offset)
