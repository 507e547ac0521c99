"""Evaluate a detector on the configured evaluation dataset(s): COCO AP, WIDER easy/medium/hard AP, NME.

    python tools/eval.py CONFIG --weights mediapipe_short_range [--split val] [--out results.json] \\
        [--save-preds DIR] [--set eval.score_thr=0.02 eval.test_scale=original]

Prints a table with the score threshold and test scale the numbers were measured at; --out writes the
same flat keys (coco/AP, wider/easy, nme, settings/...) as JSON and the WIDER PR curves to a PNG beside
it; --save-preds writes the official WIDER prediction files (<event>/<name>.txt) for other tools;
--vis DIR draws ground truth and detections of the first images to PNGs.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Optional, Sequence

from ..engine.cli import check_device, check_output, user_errors
from .common import check_run_flags, load_detector, load_run


def parse_args(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> argparse.Namespace:
    from ..config import add_common_args

    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="config with model, data.<split> and (optional) eval sections")
    p.add_argument("--weights", default=None,
                   help="checkpoint path or a named weight (mediapipe_short_range); default: the config's model.init")
    p.add_argument("--split", default="val", help="data section to evaluate (default: val)")
    p.add_argument("--out", default=None, help="results JSON (flat keys)")
    p.add_argument("--save-preds", default=None, metavar="DIR", help="write official WIDER prediction files here")
    p.add_argument("--vis", default=None, metavar="DIR",
                   help="draw ground truth (green) and detections (red) of the first --num-vis images to PNGs here")
    p.add_argument("--num-vis", type=int, default=8, help="images drawn per dataset with --vis (default: 8)")
    p.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images (quick check)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda:0")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime"],
                   help="how the network runs: onnxruntime (CPU, pip install -e .[export]) or torch (BN folded); "
                        "auto (default): onnxruntime when installed and --device is cpu. Same metrics either way")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_common_args(p)
    args = p.parse_args(argv)
    check_run_flags(p, args)
    if args.max_images is not None and args.max_images < 1:
        p.error(f"--max-images must be >= 1 (the first N images are evaluated), got {args.max_images}")
    return args


@user_errors
def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    args = parse_args(argv, prog)
    if args.out:
        check_output(args.out, "--out", example="results.json")
    for flag, folder in (("--save-preds", args.save_preds), ("--vis", args.vis)):
        if folder:
            check_output(folder, flag, folder=True)
    check_device(args.device)
    from ..data.loader import check_dataset_paths
    from ..evaluation.evaluator import Evaluator, format_table
    from ..evaluation.plots import plot_pr_curves

    cfg, weights = load_run(args)  # never an untrained detector
    check_dataset_paths(cfg, splits=(args.split,))  # a missing dataset says where it was expected
    detector = load_detector(cfg, weights, args.device)
    ev = Evaluator(detector, cfg, split=args.split, progress=not args.quiet, max_images=args.max_images,
                   save_preds=args.save_preds, vis_dir=args.vis, num_vis=args.num_vis,
                   backend=args.backend)
    t0 = time.perf_counter()
    metrics = ev.run()
    settings = ev.settings
    print(f"{args.split} of {Path(args.config).name} with {weights}: score_thr {settings['settings/score_thr']}, "
          f"test scale {settings['settings/test_scale']}, backend {settings['settings/backend']} "
          f"({time.perf_counter() - t0:.1f} s)")
    print(format_table(metrics))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in {**metrics, **settings}.items()}
        out.write_text(json.dumps(clean, indent=2) + "\n", encoding="utf-8")
        for name, res in ev.wider_results.items():
            png = out.with_name(f"{out.stem}_wider_pr{'_' + name if name else ''}.png")
            plot_pr_curves(res.pr_curves, png, aps=res.ap)
            print(f"PR curves: {png}")
        print(f"results: {out}")
    if args.save_preds:
        print(f"WIDER prediction files: {args.save_preds}")
    if ev.vis_written:
        print(f"{len(ev.vis_written)} drawn image(s) (ground truth green, detections red): {args.vis}")
    return 0

