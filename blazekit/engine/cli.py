"""What the command-line tools share: a user's mistake ends in one ``error: ...`` line and exit code 2.

Every blazekit error type already names the file/field and what was expected; a traceback on top of
that only buries the message. ``BLAZEKIT_DEBUG=1`` re-raises, for when the traceback is what you need.
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Callable, Optional, Sequence, Tuple, Type

#: exit code of a run stopped by a user error (bad config, missing file, incompatible checkpoint)
USER_ERROR_EXIT = 2


def user_error_types() -> Tuple[Type[BaseException], ...]:
    """Exceptions that mean "fix your input", not "blazekit has a bug" (imported lazily: tools start fast)."""
    from ..config import ConfigError
    from ..convert import ConversionError
    from ..data import DataError
    from ..evaluation.wider import WiderFormatError
    from ..inference import SourceError
    from ..registry import BuildError, RegistryError
    from ..checkpoint import CheckpointError
    from .trainer import TrainingError

    return (ConfigError, RegistryError, BuildError, DataError, CheckpointError, TrainingError, WiderFormatError,
            SourceError, ConversionError, FileNotFoundError)


def run_tool(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """``main(argv)``; a user error is printed as ``error: <message>`` on stderr and returns 2."""
    try:
        return main(argv)
    except user_error_types() as exc:
        if os.environ.get("BLAZEKIT_DEBUG"):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # KeyError's str() adds quotes
        print(f"error: {msg}", file=sys.stderr)
        return USER_ERROR_EXIT


def user_errors(main: Callable[[Optional[Sequence[str]]], int]) -> Callable[[Optional[Sequence[str]]], int]:
    """Decorator for a tool's ``main(argv)``: :func:`run_tool` around it (one ``error:`` line, exit code 2)."""

    @functools.wraps(main)
    def wrapped(argv: Optional[Sequence[str]] = None) -> int:
        return run_tool(main, argv)

    return wrapped
