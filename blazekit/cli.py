"""The ``blazekit`` console command: ``blazekit <command> [args]`` runs ``blazekit.commands.<module>.main``.

    blazekit train configs/blazeface_front.yml
    blazekit eval CONFIG --weights mediapipe_short_range
    blazekit wider-eval --pred runs/preds --gt eval_tools/ground_truth

Same flags as ``python tools/<script>.py``. Only the chosen command's module is imported, and that only
after its arguments parse, so ``blazekit --help`` and ``blazekit <command> --help`` do not import torch.
"""
from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

#: command -> (module in blazekit.commands, one-line summary)
COMMANDS = {
    "train": ("train", "train a detector from a config"),
    "eval": ("eval", "COCO / WIDER AP and keypoint NME of a detector on a config's dataset"),
    "predict": ("predict", "detect faces in images, folders and videos"),
    "export": ("export", "export a detector to ONNX"),
    "convert": ("convert", "convert MediaPipe .tflite or hollance .pth weights to a checkpoint"),
    "wider-eval": ("wider_eval", "official WIDER FACE AP of a prediction folder (no torch)"),
    "browse": ("browse", "draw transformed training samples to PNGs (tools/browse_dataset.py)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return ("usage: blazekit <command> [args]   (blazekit <command> --help for its flags)\n\ncommands:\n"
            + "\n".join(lines) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``blazekit`` console script (setup.cfg) and of ``python -m blazekit``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0
    if args[0] == "--version":
        from . import __version__

        print(f"blazekit {__version__}")
        return 0
    name = args[0]
    if name not in COMMANDS:
        from .errors import close_matches

        hint = close_matches(name, COMMANDS)
        print(f"error: unknown command {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
              + f"; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"blazekit.commands.{COMMANDS[name][0]}")
    return module.main(args[1:], prog=f"blazekit {name}")


if __name__ == "__main__":
    sys.exit(main())
