"""blazekit: trainable BlazeFace.

``import blazekit`` is light on purpose (no torch): every name below loads on first use, and each registry
imports the modules of its built-ins on its first lookup (its ``locations``, :class:`blazekit.registry.Registry`).
So a tool answers ``--help`` at once and ``tools/wider_eval.py`` runs on numpy/scipy/matplotlib alone.
"""
from __future__ import annotations

import importlib as _importlib
import importlib.util  # noqa: F401  (find_spec below)
import os as _os
from typing import Any

_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations phones home at import otherwise

__version__ = "0.1.0"

#: public name -> module that defines it (imported on first access)
_LAZY = {
    "BlazeFace": "blazekit.models.detector",
    "build_detector": "blazekit.models.build",
    "load_weights": "blazekit.models.build",
    "build_dataset": "blazekit.data",
    "build_dataloader": "blazekit.data",
    "evaluate": "blazekit.evaluation.evaluator",
    "Trainer": "blazekit.engine.trainer",
}

__all__ = ["BlazeFace", "build_detector", "load_weights", "build_dataset", "build_dataloader", "evaluate",
           "Trainer", "registry", "config"]


def __getattr__(name: str) -> Any:
    """Load a public name or a submodule (``blazekit.deploy``, ``blazekit.data``, ...) on first access."""
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name]), name)
    elif not name.startswith("__") and _importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = _importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module 'blazekit' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY) | {"registry", "config"})
