"""Image -> network input, and network coordinates -> original pixels.

One implementation shared by the validation transforms, ``Detector.predict`` and export, so the
model sees the same pixels in training, evaluation and deployment.

``model.preprocess.resize`` picks how an image is fitted into the input (:data:`RESIZE_MODES`):
``letterbox`` (area-averaged resize, padded evenly), ``stretch`` (aspect-matched images only) or ``mediapipe``:
MediaPipe's own ``ImageToTensorCalculator`` on CPU, reproduced pixel for pixel (:func:`mediapipe_letterbox`), so
``detector.predict`` on a full-size photo gives what MediaPipe's FaceDetector gives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import cv2
import numpy as np

#: ``model.preprocess.resize`` values (see :func:`letterbox`)
RESIZE_MODES = ("letterbox", "stretch", "mediapipe")

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

    ``letterbox`` keeps the aspect ratio and pads evenly on both sides;
    ``stretch`` resizes to exactly ``out_hw``, which only keeps geometry for square inputs and is
    given as scale x with ``pad`` 0 (non-uniform scale is not representable, so it is refused for
    non-matching aspect ratios); ``mediapipe`` is :func:`mediapipe_letterbox`.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    if mode == "mediapipe":
        return mediapipe_letterbox(image, out_hw, pad_value)
    h, w = image.shape[:2]
    scale, nw, nh, x0, y0 = letterbox_geometry(h, w, out_hw, mode)
    resized = resize_for(image, nw, nh, scale)
    out = np.full((int(out_hw[0]), int(out_hw[1]), 3), pad_value, dtype=np.uint8)
    out[y0:y0 + nh, x0:x0 + nw] = resized
    return out, LetterboxInfo(scale=scale, pad_x=float(x0), pad_y=float(y0), orig_h=h, orig_w=w)


def letterbox_geometry(h: int, w: int, out_hw: Tuple[int, int], mode: str = "letterbox"
                       ) -> Tuple[float, int, int, int, int]:
    """``(scale, new_w, new_h, x0, y0)``: where an HxW image lands in ``out_hw`` (the one placement rule of the
    ``letterbox`` and ``stretch`` modes; ``mediapipe`` places at fractional offsets, see :func:`mediapipe_roi`)."""
    oh, ow = int(out_hw[0]), int(out_hw[1])
    if mode == "stretch":
        if abs(h / w - oh / ow) > 1e-6:
            raise ValueError("stretch resize needs the image aspect ratio to match the input; use letterbox")
        return ow / w, ow, oh, 0, 0
    if mode != "letterbox":
        raise ValueError(f"unknown resize mode {mode!r}; expected 'letterbox' or 'stretch' (or 'mediapipe', "
                         "which has no integer placement: see mediapipe_roi)")
    scale = min(oh / h, ow / w)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    return scale, nw, nh, int(np.floor((ow - nw) / 2.0)), int(np.floor((oh - nh) / 2.0))


def resize_for(image: np.ndarray, nw: int, nh: int, scale: float) -> np.ndarray:
    """``image`` resized to ``nw`` x ``nh``: area averaging when shrinking (no aliasing), bilinear when growing."""
    h, w = image.shape[:2]
    if (nw, nh) == (w, h):
        return image
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def mediapipe_roi(h: int, w: int, out_hw: Sequence[int]) -> Tuple[float, float]:
    """``(roi_w, roi_h)``: MediaPipe's ``PadRoi`` with ``keep_aspect_ratio``, in its float32 arithmetic.

    The region, centred on the HxW image, that MediaPipe maps onto the whole input: the image grown along one
    side to the input's aspect ratio (square for BlazeFace). Its part outside the image is the padding.
    """
    f = np.float32
    tensor_ar, roi_ar = f(int(out_hw[0])) / f(int(out_hw[1])), f(h) / f(w)
    if tensor_ar > roi_ar:
        return float(f(w)), float(f(w) * tensor_ar)
    return float(f(h) / tensor_ar), float(f(h))


def mediapipe_letterbox(image: np.ndarray, out_hw: Sequence[int], pad_value: int = 0
                        ) -> Tuple[np.ndarray, LetterboxInfo]:
    """HxWx3 uint8 -> ``out_hw`` as MediaPipe's ``ImageToTensorCalculator`` makes it on CPU, and the mapping back.

    MediaPipe maps the corners of :func:`mediapipe_roi` onto the input's corners (``cv::getPerspectiveTransform``)
    and samples with ``cv::warpPerspective`` ``INTER_LINEAR`` and a constant border (MediaPipe's face detector:
    zero; here ``pad_value``): no antialiasing when
    shrinking, and output pixel ``u`` samples the image at ``x0 + u / scale`` (corner-aligned, not
    centre-aligned like ``cv2.resize``). Detections come back through the same corner mapping, which
    ``LetterboxInfo`` expresses as ``scale`` and fractional pads. The sampling is OpenCV's fixed-point warp
    (coordinates rounded to 1/32 pixel, 15-bit weights), which MediaPipe's bundled OpenCV runs but recent OpenCV
    wheels (5.1 here) replace by a float path in ``cv2.warpPerspective`` (scores then differ by up to 5e-3); it is
    rebuilt here with ``cv2.remap`` on fixed-point maps, so the pixels equal MediaPipe's whatever OpenCV is
    installed.
    """
    h, w = image.shape[:2]
    oh, ow = int(out_hw[0]), int(out_hw[1])
    roi_w, roi_h = mediapipe_roi(h, w, (oh, ow))
    # cv::boxPoints of the unrotated ROI: bottom-left, top-left, top-right, bottom-right -> the input's corners
    src = cv2.boxPoints(((w / 2.0, h / 2.0), (roi_w, roi_h), 0.0)).astype(np.float32)
    dst = np.array([[0, oh], [0, 0], [ow, 0], [ow, oh]], np.float32)
    inv = cv2.invert(cv2.getPerspectiveTransform(src, dst), flags=cv2.DECOMP_LU)[1]
    xy, alpha = _fixed_point_maps(inv, oh, ow)
    out = cv2.remap(image, xy, alpha, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                    borderValue=(int(pad_value),) * 3)
    scale = ow / roi_w
    return out, LetterboxInfo(scale=scale, pad_x=(roi_w - w) / 2.0 * scale, pad_y=(roi_h - h) / 2.0 * scale,
                              orig_h=h, orig_w=w)


#: OpenCV's INTER_BITS: warps round source coordinates to 1/32 pixel
_INTER_BITS = 5
_INTER_TAB = 1 << _INTER_BITS


def _fixed_point_maps(m: np.ndarray, oh: int, ow: int) -> Tuple[np.ndarray, np.ndarray]:
    """The ``CV_16SC2`` / ``CV_16UC1`` maps OpenCV's classic ``warpPerspective`` builds for ``remap`` from the
    inverse matrix ``m``: the same double arithmetic, evaluated per 64-column block like its invoker, and the
    same round-half-even to 1/32 pixel."""
    bh = min(16, oh)
    bw = min(1024 // bh, ow)
    u = np.arange(ow, dtype=np.float64)
    x_block = np.floor(u / bw) * bw  # the block's first column, where OpenCV evaluates the row's X0/Y0/W0
    x1 = u - x_block
    v = np.arange(oh, dtype=np.float64)[:, None]
    x0 = m[0, 0] * x_block + m[0, 1] * v + m[0, 2]
    y0 = m[1, 0] * x_block + m[1, 1] * v + m[1, 2]
    w0 = m[2, 0] * x_block + m[2, 1] * v + m[2, 2]
    wt = w0 + m[2, 0] * x1
    with np.errstate(divide="ignore"):
        wt = np.where(wt != 0, _INTER_TAB / wt, 0.0)
    lim = (float(np.iinfo(np.int32).min), float(np.iinfo(np.int32).max))
    fx = np.rint(np.clip((x0 + m[0, 0] * x1) * wt, *lim)).astype(np.int64)
    fy = np.rint(np.clip((y0 + m[1, 0] * x1) * wt, *lim)).astype(np.int64)
    xy = np.clip(np.stack([fx >> _INTER_BITS, fy >> _INTER_BITS], axis=-1), -32768, 32767).astype(np.int16)
    alpha = ((fy & (_INTER_TAB - 1)) * _INTER_TAB + (fx & (_INTER_TAB - 1))).astype(np.uint16)
    return xy, alpha


def normalize(image: np.ndarray, mode: str = "minus_one_one") -> np.ndarray:
    """uint8 HxWx3 -> float32 3xHxW in the model's input range."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {mode!r}; expected one of {sorted(NORMALIZATIONS)}")
    scale, offset = NORMALIZATIONS[mode]
    return (np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32) * scale + offset)
