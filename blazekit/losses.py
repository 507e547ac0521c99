"""Moved to :mod:`blazekit.models.losses`; kept so old imports work."""
from .models.losses import *  # noqa: F401,F403
from .models.losses import __all__  # noqa: F401
