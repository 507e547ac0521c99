#!/usr/bin/env python
"""Export a detector to ONNX (BN folded, dynamic batch).

A thin wrapper: the code lives in blazekit.commands.export (also run as ``blazekit export``; see its --help).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from blazekit.commands.export import main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
