"""Box + keypoint coding: ground truth <-> the regressor values the head is trained to output.

Two conventions:

- :class:`MediaPipeCoder` is MediaPipe's ``TensorsToDetectionsCalculator`` (``reverse_output_order``,
  no exp): the head outputs offsets in *input pixels* relative to fixed-size (w = h = 1) anchors.
  Pretrained MediaPipe / hollance weights only make sense with this coder.
- :class:`SSDCoder` is the classic SSD/RetinaFace encoding (centre offsets in prior units, log w/h,
  variances) relative to the real-scale priors.

Shapes: ``anchors [A, 4]`` (cx, cy, w, h) normalised; boxes xyxy normalised; keypoints ``[..., K, 2]``
normalised; regressors ``[..., 4 + 2K]`` laid out (x, y, w, h, kx0, ky0, kx1, ...).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..registry import BOX_CODERS
from .boxes import cxcywh_to_xyxy, xyxy_to_cxcywh

Size = Union[int, Sequence[int]]


def _hw(input_size: Optional[Size]) -> Optional[Tuple[float, float]]:
    """``128`` or ``[H, W]`` -> (H, W) floats."""
    if input_size is None:
        return None
    if isinstance(input_size, (int, float)):
        return float(input_size), float(input_size)
    h, w = input_size
    return float(h), float(w)


def _split_keypoints(regressors: Tensor) -> Tuple[Tensor, Tensor]:
    """[..., 4 + 2K] -> box part [..., 4], keypoints [..., K, 2]."""
    if regressors.shape[-1] < 4 or (regressors.shape[-1] - 4) % 2:
        raise ValueError(f"regressors must have 4 + 2K values in the last dim, got shape {tuple(regressors.shape)}")
    return regressors[..., :4], regressors[..., 4:].reshape(*regressors.shape[:-1], -1, 2)


@BOX_CODERS.register()
class MediaPipeCoder:
    """MediaPipe decoding, exactly: ``cx = raw_x / x_scale * anchor_w + anchor_cx``, ``w = raw_w / w_scale * anchor_w``.

    ``scale``: None (default) uses the *actual* network input size passed to :meth:`encode` /
    :meth:`decode` (x_scale = w_scale = W, y_scale = h_scale = H), which is what lets a model trained
    at 128 run at a larger test scale. A number or ``[x_scale, y_scale, w_scale, h_scale]`` fixes it.
    """

    #: MediaPipe's anchors (w = h = 1 when fixed_anchor_size) are the coding reference, not the priors
    uses_priors = False

    def __init__(self, scale: Optional[Union[float, Sequence[float]]] = None) -> None:
        if scale is not None:
            if isinstance(scale, (int, float)):
                scale = [float(scale)] * 4
            scale = [float(s) for s in scale]
            if len(scale) != 4 or min(scale) <= 0:
                raise ValueError(f"MediaPipeCoder.scale must be a positive number or 4 numbers "
                                 f"[x_scale, y_scale, w_scale, h_scale], got {scale}")
        self.scale = scale

    def __repr__(self) -> str:
        return f"MediaPipeCoder(scale={self.scale})"

    def scales(self, input_size: Optional[Size] = None) -> Tuple[float, float, float, float]:
        """(x_scale, y_scale, w_scale, h_scale) for this input size."""
        if self.scale is not None:
            return tuple(self.scale)  # type: ignore[return-value]
        hw = _hw(input_size)
        if hw is None:
            raise ValueError("MediaPipeCoder(scale=None) needs input_size=(H, W) (the actual network input size)")
        h, w = hw
        return w, h, w, h

    def decode(self, regressors: Tensor, anchors: Tensor,
               input_size: Optional[Size] = None) -> Tuple[Tensor, Tensor]:
        """Regressors [..., A, 4+2K] -> (boxes xyxy [..., A, 4], keypoints [..., A, K, 2]), normalised."""
        xs, ys, ws, hs = self.scales(input_size)
        box, kpt = _split_keypoints(regressors)
        acx, acy, aw, ah = anchors.to(regressors).unbind(-1)
        cx = box[..., 0] / xs * aw + acx
        cy = box[..., 1] / ys * ah + acy
        w = box[..., 2] / ws * aw
        h = box[..., 3] / hs * ah
        boxes = cxcywh_to_xyxy(torch.stack((cx, cy, w, h), dim=-1))
        kx = kpt[..., 0] / xs * aw[..., None] + acx[..., None]
        ky = kpt[..., 1] / ys * ah[..., None] + acy[..., None]
        return boxes, torch.stack((kx, ky), dim=-1)

    def encode(self, boxes: Tensor, keypoints: Optional[Tensor], anchors: Tensor,
               input_size: Optional[Size] = None) -> Tensor:
        """Inverse of :meth:`decode`: boxes xyxy [..., 4] + keypoints [..., K, 2] -> regressors [..., 4+2K]."""
        xs, ys, ws, hs = self.scales(input_size)
        anchors = anchors.to(boxes)
        acx, acy, aw, ah = anchors.unbind(-1)
        cx, cy, w, h = xyxy_to_cxcywh(boxes).unbind(-1)
        parts = [torch.stack(((cx - acx) / aw * xs, (cy - acy) / ah * ys, w / aw * ws, h / ah * hs), dim=-1)]
        if keypoints is not None and keypoints.shape[-2] > 0:
            kx = (keypoints[..., 0] - acx[..., None]) / aw[..., None] * xs
            ky = (keypoints[..., 1] - acy[..., None]) / ah[..., None] * ys
            parts.append(torch.stack((kx, ky), dim=-1).flatten(-2))
        return torch.cat(parts, dim=-1)

    def loss_scale(self, anchors: Tensor, priors: Tensor, input_size: Optional[Size] = None) -> Tensor:
        """[A, 1]: raw values are input pixels (per anchor size), so divide by the prior's size in pixels.

        A residual of one prior size then costs ~1 in Smooth L1, whatever the level: the geometric
        mean of the prior's x and y extents expressed in raw units.
        """
        xs, ys, _, _ = self.scales(input_size)
        anchors = anchors.to(priors)
        px = priors[:, 2] / anchors[:, 2] * xs
        py = priors[:, 3] / anchors[:, 3] * ys
        return torch.sqrt(px * py).clamp_min(1e-6)[:, None]


@BOX_CODERS.register()
class SSDCoder:
    """SSD encoding against real-scale priors: centre offsets / (v0 * prior size), log(w / prior_w) / v1.

    Keypoints are coded like centres. Use it when training from scratch with non-MediaPipe heads;
    it is not compatible with MediaPipe weights.
    """

    uses_priors = True

    def __init__(self, variances: Sequence[float] = (0.1, 0.2)) -> None:
        if len(variances) != 2 or min(variances) <= 0:
            raise ValueError(f"SSDCoder.variances must be 2 positive numbers, got {list(variances)}")
        self.variances = (float(variances[0]), float(variances[1]))

    def __repr__(self) -> str:
        return f"SSDCoder(variances={self.variances})"

    def decode(self, regressors: Tensor, anchors: Tensor,
               input_size: Optional[Size] = None) -> Tuple[Tensor, Tensor]:
        v0, v1 = self.variances
        box, kpt = _split_keypoints(regressors)
        acx, acy, aw, ah = anchors.to(regressors).unbind(-1)
        cx = box[..., 0] * v0 * aw + acx
        cy = box[..., 1] * v0 * ah + acy
        # clamp before exp: an untrained head must not overflow to inf boxes
        w = torch.exp((box[..., 2] * v1).clamp(max=10.0)) * aw
        h = torch.exp((box[..., 3] * v1).clamp(max=10.0)) * ah
        boxes = cxcywh_to_xyxy(torch.stack((cx, cy, w, h), dim=-1))
        kx = kpt[..., 0] * v0 * aw[..., None] + acx[..., None]
        ky = kpt[..., 1] * v0 * ah[..., None] + acy[..., None]
        return boxes, torch.stack((kx, ky), dim=-1)

    def encode(self, boxes: Tensor, keypoints: Optional[Tensor], anchors: Tensor,
               input_size: Optional[Size] = None) -> Tensor:
        v0, v1 = self.variances
        acx, acy, aw, ah = anchors.to(boxes).unbind(-1)
        cx, cy, w, h = xyxy_to_cxcywh(boxes).unbind(-1)
        eps = 1e-6  # degenerate (padding) boxes would give log(0)
        parts = [torch.stack(((cx - acx) / (v0 * aw), (cy - acy) / (v0 * ah),
                              torch.log(w.clamp_min(eps) / aw) / v1, torch.log(h.clamp_min(eps) / ah) / v1), dim=-1)]
        if keypoints is not None and keypoints.shape[-2] > 0:
            kx = (keypoints[..., 0] - acx[..., None]) / (v0 * aw[..., None])
            ky = (keypoints[..., 1] - acy[..., None]) / (v0 * ah[..., None])
            parts.append(torch.stack((kx, ky), dim=-1).flatten(-2))
        return torch.cat(parts, dim=-1)

    def loss_scale(self, anchors: Tensor, priors: Tensor, input_size: Optional[Size] = None) -> Tensor:
        """SSD targets are already in prior units (divided by the variances): no extra scaling."""
        return torch.ones(priors.shape[0], 1, dtype=priors.dtype, device=priors.device)


__all__ = ["MediaPipeCoder", "SSDCoder"]
