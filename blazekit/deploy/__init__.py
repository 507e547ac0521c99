"""Deployment: BatchNorm folding, ONNX export, onnxruntime and the numpy fast path.

Modules depend one way (no circle), and nothing in ``blazekit.models`` or the engine imports them (the evaluator,
``blazekit.evaluation.evaluator``, runs the fast path):

- ``fuse``: :func:`fuse_bn` folds BatchNorm into the convolutions (fast eager inference, export);
- ``channel_align``: :func:`align_channels` widens a BN-folded model to SIMD-friendly channel counts;
- ``export``: :func:`export_onnx` (raw outputs, or post-processing inside the graph);
- ``tflite``: :func:`export_tflite` writes the weights back into MediaPipe's own ``.tflite`` (needs only ``fuse``);
- ``runtime``: :func:`onnx_session`, :func:`verify_onnx`, :class:`LeanPreprocessor`, :class:`OnnxDetector`;
- ``fastpath``: :class:`LeanPostprocessor` (numpy) and :class:`FastDetector` around any raw-output runner;
- ``backends``: how the tools run the network (``--backend torch|onnxruntime|auto``): :func:`resolve_backend`,
  :func:`backend_problem`, :func:`onnx_predictor`.

``fuse <- channel_align <- export <- runtime <- fastpath <- backends``, ``fuse <- tflite``, ``fuse <- fp16``. The names
below load their module on first use, so ``import blazekit.deploy`` stays cheap.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOME = {"fuse_bn": "fuse", "count_batchnorm": "fuse", "align_channels": "channel_align",
         "export_onnx": "export", "export_tflite": "tflite", "onnx_session": "runtime", "verify_onnx": "runtime",
         "LeanPreprocessor": "runtime", "OnnxDetector": "runtime", "preprocessor_for": "runtime",
         "LeanPostprocessor": "fastpath", "FastDetector": "fastpath", "BACKENDS": "backends",
         "resolve_backend": "backends", "backend_problem": "backends", "onnx_predictor": "backends"}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
