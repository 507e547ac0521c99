"""blazekit: trainable BlazeFace. ``import blazekit`` registers every built-in component."""
import os as _os

_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations phones home at import otherwise

from . import registry, config  # noqa: E402,F401
from . import anchors, coder, matcher, losses, postprocess  # noqa: E402,F401
from .models import blocks, backbones, heads, detector  # noqa: E402,F401
from .models.detector import build_detector  # noqa: E402,F401
from . import data  # noqa: E402,F401

__version__ = "0.1.0"
__all__ = ["build_detector", "registry", "config"]
