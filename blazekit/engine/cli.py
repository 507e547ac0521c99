"""What the command-line tools share: a user's mistake ends in one ``error: ...`` line and exit code 2.

Every blazekit error type already names the file/field and what was expected; a traceback on top of
that only buries the message. ``BLAZEKIT_DEBUG=1`` re-raises, for when the traceback is what you need.
The checks every tool makes on its own flags before any work (output paths, ``--device``) live here too,
so a run that cannot write its results or use its device is refused before it starts, not after.
"""
from __future__ import annotations

import errno
import functools
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Tuple, Type, Union

#: exit code of a run stopped by a user error (bad config, missing file, incompatible checkpoint)
USER_ERROR_EXIT = 2
#: exit code of a run stopped by Ctrl-C (128 + SIGINT, what shells report)
INTERRUPTED_EXIT = 130


class UsageError(ValueError):
    """A command-line value that cannot be used: a flag out of range, an output path that cannot be written, a
    device this machine does not have. The message names the flag or the path."""


#: (module, class) of every error type that means "fix your input", not "blazekit has a bug"
USER_ERRORS = (
    ("blazekit.config", "ConfigError"), ("blazekit.registry", "RegistryError"), ("blazekit.registry", "BuildError"),
    ("blazekit.data.datasets.base", "DataError"), ("blazekit.checkpoint", "CheckpointError"),
    ("blazekit.engine.state", "TrainingError"), ("blazekit.evaluation.wider", "WiderFormatError"),
    ("blazekit.io.images", "SourceError"), ("blazekit.convert", "ConversionError"),
    ("blazekit.engine.cli", "UsageError"), ("blazekit.models.detector", "InputSizeError"),
)

#: OSErrors without a file name that still mean "this machine cannot take the output", not a bug
_OUTPUT_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)


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
        return _refuse(msg)
    except OSError as exc:  # an output the OS refused (permission, a file where a folder should be, disk full)
        if os.environ.get("BLAZEKIT_DEBUG") or (exc.filename is None and exc.errno not in _OUTPUT_ERRNOS):
            raise
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return _refuse(f"{where}{exc.strerror or exc}")


def _refuse(msg: Any) -> int:
    print(f"error: {msg}", file=sys.stderr)
    note_in_log(f"error: {msg}")
    return USER_ERROR_EXIT


def note_in_log(line: str) -> None:
    """A run that stops on a user error or Ctrl-C says why in its train.log too (not an empty or cut-off log)."""
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


def check_output(path: Union[str, os.PathLike], flag: str, folder: bool = False, example: str = "") -> Path:
    """Refuse, before any work, an output path the run could not write: a file where the folder should be (or
    above it), a folder where the file should be, a folder without write permission. Nothing is created here.
    ``example``: a file name suggested inside a folder given where a file was expected."""
    p = Path(path).expanduser()
    what = "folder" if folder else "file"
    if p.is_dir() and not folder:
        raise UsageError(f"{flag} {path}: is a folder; expected a file path" + (f" (e.g. {p / example})" if example
                                                                              else ""))
    if p.exists() and not p.is_dir() and folder:
        raise UsageError(f"{flag} {path}: is a file; expected a folder (remove it or choose another {flag})")
    existing = p  # the path itself when it exists (it is then rewritten), else the folder it will be created in
    if not p.exists():
        existing = p.parent
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise UsageError(f"{flag} {path}: {existing} is a file, so no {what} can be created inside it")
    if not os.access(existing, os.W_OK | (os.X_OK if existing.is_dir() else 0)):
        raise UsageError(f"{flag} {path}: {existing} is not writable (permission denied)")
    return p


def check_device(device: Optional[str]) -> Optional[str]:
    """Refuse a device this machine does not have (``cuda`` without a GPU, ``cuda:3`` with two) before any work,
    as :func:`device_problem` refuses a name that is no device; None (the tool's default) passes. Imports torch:
    call it once the arguments parse."""
    why = device_problem(device)
    if why:
        raise UsageError(why)
    if device is None or device == "cpu":
        return device
    import torch

    if device.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if n == 0:
            why = ("this torch is a CPU-only build" if torch.version.cuda is None
                   else "no NVIDIA GPU or driver is visible")
            raise UsageError(f"--device {device}: CUDA is not available here ({why}); use --device cpu")
        if index >= n:
            raise UsageError(f"--device {device}: only {n} CUDA GPU(s) visible (cuda:0 .. cuda:{n - 1})")
    elif device == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: Apple MPS is not available here; use --device cpu")
    return device
