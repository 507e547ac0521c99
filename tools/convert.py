#!/usr/bin/env python
"""Convert MediaPipe .tflite or hollance .pth BlazeFace weights to a blazekit checkpoint.

A thin wrapper: the code lives in blazekit.commands.convert (also run as ``blazekit convert``; see its --help).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from blazekit.commands.convert import main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
