"""blazekit: trainable BlazeFace. ``import blazekit`` registers every built-in component."""
import os as _os

_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations phones home at import otherwise

from . import registry, config  # noqa: E402,F401
from . import anchors, coder, matcher, losses, postprocess  # noqa: E402,F401
from .models import blocks, backbones, heads, detector  # noqa: E402,F401
from .models.detector import BlazeFace, build_detector, load_weights  # noqa: E402,F401
from . import data, weights  # noqa: E402,F401
from .data import build_dataloader, build_dataset  # noqa: E402,F401
from .engine import optim  # noqa: E402,F401  (registers optimizers and LR schedules)
from .engine.evaluator import evaluate  # noqa: E402,F401

__version__ = "0.1.0"
__all__ = ["BlazeFace", "build_detector", "load_weights", "build_dataset", "build_dataloader", "evaluate",
           "registry", "config"]


def __getattr__(name: str):
    """Heavier entry points load on first use (the trainer pulls in logging/plotting, export pulls in ONNX)."""
    if name == "Trainer":
        from .engine.trainer import Trainer
        return Trainer
    if name in ("export", "inference", "convert"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'blazekit' has no attribute {name!r}")
