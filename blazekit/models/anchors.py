"""SSD anchors, a faithful port of MediaPipe's ``SsdAnchorsCalculator`` (ANCHOR_GENERATORS).

Anchors are generated from the config for whatever input size the network runs at, never loaded
from a stored ``.npy``: that is what lets the detector run at a larger test scale or a non-square
input. All boxes are ``(cx, cy, w, h)`` normalized to the input (x by width, y by height).

MediaPipe's options are accepted under their own names. Consecutive layers with the same stride are
merged into one feature level (their anchors interleave per location), exactly as MediaPipe does.
Centres are computed in float32 like the C++ code, so the front/back configs reproduce MediaPipe's
896 anchors bit for bit.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..registry import ANCHOR_GENERATORS

Size = Union[float, Sequence[float]]


def _calculate_scale(min_scale: float, max_scale: float, stride_index: int, num_strides: int) -> float:
    """MediaPipe's ``CalculateScale`` (double arithmetic, returned as float32)."""
    if num_strides == 1:
        return float(np.float32((min_scale + max_scale) * 0.5))
    return float(np.float32(min_scale + (max_scale - min_scale) * 1.0 * stride_index / (num_strides - 1.0)))


@ANCHOR_GENERATORS.register()
class SSDAnchorGenerator:
    """MediaPipe SSD anchors, plus explicit per-level ``sizes`` and non-square inputs.

    Args (MediaPipe ``SsdAnchorsCalculatorOptions`` names):
        strides: one stride per layer; consecutive equal strides form one feature level.
        num_layers: number of layers (defaults to ``len(strides)``; checked when given).
        min_scale, max_scale: anchor scales, linearly interpolated over the layers (fractions of the input).
        aspect_ratios: w/h ratios of the anchors of each layer.
        interpolated_scale_aspect_ratio: adds one anchor of scale ``sqrt(s_i * s_{i+1})`` per layer (<= 0: off).
        reduce_boxes_in_lowest_layer: layer 0 uses scales (0.1, s, s) with ratios (1, 2, 0.5).
        anchor_offset_x, anchor_offset_y: centre offset inside a cell (0.5 = centre).
        fixed_anchor_size: ``anchors()`` returns w = h = 1 (MediaPipe's BlazeFace convention: offsets are
            decoded in input-size units). ``priors()`` always returns the real scales.
        feature_map_height, feature_map_width: explicit grid per layer instead of ``ceil(size / stride)``.
        input_size_height, input_size_width: default input size when a method gets ``input_size=None``.
        sizes: explicit anchor sizes *in input pixels*, one list per feature level; each entry is a side
            length (square anchor) or ``[w, h]``. Replaces the scale/aspect-ratio rules when given, and
            keeps anchors square in pixels on non-square inputs.
    """

    def __init__(self, strides: Sequence[int] = (8, 16, 16, 16), num_layers: Optional[int] = None,
                 min_scale: Optional[float] = None, max_scale: Optional[float] = None,
                 aspect_ratios: Sequence[float] = (1.0,), interpolated_scale_aspect_ratio: float = 1.0,
                 reduce_boxes_in_lowest_layer: bool = False, anchor_offset_x: float = 0.5,
                 anchor_offset_y: float = 0.5, fixed_anchor_size: bool = False,
                 feature_map_height: Optional[Sequence[int]] = None, feature_map_width: Optional[Sequence[int]] = None,
                 input_size_height: Optional[int] = None, input_size_width: Optional[int] = None,
                 sizes: Optional[Sequence[Sequence[Size]]] = None) -> None:
        name = "SSDAnchorGenerator"
        self.strides = [int(s) for s in strides]
        if not self.strides or any(s <= 0 for s in self.strides):
            raise ValueError(f"{name}: 'strides' must be a non-empty list of positive ints, got {list(strides)}")
        if num_layers is not None and int(num_layers) != len(self.strides):
            raise ValueError(f"{name}: num_layers={num_layers} but {len(self.strides)} strides {self.strides}; "
                             "give one stride per layer")
        self.num_layers = len(self.strides)
        if (feature_map_height is None) != (feature_map_width is None):
            raise ValueError(f"{name}: give both feature_map_height and feature_map_width, or neither")
        if feature_map_height is not None and not (
                len(feature_map_height) == len(feature_map_width) == self.num_layers):
            raise ValueError(f"{name}: feature_map_height/width need {self.num_layers} entries (one per layer)")
        self.feature_map_height = None if feature_map_height is None else [int(v) for v in feature_map_height]
        self.feature_map_width = None if feature_map_width is None else [int(v) for v in feature_map_width]
        self.min_scale, self.max_scale = min_scale, max_scale
        self.aspect_ratios = [float(a) for a in aspect_ratios]
        self.interpolated_scale_aspect_ratio = float(interpolated_scale_aspect_ratio)
        self.reduce_boxes_in_lowest_layer = bool(reduce_boxes_in_lowest_layer)
        self.anchor_offset_x, self.anchor_offset_y = float(anchor_offset_x), float(anchor_offset_y)
        self.fixed_anchor_size = bool(fixed_anchor_size)
        self.default_size = None if input_size_height is None else (int(input_size_height),
                                                                    int(input_size_width or input_size_height))
        # Feature levels: [first_layer, end_layer) of consecutive equal strides.
        self._levels: List[Tuple[int, int]] = []
        i = 0
        while i < self.num_layers:
            j = i
            while j < self.num_layers and self.strides[j] == self.strides[i]:
                j += 1
            self._levels.append((i, j))
            i = j
        self.sizes = None if sizes is None else self._check_sizes(sizes)
        if self.sizes is None:
            if min_scale is None or max_scale is None:
                raise ValueError(f"{name}: give min_scale and max_scale (MediaPipe options) or explicit 'sizes'")
            if not self.aspect_ratios and self.interpolated_scale_aspect_ratio <= 0:
                raise ValueError(f"{name}: no anchors per location: aspect_ratios is empty and "
                                 "interpolated_scale_aspect_ratio <= 0")
        self._scale_cache: Optional[List[List[Tuple[float, float]]]] = None

    def _check_sizes(self, sizes: Sequence[Sequence[Size]]) -> List[List[Tuple[float, float]]]:
        if len(sizes) != len(self._levels):
            raise ValueError(f"SSDAnchorGenerator: 'sizes' has {len(sizes)} entries but strides {self.strides} give "
                             f"{len(self._levels)} feature levels (strides {self.strides_per_level()}); "
                             "give one list of sizes per level")
        out = []
        for li, level in enumerate(sizes):
            if isinstance(level, (int, float)) or not level:
                raise ValueError(f"SSDAnchorGenerator: sizes[{li}] must be a non-empty list, got {level!r}")
            parsed = []
            for s in level:
                square = isinstance(s, (int, float))
                if not square and (not isinstance(s, Sequence) or len(s) != 2):
                    raise ValueError(f"SSDAnchorGenerator: sizes[{li}] entry {s!r} must be a side length or [w, h]")
                w, h = (float(s), float(s)) if square else (float(s[0]), float(s[1]))
                if w <= 0 or h <= 0:
                    raise ValueError(f"SSDAnchorGenerator: sizes[{li}] entry {s!r} must be a positive side or [w, h]")
                parsed.append((w, h))
            out.append(parsed)
        return out

    # ------------------------------------------------------------------ structure
    def strides_per_level(self) -> List[int]:
        """Stride of each feature level (merged layers)."""
        return [self.strides[a] for a, _ in self._levels]

    def _level_scales(self) -> List[List[Tuple[float, float]]]:
        """Per level, the (w, h) scales of the anchors at one location, in MediaPipe's order."""
        if self._scale_cache is not None:
            return self._scale_cache
        out = []
        n = self.num_layers
        for a, b in self._levels:
            ratios: List[float] = []
            scales: List[float] = []
            for layer in range(a, b):
                scale = _calculate_scale(self.min_scale, self.max_scale, layer, n)
                if layer == 0 and self.reduce_boxes_in_lowest_layer:
                    ratios += [1.0, 2.0, 0.5]
                    scales += [0.1, scale, scale]
                    continue
                for r in self.aspect_ratios:
                    ratios.append(r)
                    scales.append(scale)
                if self.interpolated_scale_aspect_ratio > 0.0:
                    nxt = 1.0 if layer == n - 1 else _calculate_scale(self.min_scale, self.max_scale, layer + 1, n)
                    scales.append(float(np.sqrt(np.float32(scale) * np.float32(nxt), dtype=np.float32)))
                    ratios.append(self.interpolated_scale_aspect_ratio)
            level = []
            for s, r in zip(scales, ratios):
                rs = np.float32(math.sqrt(r))
                level.append((float(np.float32(s) * rs), float(np.float32(s) / rs)))
            out.append(level)
        self._scale_cache = out
        return out

    def _resolve(self, input_size: Optional[Sequence[int]]) -> Tuple[int, int]:
        if input_size is None:
            if self.default_size is None:
                raise ValueError("SSDAnchorGenerator: input_size (H, W) is required (or set input_size_height/width)")
            return self.default_size
        if isinstance(input_size, int):
            return int(input_size), int(input_size)
        if len(input_size) != 2:
            raise ValueError(f"SSDAnchorGenerator: input_size must be (H, W), got {input_size!r}")
        return int(input_size[0]), int(input_size[1])

    def num_anchors_per_level(self, input_size: Optional[Sequence[int]] = None) -> List[int]:
        """Anchors per grid location of each feature level (what the head's convs predict), e.g. [2, 6]."""
        if self.sizes is not None:
            return [len(s) for s in self.sizes]
        return [len(s) for s in self._level_scales()]

    def grid_sizes(self, input_size: Optional[Sequence[int]] = None) -> List[Tuple[int, int]]:
        """``(h, w)`` grid of each feature level: ``ceil(H / stride), ceil(W / stride)``."""
        H, W = self._resolve(input_size)
        out = []
        for a, _ in self._levels:
            if self.feature_map_height is not None:
                out.append((self.feature_map_height[a], self.feature_map_width[a]))
            else:
                s = self.strides[a]
                out.append((int(math.ceil(H / s)), int(math.ceil(W / s))))
        return out

    # ------------------------------------------------------------------ boxes
    def _generate(self, input_size: Optional[Sequence[int]], real_sizes: bool) -> torch.Tensor:
        H, W = self._resolve(input_size)
        if self.sizes is not None:
            per_level = [[(w / W, h / H) for w, h in level] for level in self.sizes]
        else:
            per_level = self._level_scales()
        chunks = []
        for (fh, fw), wh in zip(self.grid_sizes((H, W)), per_level):
            # float32 like MediaPipe: (x + offset) * 1.0f / feature_map_width
            cx = (np.arange(fw, dtype=np.float32) + np.float32(self.anchor_offset_x)) / np.float32(fw)
            cy = (np.arange(fh, dtype=np.float32) + np.float32(self.anchor_offset_y)) / np.float32(fh)
            n = len(wh)
            box = np.empty((fh, fw, n, 4), dtype=np.float32)
            box[..., 0] = cx[None, :, None]
            box[..., 1] = cy[:, None, None]
            if real_sizes or not self.fixed_anchor_size:
                box[..., 2] = np.asarray([w for w, _ in wh], dtype=np.float32)
                box[..., 3] = np.asarray([h for _, h in wh], dtype=np.float32)
            else:
                box[..., 2:] = 1.0
            chunks.append(box.reshape(-1, 4))
        return torch.from_numpy(np.concatenate(chunks, axis=0))

    def anchors(self, input_size: Optional[Sequence[int]] = None) -> torch.Tensor:
        """``[A, 4]`` float32 (cx, cy, w, h), exactly MediaPipe's (w = h = 1 when ``fixed_anchor_size``)."""
        return self._generate(input_size, real_sizes=False)

    def priors(self, input_size: Optional[Sequence[int]] = None) -> torch.Tensor:
        """``[A, 4]`` same centres as :meth:`anchors` with the real anchor sizes (for matching / loss scale)."""
        return self._generate(input_size, real_sizes=True)

    def __repr__(self) -> str:
        how = f"sizes={self.sizes}" if self.sizes is not None else (
            f"min_scale={self.min_scale}, max_scale={self.max_scale}, aspect_ratios={self.aspect_ratios}")
        return (f"SSDAnchorGenerator(strides={self.strides}, {how}, "
                f"fixed_anchor_size={self.fixed_anchor_size})")


__all__ = ["SSDAnchorGenerator"]
