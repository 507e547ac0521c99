"""Moved to :mod:`blazekit.models.boxes`; kept so old imports work."""
from .models.boxes import *  # noqa: F401,F403
from .models.boxes import __all__  # noqa: F401
