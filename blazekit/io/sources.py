"""What a user points a tool at (files, folders, globs) as a list of image and video files."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Tuple

from .images import IMAGE_EXTS, PathLike
from .videos import VIDEO_EXTS


@dataclass(frozen=True)
class Source:
    """One input file. ``kind`` is ``image`` or ``video`` (by extension; ``unknown`` is tried as both)."""

    path: Path
    kind: str


def _kind(path: Path) -> str:
    ext = path.suffix.lower()
    if ext in IMAGE_EXTS:
        return "image"
    if ext in VIDEO_EXTS:
        return "video"
    return "unknown"


def expand_sources(inputs: Iterable[PathLike], recursive: bool = False) -> Tuple[List[Source], List[Tuple[str, str]]]:
    """Files, folders (their images and videos, sorted) and globs -> ``(sources, unmatched)``.

    ``unmatched`` lists ``(input, reason)`` for inputs that exist nowhere or hold nothing usable, so
    the caller can report them and still process the rest. Explicit files with an unknown extension
    are kept (tried as image, then video); inside folders such files (``.txt``, ``.json``) are skipped.
    Duplicates are removed, order of first appearance is kept.
    """
    out: List[Source] = []
    seen = set()
    unmatched: List[Tuple[str, str]] = []

    def add(p: Path, explicit: bool) -> bool:
        kind = _kind(p)
        if kind == "unknown" and not explicit:
            return False
        key = str(p.resolve())
        if key not in seen:
            seen.add(key)
            out.append(Source(p, kind))
        return True

    def add_folder(d: Path) -> int:
        files = sorted(d.rglob("*") if recursive else d.iterdir())
        return sum(add(f, explicit=False) for f in files if f.is_file())

    for item in inputs:
        text = os.fspath(item)
        p = Path(text).expanduser()
        if p.is_file():
            add(p, explicit=True)
        elif p.is_dir():
            if add_folder(p) == 0:
                unmatched.append((text, f"folder holds no image ({', '.join(sorted(IMAGE_EXTS))}) or video file"))
        elif any(c in text for c in "*?["):
            hits = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            n = 0
            for h in hits:
                hp = Path(h)
                n += add(hp, explicit=False) if hp.is_file() else add_folder(hp) if hp.is_dir() else 0
            if n == 0:
                unmatched.append((text, "glob matched no image or video file"))
        else:
            unmatched.append((text, "no such file or folder"))
    return out, unmatched
