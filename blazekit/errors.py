"""The one base of every "fix your input" error, and the close-match helper their messages use.

The bottom of the package: it imports only the standard library, so every module (and a tool before it has
parsed its arguments) can raise or catch these without importing torch. A tool catches :class:`UserError`
and prints its message as one ``error:`` line (:mod:`blazekit.engine.cli`); anything else is a bug and keeps
its traceback. Each concrete error keeps its builtin base too (``ValueError``, ``KeyError``, ...), so existing
``except ValueError`` clauses still catch it.
"""
from __future__ import annotations

import difflib
from typing import Iterable, List


class UserError(Exception):
    """A mistake in what the user gave (a config, a file, a flag, a checkpoint); the message names it and says
    what was expected, so it is the whole explanation."""


class ConfigError(UserError, ValueError):
    """A config file or override that cannot be used; the message names the file/key."""


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> List[str]:
    """Closest names by difflib ratio, case-insensitive, best first."""
    cands = list(candidates)
    lower = {c.lower(): c for c in cands}
    hits = difflib.get_close_matches(word.lower(), list(lower), n=n, cutoff=0.5)
    return [lower[h] for h in hits]
