"""Moved to :mod:`blazekit.models.matcher`; kept so old imports work."""
from .models.matcher import *  # noqa: F401,F403
from .models.matcher import __all__  # noqa: F401
