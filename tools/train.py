#!/usr/bin/env python
"""Train a BlazeFace detector from a config.

A thin wrapper: the code lives in blazekit.commands.train (also run as ``blazekit train``; see its --help).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from blazekit.commands.train import main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
