"""Lean numpy post-processing around any raw-output runner, for low-latency CPU deployment.

``detector.predict``'s torch post-processing costs about as much as the network itself at batch 1 (one small
torch op costs microseconds, and decoding touches every anchor; RESULTS.md has the numbers). Here the same work
is done in numpy:

- :class:`LeanPostprocessor` thresholds the *logits* first (``p >= t`` iff ``logit >= log(t / (1 - t))``),
  so only the few anchors that can pass are decoded, then runs MediaPipe's weighted blending (or
  hard NMS) in numpy -- the one numpy copy of :func:`blazekit.models.postprocess.suppress`, kept because this path
  runs without torch ops;
- :class:`FastDetector` puts it and :class:`~blazekit.deploy.runtime.LeanPreprocessor` around onnxruntime on
  the raw ONNX export (or any callable).

Results equal ``detector.predict`` to float32 rounding (tests/deploy/test_export.py).
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..models.postprocess import postprocess_settings
from ..preprocess import LetterboxInfo
from .export import export_onnx
from .runtime import LeanPreprocessor, onnx_session, preprocessor_for

Detections = Dict[str, np.ndarray]
RawRunner = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]


def _iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with boxes [M, 4]; 0 when the union is empty, flipped boxes empty.

    A numpy copy of :func:`blazekit.models.boxes.box_iou` on purpose: this path runs without torch ops. Areas in
    float64: the squares of finite float32 coordinates always fit (a diverged model's 1e20 px boxes overflowed
    float32)."""
    box, boxes = np.asarray(box, np.float64), np.asarray(boxes, np.float64)
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
        size = tuple(int(s) for s in (input_size or detector.input_size))
        LeanPostprocessor.from_detector(detector, size)  # refuses unsupported coders before exporting
        return cls.from_onnx(detector, export_onnx(detector, onnx_path, input_size=size), threads,
                             micro_batch=micro_batch, input_size=size)

    @classmethod
    def from_onnx(cls, detector: Any, onnx_path: Union[str, os.PathLike], threads: Optional[int] = None,
                  micro_batch: int = 1, input_size: Optional[Sequence[int]] = None) -> "FastDetector":
        """Run an existing raw ONNX export of ``detector`` (at ``input_size``) with lean pre/post."""
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
        # stage by stage over chunks: back-to-back network calls keep the weights in cache (faster than
        # pre/net/post per image); the chunk bounds the float buffer (64 x 128 x 128 x 3 floats = 12.6 MB)
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


__all__ = ["FastDetector", "LeanPostprocessor", "LeanPreprocessor", "preprocessor_for"]
