"""Running an exported detector: onnxruntime sessions, lean pre-processing and :class:`OnnxDetector`.

:class:`LeanPreprocessor` letterboxes with the same geometry as :func:`blazekit.preprocess.letterbox` (every
``resize`` mode) and normalises straight into a reused float32 buffer (bit-identical to ``letterbox`` + ``normalize``).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..preprocess import (NORMALIZATIONS, RESIZE_MODES, LetterboxInfo, letterbox_geometry, mediapipe_letterbox,
                          resize_for)
from .export import POSTPROCESS_OUTPUTS

PathLike = Union[str, os.PathLike]


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
        if resize not in RESIZE_MODES:
            raise ValueError(f"LeanPreprocessor: unknown resize {resize!r}; expected one of {list(RESIZE_MODES)}")
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"LeanPreprocessor: layout must be 'NCHW' or 'NHWC', got {layout!r}")
        self.size = (int(input_size[0]), int(input_size[1]))
        self.scale, self.offset = NORMALIZATIONS[normalize]
        self.resize, self.layout, self.pad_value = resize, layout, int(pad_value)
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
            dst = out[i]
            if self.resize == "mediapipe":  # fills the whole input, padding included
                resized, info = mediapipe_letterbox(img, self.size, self.pad_value)
                nh, nw, x0, y0 = self.size[0], self.size[1], 0, 0
            else:
                scale, nw, nh, x0, y0 = letterbox_geometry(h, w, self.size, self.resize)
                resized = resize_for(img, nw, nh, scale)
                info = LetterboxInfo(scale=scale, pad_x=float(x0), pad_y=float(y0), orig_h=h, orig_w=w)
            if (nw, nh) != (self.size[1], self.size[0]):
                dst.fill(self.pad)
            if self.layout == "NCHW":
                region, src = dst[:, y0:y0 + nh, x0:x0 + nw], resized.transpose(2, 0, 1)
            else:
                region, src = dst[y0:y0 + nh, x0:x0 + nw], resized
            np.multiply(src, np.float32(self.scale), out=region, dtype=np.float32)
            region += np.float32(self.offset)
            infos.append(info)
        return out, infos


def preprocessor_for(detector: Any, layout: str = "NCHW", input_size: Optional[Sequence[int]] = None
                     ) -> LeanPreprocessor:
    """A :class:`LeanPreprocessor` with ``detector``'s ``preprocess`` settings and input size (or ``input_size``)."""
    pp = getattr(detector, "preprocess_cfg", {}) or {}
    return LeanPreprocessor(input_size or detector.input_size, normalize=pp.get("normalize", "minus_one_one"),
                            pad_value=int(pp.get("pad_value", 0)), resize=pp.get("resize", "letterbox"),
                            layout=layout)


def onnx_session(path: PathLike, threads: Optional[int] = None) -> Any:
    """An onnxruntime CPU session with full graph optimisation; ``threads`` fixes intra-op threads.

    Raises ImportError with the install hint when onnxruntime is missing.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError("onnxruntime is not installed: pip install -e .[export]") from exc
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def verify_onnx(detector: nn.Module, path: PathLike, input_size: Optional[Sequence[int]] = None,
                batch: int = 2, seed: int = 0) -> float:
    """Max abs difference between a raw-output ONNX file (onnxruntime) and ``detector.raw`` on random input."""
    size = tuple(int(s) for s in (input_size or detector.input_size))
    x = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    sess = onnx_session(path)
    got = sess.run(None, {"images": x.numpy()})
    p = next(detector.parameters())
    with torch.no_grad():
        ref = [t.detach().cpu().numpy() for t in detector.eval().raw(x.to(p.device))]
    return max(float(np.abs(r - g).max()) for r, g in zip(ref, got))


class OnnxDetector:
    """``detector.predict`` on onnxruntime: lean letterbox + normalise, the with-postprocess graph, map back.

    The deployment twin of ``BlazeFace.predict`` (same outputs: per image ``boxes`` [N,4] / ``scores`` [N] /
    ``keypoints`` [N,K,2] in original pixels, numpy float32), with decoding and NMS inside the graph.
    ``micro_batch`` splits large batches: onnxruntime's depthwise kernels run fastest on small
    batches on CPU (``benchmarks/latency.py``), so throughput is best with a few images per call.
    :class:`blazekit.deploy.fastpath.FastDetector` does the post-processing in numpy instead.
    """

    def __init__(self, path: PathLike, input_size: Sequence[int], normalize: str = "minus_one_one",
                 pad_value: int = 0, resize: str = "letterbox", threads: Optional[int] = None,
                 micro_batch: int = 1) -> None:
        self.session = onnx_session(path, threads)
        names = [o.name for o in self.session.get_outputs()]
        if names != POSTPROCESS_OUTPUTS:
            raise ValueError(f"{path}: outputs {names}, expected {POSTPROCESS_OUTPUTS}; export with "
                             "with_postprocess=True (tools/export.py --with-postprocess)")
        self.pre = LeanPreprocessor(input_size, normalize=normalize, pad_value=pad_value, resize=resize)
        self.micro_batch = max(1, int(micro_batch))

    def predict(self, images: Union[np.ndarray, Sequence[np.ndarray]]) -> List[Dict[str, Any]]:
        """HxWx3 uint8 RGB image(s) -> one dict per image, like ``detector.predict``."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        out: List[Dict[str, Any]] = []
        for start in range(0, len(images), self.micro_batch):
            x, infos = self.pre(images[start:start + self.micro_batch])
            boxes, scores, kpts, bidx = self.session.run(None, {"images": x})
            for i, info in enumerate(infos):
                m = bidx == i
                k = kpts[m]
                out.append({"boxes": info.to_original(boxes[m]).reshape(-1, 4), "scores": scores[m],
                            "keypoints": info.to_original(k.reshape(len(k), 2 * k.shape[1])).reshape(k.shape)})
        return out


__all__ = ["LeanPreprocessor", "OnnxDetector", "onnx_session", "preprocessor_for", "verify_onnx"]
