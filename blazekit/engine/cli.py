"""What the command-line tools share: a user's mistake ends in one ``error: ...`` line and exit code 2.

Every blazekit error type already names the file/field and what was expected; a traceback on top of
that only buries the message. ``BLAZEKIT_DEBUG=1`` re-raises, for when the traceback is what you need.
"""
from __future__ import annotations

import functools
import os
import re
import sys
from typing import Any, Callable, Optional, Sequence, Tuple, Type

#: exit code of a run stopped by a user error (bad config, missing file, incompatible checkpoint)
USER_ERROR_EXIT = 2


#: (module, class) of every error type that means "fix your input", not "blazekit has a bug"
USER_ERRORS = (
    ("blazekit.config", "ConfigError"), ("blazekit.registry", "RegistryError"), ("blazekit.registry", "BuildError"),
    ("blazekit.data.datasets.base", "DataError"), ("blazekit.checkpoint", "CheckpointError"),
    ("blazekit.engine.state", "TrainingError"), ("blazekit.evaluation.wider", "WiderFormatError"),
    ("blazekit.inference", "SourceError"), ("blazekit.convert", "ConversionError"),
)


#: the ``--device`` values blazekit runs on, as error messages list them
DEVICES = "cpu, cuda, cuda:N (N = 0, 1, ...) or mps"


def device_problem(device: Optional[str]) -> Optional[str]:
    """Why ``device`` is not a device blazekit runs on, or None (None itself: the tool's default). Checked before
    any work, so ``--device banana`` is refused instead of quietly meaning the CPU."""
    if device is None or re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        return None
    return f"--device {device!r}: expected {DEVICES}"


def user_error_types() -> Tuple[Type[BaseException], ...]:
    """The user-error types of the modules imported so far (plus FileNotFoundError).

    A module that was never imported cannot have raised its error, so nothing is imported here: a tool that
    exits through ``--help`` or fails early stays as light as it started (``except`` evaluates this for every
    exception, SystemExit included).
    """
    found = [getattr(sys.modules[mod], name) for mod, name in USER_ERRORS if mod in sys.modules]
    return (*found, FileNotFoundError)


def run_tool(main: Callable[..., int], argv: Optional[Sequence[str]] = None, **kwargs: Any) -> int:
    """``main(argv, **kwargs)``; a user error is printed as ``error: <message>`` on stderr and returns 2."""
    try:
        return main(argv, **kwargs)
    except user_error_types() as exc:
        if os.environ.get("BLAZEKIT_DEBUG"):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # KeyError's str() adds quotes
        print(f"error: {msg}", file=sys.stderr)
        _log_to_files(f"error: {msg}")
        return USER_ERROR_EXIT


def _log_to_files(line: str) -> None:
    """A run that stops on a user error says why in its train.log too (not an empty or cut-off log)."""
    import logging

    for h in logging.getLogger("blazekit.train").handlers:  # engine.logger.LOGGER_NAME (not imported: keep it light)
        if isinstance(h, logging.FileHandler):
            h.acquire()
            try:
                h.stream.write(line + "\n")
                h.flush()
            finally:
                h.release()


def user_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Decorator for a tool's ``main(argv, ...)``: :func:`run_tool` around it (one ``error:`` line, exit code 2)."""

    @functools.wraps(main)
    def wrapped(argv: Optional[Sequence[str]] = None, **kwargs: Any) -> int:
        return run_tool(main, argv, **kwargs)

    return wrapped
