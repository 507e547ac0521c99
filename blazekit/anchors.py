"""Moved to :mod:`blazekit.models.anchors`; kept so old imports work."""
from .models.anchors import *  # noqa: F401,F403
from .models.anchors import __all__, Size  # noqa: F401  (a type alias, not in __all__)
