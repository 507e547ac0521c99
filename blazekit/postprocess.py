"""Moved to :mod:`blazekit.models.postprocess`; kept so old imports work."""
from .models.postprocess import *  # noqa: F401,F403
from .models.postprocess import __all__  # noqa: F401
