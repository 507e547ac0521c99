"""Detector models and their parts, laid out like torchvision's ``models/detection/``.

The network (``blocks``, ``backbones``, ``heads``, ``full_range``), the detection parts around it (``anchors``,
``coder``, ``matcher``, ``losses``, ``postprocess`` and their box toolbox ``boxes``), the detector that takes them
(``detector``, ``teacher``) and the one place that builds it from a config (``build``). The names below load their
module on first use, so a registry lookup imports only the modules its ``locations`` name.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOME = {"BlazeFace": "detector", "build_detector": "build", "load_weights": "build"}

__all__ = ["BlazeFace", "build_detector", "load_weights"]


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
