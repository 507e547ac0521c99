"""Write PNGs of training/validation samples after the transforms, with boxes and keypoints drawn.

    python tools/browse_dataset.py configs/quickstart.yml --split train --n 16 --out browse/
"""
from __future__ import annotations

import argparse
import logging
from typing import Optional, Sequence

from ..engine.cli import UsageError, check_output, user_errors
from .common import load_config

#: the largest --zoom: a 128 px sample drawn at 16x is 2048 px wide (1000x asked for 49 GB)
MAX_ZOOM = 16.0


@user_errors
def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    from .. import config

    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config with a data: section")
    p.add_argument("--split", default="train", help="data split to show (train, val, test)")
    p.add_argument("--n", type=int, default=16, help="number of samples")
    p.add_argument("--out", default="browse", help="output folder for the PNGs")
    p.add_argument("--seed", type=int, default=0, help="seed for sample choice and augmentations")
    p.add_argument("--zoom", type=float, default=None,
                   help=f"enlarge factor, > 0 and <= {MAX_ZOOM:g} (default: to about 384 px)")
    config.add_common_args(p)
    args = p.parse_args(argv)
    if args.n < 1:
        raise UsageError(f"--n {args.n}: expected the number of samples to draw, >= 1")
    if args.zoom is not None and not 0 < args.zoom <= MAX_ZOOM:  # nan fails too
        raise UsageError(f"--zoom {args.zoom:g}: expected an enlarge factor > 0 and <= {MAX_ZOOM:g}")
    check_output(args.out, "--out", folder=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_config(args)
    from ..data.visualize import browse

    paths = browse(cfg, split=args.split, n=args.n, out=args.out, seed=args.seed, zoom=args.zoom)
    print(f"wrote {len(paths)} images to {args.out}")
    return 0
