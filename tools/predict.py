#!/usr/bin/env python
"""Detect faces in images, folders, globs and videos; write annotated copies and one JSON per image.

A thin wrapper: the code lives in blazekit.commands.predict (also run as ``blazekit predict``; see its --help).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from blazekit.commands.predict import main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
