"""Convert MediaPipe .tflite or hollance .pth BlazeFace weights to a blazekit checkpoint.

    python tools/convert.py face_detection_short_range.tflite mediapipe_short_range.pt
    python tools/convert.py blazefaceback.pth back.pt --config configs/_base_/models/blazeface_back.yml

The format follows the suffix; without --config the front or back model config is picked from the
file's content (input size / layer names).
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from ..engine.cli import check_output, user_errors
from .common import load_config


@user_errors
def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    from .. import config as config_lib

    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="MediaPipe .tflite or hollance .pth")
    p.add_argument("out", help="output checkpoint (.pt)")
    p.add_argument("--config", help="config whose 'model' section describes the target (default: by content)")
    config_lib.add_common_args(p)
    args = p.parse_args(argv)
    check_output(args.out, "OUT", example="model.pt")
    model_cfg = None
    if args.config:
        cfg = load_config(args)
        if "model" not in cfg:
            p.error(f"{args.config}: no 'model' section")
        model_cfg = cfg["model"]
    else:
        config_lib.import_modules(args.imports)
    from ..convert import save_converted

    ckpt = save_converted(args.src, args.out, model_cfg)
    n = sum(v.numel() for v in ckpt["state_dict"].values())
    print(f"wrote {args.out}: {len(ckpt['state_dict'])} tensors, {n} values, "
          f"backbone {ckpt['model_cfg']['backbone']['type']}, source md5 {ckpt['meta']['md5']}")
    return 0
