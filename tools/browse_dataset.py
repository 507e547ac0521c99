#!/usr/bin/env python
"""Write PNGs of training/validation samples after the transforms, with boxes and keypoints drawn.

A thin wrapper: the code lives in blazekit.commands.browse (also run as ``blazekit browse``; see its --help).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from blazekit.commands.browse import main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
