#!/usr/bin/env python
"""Official WIDER FACE evaluation of a prediction folder (easy / medium / hard AP), fast and strict.

A thin wrapper: the code lives in blazekit.commands.wider_eval (also run as ``blazekit wider-eval``; see its --help).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from blazekit.commands.wider_eval import main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
