"""Detect faces in images, folders, globs and videos; write annotated copies and one JSON per image.

    python tools/predict.py configs/blazeface_front.yml --weights mediapipe_short_range photos/ clip.mp4 --out runs/predict
    python tools/predict.py ... --backend onnxruntime --threads 1     # the fast CPU path (pip install -e .[export])

Exit code: 0 when every input was processed, 1 when some were unreadable (listed at the end; the rest
are still written), 2 when nothing could be processed at all or the config/weights are unusable, 130 when
stopped with Ctrl-C (one line says how many results were written).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from ..engine.cli import INTERRUPTED_EXIT, check_device, check_output, user_errors
from .common import check_run_flags, load_detector, load_run


def parse_args(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> argparse.Namespace:
    from ..config import add_common_args

    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="model config (YAML), e.g. configs/blazeface_front.yml")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image file, folder, glob ('imgs/*.jpg') or video")
    p.add_argument("--weights", default=None,
                   help="checkpoint path or a named weight (mediapipe_short_range); default: the config's model.init")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--score-thr", type=float, default=None, help="minimum score (default: the config's)")
    p.add_argument("--max-det", type=int, default=None, help="maximum faces per image (default: the config's)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda:0 (backend torch)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"],
                   help="torch: the PyTorch model; onnxruntime: export to ONNX and run it on CPU with lean numpy "
                        "pre/post-processing (blazekit.deploy.fastpath; faster per frame, see benchmarks/latency.py; "
                        "needs pip install -e .[export])")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for the network (default: torch's / onnxruntime's own choice)")
    p.add_argument("--batch-size", type=int, default=16, help="images / video frames per forward pass")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="network input size at test time (default: the model's)")
    p.add_argument("--recursive", action="store_true", help="also look into sub-folders of folder sources")
    p.add_argument("--no-images", action="store_true", help="write only the JSON files")
    p.add_argument("--no-json", action="store_true", help="write only the annotated images/videos")
    p.add_argument("--no-fuse", action="store_true", help="keep BatchNorm layers (default folds them for speed)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_common_args(p)
    args = p.parse_args(argv)
    check_run_flags(p, args)
    if args.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.score_thr is not None and not 0.0 <= args.score_thr <= 1.0:
        p.error(f"--score-thr must be in [0, 1], got {args.score_thr}")
    if args.max_det is not None and args.max_det < 1:
        p.error(f"--max-det must be >= 1, got {args.max_det}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    return args


@user_errors
def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    args = parse_args(argv, prog)
    check_output(args.out, "--out", folder=True)
    check_device(args.device)
    from ..deploy.backends import onnx_predictor
    from ..deploy.fuse import fuse_bn
    from ..io.sources import expand_sources
    from ..predict_runner import PredictSummary, predict_sources

    cfg, weights = load_run(args)  # never an untrained detector
    pp = cfg["model"].setdefault("postprocess", {})
    if args.score_thr is not None:
        pp["score_thr"] = args.score_thr
    if args.max_det is not None:
        pp["max_det"] = args.max_det
    sources, unmatched = expand_sources(args.sources, recursive=args.recursive)
    for item, why in unmatched:
        print(f"skipped {item}: {why}", file=sys.stderr)
    if not sources:
        print("error: no image or video found in the given sources", file=sys.stderr)
        return 2
    detector = load_detector(cfg, weights, args.device, args.input_size)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="blazekit_predict_") as tmp:
        if args.backend == "onnxruntime":
            runner = onnx_predictor(detector, Path(tmp) / "model.onnx", input_size=args.input_size,
                                    threads=args.threads)
        else:
            runner = detector if args.no_fuse else fuse_bn(detector)
            if args.input_size:
                _predict = runner.predict
                runner.predict = lambda imgs: _predict(imgs, input_size=tuple(args.input_size))  # type: ignore
        t0 = time.perf_counter()
        summary = PredictSummary()
        try:
            predict_sources(runner, sources, args.out, batch_size=args.batch_size, save_images=not args.no_images,
                            save_json=not args.no_json, progress=not args.quiet, summary=summary)
        except KeyboardInterrupt:  # Ctrl-C: say what is done instead of a traceback
            print(f"interrupted: {summary.images} of {sum(s.kind != 'video' for s in sources)} image(s) and "
                  f"{summary.videos} video(s) written to {args.out} (a video in progress is cut off); run the "
                  "same command again to do the rest (written results are rewritten)", file=sys.stderr)
            return INTERRUPTED_EXIT
        dt = time.perf_counter() - t0
    summary.failed = [(i, w) for i, w in unmatched] + summary.failed
    n = summary.images + summary.frames
    print(f"{summary.images} image(s), {summary.videos} video(s) ({summary.frames} frames), "
          f"{summary.detections} face(s) in {dt:.1f} s ({n / max(dt, 1e-9):.1f} img/s) -> {args.out}")
    if summary.failed:
        print(f"{len(summary.failed)} input(s) failed:", file=sys.stderr)
        for item, why in summary.failed:
            print(f"  {item}: {why}", file=sys.stderr)
        return 1 if n else 2
    return 0

