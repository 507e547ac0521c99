"""Official WIDER FACE evaluation of a prediction folder (easy / medium / hard AP), fast and strict.

    blazekit wider-eval --pred runs/preds --gt path/to/eval_tools/ground_truth [--out results.json]
    python tools/wider_eval.py --pred runs/preds --gt path/to/eval_tools/ground_truth [--out results.json]

``--pred`` holds ``<event>/<name>.txt`` files (name, count, then ``x y w h score`` lines, any order);
``--gt`` holds wider_face_val.mat and wider_{easy,medium,hard}_val.mat. A missing prediction file counts as
no detections (with a warning); a malformed line is an error naming the file and line. Writes
``{"easy": .., "medium": .., "hard": ..}`` to --out and the three PR curves to a PNG beside it (--plot).
Needs only numpy, scipy and matplotlib (no torch).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Optional, Sequence

from ..engine.cli import check_output, user_errors


def parse_args(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", required=True, help="prediction folder (<event>/<name>.txt)")
    p.add_argument("--gt", required=True, help="folder with the official ground-truth .mat files")
    p.add_argument("--out", default=None, help="write the APs as JSON here")
    p.add_argument("--plot", default=None, help="PR-curve PNG (default: beside --out, else wider_pr.png in --pred)")
    p.add_argument("--iou-mode", choices=["matlab", "float"], default="matlab",
                   help="matlab: official integer IoU (default); float: the biubug6 Python port's IoU")
    return p.parse_args(argv)


@user_errors
def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    args = parse_args(argv, prog)
    for flag, path in (("--out", args.out), ("--plot", args.plot)):
        if path:
            check_output(path, flag, example="wider.json" if flag == "--out" else "wider_pr.png")
    from ..evaluation.plots import plot_pr_curves
    from ..evaluation.wider import evaluate_wider, load_wider_gt, read_predictions

    t0 = time.perf_counter()
    gt = load_wider_gt(args.gt)
    preds = read_predictions(args.pred, gt)
    res = evaluate_wider(preds, gt, iou_mode=args.iou_mode)
    dt = time.perf_counter() - t0
    print(f"WIDER FACE ({len(gt.keys)} images, {res.num_predictions} predictions, iou_mode={args.iou_mode}, {dt:.2f} s)")
    for s in res.ap:
        print(f"{s.capitalize():<7} AP: {res.ap[s]:.4f}   ({res.count_face[s]} faces)")
    aps = {s: (None if math.isnan(v) else v) for s, v in res.ap.items()}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(aps, indent=2) + "\n", encoding="utf-8")
    plot = Path(args.plot) if args.plot else (Path(args.out).with_name("wider_pr.png") if args.out
                                                  else Path(args.pred) / "wider_pr.png")
    plot_pr_curves(res.pr_curves, plot, aps=res.ap)
    print(f"PR curves: {plot}")
    return 0
