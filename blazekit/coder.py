"""Moved to :mod:`blazekit.models.coder`; kept so old imports work."""
from .models.coder import *  # noqa: F401,F403
from .models.coder import __all__, Size  # noqa: F401  (a type alias, not in __all__)
