#!/usr/bin/env python
"""Evaluate a detector on the configured evaluation dataset(s): COCO AP, WIDER easy/medium/hard AP, NME.

A thin wrapper: the code lives in blazekit.commands.eval (also run as ``blazekit eval``; see its --help).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from blazekit.commands.eval import main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
