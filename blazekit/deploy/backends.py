"""How the network runs at inference, chosen one way for every tool: PyTorch, or onnxruntime on the CPU.

``tools/eval.py`` and ``tools/predict.py`` refuse the same impossible ``--backend`` / ``--device`` pairs with the same
line (:func:`backend_problem`), the evaluator resolves ``auto`` (:func:`resolve_backend`), and both build the
onnxruntime fast path the same way (:func:`onnx_predictor`). Light at import (no torch, no onnx): the tools check
their flags with it while parsing, before ``--help`` would need anything heavy.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, Optional, Sequence, Union

#: how the network runs: ``auto`` picks one (:func:`resolve_backend`), the others name it
BACKENDS = ("auto", "torch", "onnxruntime")
#: what ``onnxruntime`` needs installed (``pip install -e .[export]``)
ONNX_PACKAGES = ("onnx", "onnxruntime")


def onnxruntime_installed() -> bool:
    """Whether the onnxruntime backend can run here (looked up, not imported)."""
    return all(importlib.util.find_spec(m) is not None for m in ONNX_PACKAGES)


def backend_problem(backend: Optional[str], device: Optional[str]) -> Optional[str]:
    """Why ``backend`` cannot run on ``device`` here, or None; a tool passes it to ``parser.error``.
    ``None`` (a tool without ``--backend``) passes."""
    if backend != "onnxruntime":
        return None
    if device != "cpu":
        return f"--backend onnxruntime runs on the CPU; drop --device {device} or use --backend torch"
    if not onnxruntime_installed():
        return "--backend onnxruntime needs onnx and onnxruntime (pip install -e .[export]); or use --backend torch"
    return None


def resolve_backend(backend: str, detector: Any, test_scale: Any = None) -> str:
    """``auto`` -> ``onnxruntime`` when onnx and onnxruntime are installed, the model is on the CPU and the test
    scale is fixed (one ONNX export per input size); ``torch`` otherwise. Other names are kept."""
    if backend != "auto":
        return backend
    params = getattr(detector, "parameters", None)
    param = next(params(), None) if callable(params) else None
    on_cpu = param is None or param.device.type == "cpu"
    return "onnxruntime" if onnxruntime_installed() and on_cpu and test_scale != "original" else "torch"


def onnx_predictor(detector: Any, onnx_path: Union[str, os.PathLike], input_size: Optional[Sequence[int]] = None,
                   threads: Optional[int] = None) -> Any:
    """The onnxruntime backend: ``detector``'s raw outputs exported to ``onnx_path`` and run with the numpy
    pre/post-processing (:class:`blazekit.deploy.fastpath.FastDetector`; ``.predict`` like ``detector.predict``)."""
    from .fastpath import FastDetector

    # batch-1 calls: onnxruntime's depthwise kernels are fastest so (benchmarks/latency.py)
    return FastDetector.from_detector(detector, onnx_path, threads=threads, micro_batch=1, input_size=input_size)
