"""Lean numpy pre/post-processing around any raw-output runner, for low-latency deployment.

At batch 1 BlazeFace's network takes about 1 ms on one CPU core in onnxruntime, and ``detector.predict``'s torch
pre/post-processing took almost as long again (~1.2 ms: one small torch op costs microseconds, and
decode touches all 896 anchors). This module does the same work in numpy, faster:

- :class:`LeanPreprocessor` letterboxes with the same geometry as :func:`blazekit.preprocess.letterbox`
  and normalises straight into a preallocated float32 NCHW (or NHWC) buffer;
- :class:`LeanPostprocessor` thresholds the *logits* first (``p >= t`` iff ``logit >= log(t / (1 - t))``),
  so only the few anchors that can pass are decoded, then runs MediaPipe's weighted blending (or
  hard NMS) in numpy;
- :class:`FastDetector` puts them around onnxruntime on the raw ONNX export (or any callable).

Results equal ``detector.predict`` to float32 rounding (tested to 1e-3 px in tests/test_export.py).
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .preprocess import NORMALIZATIONS, LetterboxInfo, letterbox_geometry, resize_for

Detections = Dict[str, np.ndarray]
RawRunner = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]


class LeanPreprocessor:
    """uint8 HxWx3 RGB images -> normalised float32 batch in a reused buffer, plus :class:`LetterboxInfo` each.

    Identical output to ``np.stack([normalize(letterbox(im)[0]) ...])`` without its temporaries.
    ``layout`` ``"NCHW"`` (PyTorch / ONNX) or ``"NHWC"`` (TFLite). The returned array is a view of
    the internal buffer: it is overwritten by the next call.
    """

    def __init__(self, input_size: Sequence[int], normalize: str = "minus_one_one", pad_value: int = 0,
                 resize: str = "letterbox", layout: str = "NCHW") -> None:
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"LeanPreprocessor: unknown normalize {normalize!r}; expected one of "
                             f"{sorted(NORMALIZATIONS)}")
        if resize not in ("letterbox", "stretch"):
            raise ValueError(f"LeanPreprocessor: unknown resize {resize!r}; expected 'letterbox' or 'stretch'")
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"LeanPreprocessor: layout must be 'NCHW' or 'NHWC', got {layout!r}")
        self.size = (int(input_size[0]), int(input_size[1]))
        self.scale, self.offset = NORMALIZATIONS[normalize]
        self.resize, self.layout = resize, layout
        # the pad value goes through the same float32 arithmetic as the pixels
        self.pad = np.float32(np.float32(pad_value) * np.float32(self.scale) + np.float32(self.offset))
        self._buf = np.empty((0,), np.float32)

    def _buffer(self, n: int) -> np.ndarray:
        h, w = self.size
        shape = (n, 3, h, w) if self.layout == "NCHW" else (n, h, w, 3)
        if self._buf.size < n * 3 * h * w:
            self._buf = np.empty(n * 3 * h * w, np.float32)
        return self._buf[:n * 3 * h * w].reshape(shape)


    def __call__(self, images: Sequence[np.ndarray]) -> Tuple[np.ndarray, List[LetterboxInfo]]:
        out = self._buffer(len(images))
        infos = []
        for i, img in enumerate(images):
            if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"image {i}: expected an HxWx3 uint8 RGB numpy array, got "
                                 f"{getattr(img, 'shape', type(img).__name__)} {getattr(img, 'dtype', '')}")
            h, w = img.shape[:2]
            scale, nw, nh, x0, y0 = letterbox_geometry(h, w, self.size, self.resize)
            resized = resize_for(img, nw, nh, scale)
            dst = out[i]
            if (nw, nh) != (self.size[1], self.size[0]):
                dst.fill(self.pad)
            if self.layout == "NCHW":
                region, src = dst[:, y0:y0 + nh, x0:x0 + nw], resized.transpose(2, 0, 1)
            else:
                region, src = dst[y0:y0 + nh, x0:x0 + nw], resized
            np.multiply(src, np.float32(self.scale), out=region, dtype=np.float32)
            region += np.float32(self.offset)
            infos.append(LetterboxInfo(scale=scale, pad_x=float(x0), pad_y=float(y0), orig_h=h, orig_w=w))
        return out, infos


def _iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with boxes [M, 4]; 0 when the union is empty (as blazekit.matcher.batched_box_iou)."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[:, 0] * wh[:, 1]
    area = max(box[2] - box[0], 0) * max(box[3] - box[1], 0)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    union = area + areas - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1e-12), 0).astype(np.float32)


class LeanPostprocessor:
    """Raw outputs of one batch -> per-image detections in original pixels, numpy only.

    Built from a blazekit detector (:meth:`from_detector`) so anchors, coder scales, thresholds and
    the suppression method are the detector's own. Supports ``MediaPipeCoder`` with the
    ``WeightedBlending`` or ``NMS`` post-processors (the shipped models); others raise ValueError.
    """

    def __init__(self, anchors: np.ndarray, coder_scales: Sequence[float], input_size: Sequence[int],
                 score_thr: float, iou_thr: float, max_det: Optional[int], sigmoid_clip: Optional[float],
                 blending: bool = True) -> None:
        self.anchors = np.ascontiguousarray(anchors, dtype=np.float32)
        self.xs, self.ys, self.ws, self.hs = (np.float32(s) for s in coder_scales)
        self.h, self.w = np.float32(input_size[0]), np.float32(input_size[1])
        self.score_thr, self.iou_thr, self.max_det = float(score_thr), float(iou_thr), max_det
        self.sigmoid_clip = sigmoid_clip
        self.blending = blending

    @classmethod
    def from_detector(cls, detector: Any, input_size: Optional[Sequence[int]] = None) -> "LeanPostprocessor":
        from .postprocess import postprocess_settings

        coder = detector.coder
        if type(coder).__name__ != "MediaPipeCoder" or getattr(coder, "uses_priors", False):
            raise ValueError(f"LeanPostprocessor supports MediaPipeCoder only, not {type(coder).__name__}; "
                             "use detector.predict")
        pp = postprocess_settings(detector, "LeanPostprocessor")
        size = tuple(int(s) for s in (input_size or detector.input_size))
        anchors = detector.coding_anchors(size).detach().cpu().numpy()
        return cls(anchors, coder.scales(size), size, pp["score_thr"], pp["iou_thr"], pp["max_det"],
                   pp["sigmoid_clip"], blending=pp["blending"])

    def _logit_threshold(self, thr: float) -> float:
        """Logit below which no score can reach ``thr`` (a margin covers float32 sigmoid rounding)."""
        if thr <= 0:
            return -math.inf
        if thr >= 1:
            return math.inf if thr > 1 else 15.0  # sigmoid rounds to 1.0 in float32 from ~16.6
        return math.log(thr / (1 - thr)) - 1e-3

    def __call__(self, regressors: np.ndarray, logits: np.ndarray, infos: Sequence[LetterboxInfo],
                 score_thr: Optional[float] = None, max_det: Optional[int] = None) -> List[Detections]:
        """``regressors [B, A, 4+2K]``, ``logits [B, A, 1]`` (MediaPipe layout) -> one dict per image."""
        thr = self.score_thr if score_thr is None else float(score_thr)
        limit = self.max_det if max_det is None else int(max_det)
        lt = self._logit_threshold(thr)
        k = (regressors.shape[-1] - 4) // 2
        results = []
        for i, info in enumerate(infos):
            lg = logits[i, :, 0]
            cand = np.flatnonzero(lg >= lt)
            l = lg[cand]
            if self.sigmoid_clip is not None:
                l = np.clip(l, -self.sigmoid_clip, self.sigmoid_clip)
            scores = (np.float32(1) / (np.float32(1) + np.exp(-l))).astype(np.float32)
            keep = scores >= thr
            cand, scores = cand[keep], scores[keep]
            order = np.argsort(-scores, kind="stable")
            cand, scores = cand[order], scores[order]
            boxes, kpts = self._decode(regressors[i, cand], self.anchors[cand], k)
            boxes, scores, kpts = self._suppress(boxes, scores, kpts, limit)
            results.append({
                "boxes": info.to_original(boxes).reshape(-1, 4),
                "scores": scores.astype(np.float32),
                "keypoints": info.to_original(kpts.reshape(len(kpts), 2 * k)).reshape(len(kpts), k, 2),
            })
        return results

    def _decode(self, reg: np.ndarray, anc: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """MediaPipeCoder.decode then scale to input pixels, in the same float32 operation order."""
        acx, acy, aw, ah = anc[:, 0], anc[:, 1], anc[:, 2], anc[:, 3]
        cx = reg[:, 0] / self.xs * aw + acx
        cy = reg[:, 1] / self.ys * ah + acy
        w = reg[:, 2] / self.ws * aw
        h = reg[:, 3] / self.hs * ah
        two = np.float32(2)
        boxes = np.stack((cx - w / two, cy - h / two, cx + w / two, cy + h / two), axis=-1)
        boxes *= np.array([self.w, self.h, self.w, self.h], np.float32)
        kp = reg[:, 4:4 + 2 * k].reshape(-1, k, 2)
        kx = kp[..., 0] / self.xs * aw[:, None] + acx[:, None]
        ky = kp[..., 1] / self.ys * ah[:, None] + acy[:, None]
        kpts = np.stack((kx, ky), axis=-1) * np.array([self.w, self.h], np.float32)
        return boxes, kpts

    def _suppress(self, boxes: np.ndarray, scores: np.ndarray, kpts: np.ndarray, limit: Optional[int]
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Greedy clusters in score order (inputs sorted): weighted mean (blending) or the top box (NMS)."""
        out_b, out_s, out_k = [], [], []
        remaining = np.arange(len(scores))
        while len(remaining) and (limit is None or len(out_s) < limit):
            top = remaining[0]
            overlap = _iou_one(boxes[top], boxes[remaining]) > self.iou_thr
            overlap[0] = True
            cluster = remaining[overlap]
            if self.blending:
                wgt = scores[cluster]
                total = wgt.sum(dtype=np.float32)
                out_b.append((boxes[cluster] * wgt[:, None]).sum(0) / total)
                out_k.append((kpts[cluster] * wgt[:, None, None]).sum(0) / total)
            else:
                out_b.append(boxes[top])
                out_k.append(kpts[top])
            out_s.append(scores[top])
            remaining = remaining[~overlap]
        if not out_s:
            return boxes[:0], scores[:0], kpts[:0]
        return np.stack(out_b), np.asarray(out_s, np.float32), np.stack(out_k)


class FastDetector:
    """``detector.predict`` with lean numpy pre/post around a raw-output runner (default: onnxruntime).

    ``runner(x)`` maps the normalised batch to ``(regressors, logits)``; :meth:`from_detector` exports
    the raw ONNX model and uses an onnxruntime session. ``micro_batch`` splits large batches into
    calls of that many images (onnxruntime's CPU depthwise kernels are fastest at batch 1, see
    ``benchmarks/latency.py``).
    """

    #: images pre-processed together before their network calls
    CHUNK = 64

    def __init__(self, runner: RawRunner, pre: LeanPreprocessor, post: LeanPostprocessor,
                 micro_batch: int = 1) -> None:
        self.runner, self.pre, self.post = runner, pre, post
        self.micro_batch = max(1, int(micro_batch))

    @classmethod
    def from_detector(cls, detector: Any, onnx_path: Union[str, os.PathLike], threads: Optional[int] = None,
                      micro_batch: int = 1, input_size: Optional[Sequence[int]] = None) -> "FastDetector":
        """Export ``detector``'s raw outputs to ``onnx_path`` and run them in onnxruntime with lean pre/post.

        ``input_size`` (H, W) runs the network at another size than ``detector.input_size`` (it is fully
        convolutional), like ``detector.predict(..., input_size=...)``.
        """
        from .export import export_onnx

        size = tuple(int(s) for s in (input_size or detector.input_size))
        LeanPostprocessor.from_detector(detector, size)  # refuses unsupported coders before exporting
        return cls.from_onnx(detector, export_onnx(detector, onnx_path, input_size=size), threads,
                             micro_batch=micro_batch, input_size=size)

    @classmethod
    def from_onnx(cls, detector: Any, onnx_path: Union[str, os.PathLike], threads: Optional[int] = None,
                  micro_batch: int = 1, input_size: Optional[Sequence[int]] = None) -> "FastDetector":
        """Run an existing raw ONNX export of ``detector`` (at ``input_size``) with lean pre/post."""
        from .export import onnx_session

        size = tuple(int(s) for s in (input_size or detector.input_size))
        post = LeanPostprocessor.from_detector(detector, size)
        session = onnx_session(onnx_path, threads)
        name = session.get_inputs()[0].name

        def run(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
            reg, cls_ = session.run(None, {name: x})
            return reg, cls_

        return cls(run, preprocessor_for(detector, input_size=size), post, micro_batch=micro_batch)

    def predict(self, images: Union[np.ndarray, Sequence[np.ndarray]], score_thr: Optional[float] = None,
                max_det: Optional[int] = None) -> List[Detections]:
        """HxWx3 uint8 RGB image(s) -> per image ``boxes`` [N,4], ``scores`` [N], ``keypoints`` [N,K,2]."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        out: List[Detections] = []
        # stage by stage over chunks: back-to-back network calls keep the weights in cache (64 frames: 4-10 %
        # faster than pre/net/post per image); the chunk bounds the float buffer (64 x 128 x 128 x 3 = 12.6 MB)
        chunk = max(self.CHUNK, self.micro_batch)
        for start in range(0, len(images), chunk):
            x, infos = self.pre(images[start:start + chunk])
            regs, logits = [], []
            for i in range(0, len(infos), self.micro_batch):
                reg, logit = self.runner(x[i:i + self.micro_batch])
                regs.append(np.asarray(reg))
                logits.append(np.asarray(logit))
            reg_all = regs[0] if len(regs) == 1 else np.concatenate(regs)
            logit_all = logits[0] if len(logits) == 1 else np.concatenate(logits)
            out.extend(self.post(reg_all, logit_all, infos, score_thr=score_thr, max_det=max_det))
        return out


def preprocessor_for(detector: Any, layout: str = "NCHW", input_size: Optional[Sequence[int]] = None
                     ) -> LeanPreprocessor:
    """A :class:`LeanPreprocessor` with ``detector``'s ``preprocess`` settings and input size (or ``input_size``)."""
    pp = getattr(detector, "preprocess_cfg", {}) or {}
    return LeanPreprocessor(input_size or detector.input_size, normalize=pp.get("normalize", "minus_one_one"),
                            pad_value=int(pp.get("pad_value", 0)), resize=pp.get("resize", "letterbox"),
                            layout=layout)


__all__ = ["LeanPreprocessor", "LeanPostprocessor", "FastDetector", "preprocessor_for"]
