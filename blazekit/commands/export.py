"""Export a detector to ONNX (BN folded, dynamic batch) or back into MediaPipe's own .tflite.

    python tools/export.py configs/blazeface_front.yml --weights mediapipe_short_range --format onnx --out model.onnx
    python tools/export.py configs/blazeface_front.yml --weights ckpt.pt --out det.onnx --with-postprocess
    python tools/export.py configs/blazeface_front.yml --weights ckpt.pt --format tflite --out face.tflite

``--format tflite`` writes the weights into MediaPipe's face_detection_short_range.tflite (128x128 models) or
face_detection_full_range_sparse.tflite (192x192): same graph, tensor names and metadata, so MediaPipe Tasks'
FaceDetector loads the file as a drop-in (see README "Back into MediaPipe"). Untouched MediaPipe weights give
MediaPipe's file back byte for byte. Post-processing (score threshold, blending) stays MediaPipe's.

Input ``images`` float32 [B, 3, H, W] (letterboxed, normalised as the config says). Outputs: raw
``regressors`` [B, A, 4+2K] and ``classificators`` [B, A, 1] (MediaPipe layout), or with
``--with-postprocess`` the decoded detections after NMS: ``boxes`` [N, 4] xyxy in input pixels,
``scores`` [N], ``keypoints`` [N, K, 2], ``batch_index`` [N]. Needs ``pip install -e .[export]``.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from ..engine.cli import UsageError, check_output, user_errors
from .common import load_detector, load_run


def parse_args(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> argparse.Namespace:
    from ..config import add_common_args

    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="model config (YAML)")
    p.add_argument("--weights", default=None, help="checkpoint path or named weight; default: the config's model.init")
    p.add_argument("--format", default="onnx", choices=["onnx", "tflite"],
                   help="onnx, or tflite: MediaPipe's own graph with these weights (short range 128, full range 192)")
    p.add_argument("--out", required=True, help="output file, e.g. model.onnx / face.tflite")
    p.add_argument("--tflite-precision", default="fp16", choices=["fp16", "fp32"],
                   help="tflite weights: fp16 (as MediaPipe stores them; same size and speed) or fp32 (outputs equal "
                        "PyTorch's to float rounding; about twice the size)")
    p.add_argument("--densify", action="store_true",
                   help="tflite, full range: store sparse weight tensors that fine-tuning filled in as dense tensors "
                        "instead of refusing")
    p.add_argument("--with-postprocess", action="store_true",
                   help="decode + score threshold + NMS inside the graph (outputs boxes/scores/keypoints/batch_index)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="fixed input size (default: the model's)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 11 for NonMaxSuppression)")
    p.add_argument("--score-thr", type=float, default=None, help="with --with-postprocess (default: the config's)")
    p.add_argument("--iou-thr", type=float, default=None, help="with --with-postprocess (default: the config's)")
    p.add_argument("--max-det", type=int, default=None, help="per image, with --with-postprocess")
    p.add_argument("--no-fuse", action="store_true", help="keep BatchNorm nodes in the graph")
    p.add_argument("--channel-multiple", type=int, default=16, metavar="N",
                   help="round channel widths up to N with zero weights: same outputs, faster onnxruntime on CPU "
                        "(16 suits AVX-512 and AVX2; 1 keeps the original widths)")
    p.add_argument("--verify", action="store_true",
                   help="run the exported model in onnxruntime on a random batch and compare with PyTorch")
    add_common_args(p)
    args = p.parse_args(argv)
    if args.format == "tflite":
        onnx_only = [flag for flag, used in (("--with-postprocess", args.with_postprocess),
                                             ("--input-size", args.input_size is not None),
                                             ("--score-thr", args.score_thr is not None),
                                             ("--iou-thr", args.iou_thr is not None),
                                             ("--max-det", args.max_det is not None), ("--no-fuse", args.no_fuse),
                                             ("--verify", args.verify)) if used]
        if onnx_only:
            p.error(f"{', '.join(onnx_only)}: ONNX options; a MediaPipe .tflite keeps MediaPipe's input size and "
                    "post-processing (set the score threshold in MediaPipe)")
    if args.opset < 11:
        p.error(f"--opset must be >= 11 (NonMaxSuppression, dynamic shapes), got {args.opset}")
    if args.score_thr is not None and not 0.0 <= args.score_thr <= 1.0:
        p.error(f"--score-thr must be in [0, 1], got {args.score_thr}")
    if args.channel_multiple < 1:
        p.error(f"--channel-multiple must be >= 1, got {args.channel_multiple}")
    return args


@user_errors
def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    args = parse_args(argv, prog)
    check_output(args.out, "--out", example=f"model.{args.format}")
    if args.format == "onnx":
        from ..deploy.export import OPSETS

        if args.opset not in OPSETS:  # the upper end depends on the installed torch
            raise UsageError(f"--opset {args.opset}: this torch's ONNX exporter writes opsets "
                             f"{OPSETS[0]}..{OPSETS[-1]}")
    cfg, weights = load_run(args)
    detector = load_detector(cfg, weights, "cpu", args.input_size)
    if args.format == "tflite":
        from ..deploy.tflite import export_tflite, mediapipe_postprocess_note

        done = export_tflite(detector, args.out, precision=args.tflite_precision, densify=args.densify)
        sparse = f", {done.sparse_kept} tensors kept sparse" if done.sparse_kept else ""
        dense = f", {len(done.densified)} sparse tensors stored dense" if done.densified else ""
        print(f"wrote {done.path} ({done.size / 1e6:.3f} MB, {done.precision}; {done.tensors_changed} of "
              f"{done.tensors_written} weight tensors differ from {done.template.name}{sparse}{dense})")
        if done.precision == "fp16":
            from ..deploy.fp16 import fp16_note

            print(fp16_note(detector))
        print(mediapipe_postprocess_note(detector))
        return 0
    from ..deploy.export import export_onnx
    from ..deploy.runtime import verify_onnx

    path = export_onnx(detector, args.out, with_postprocess=args.with_postprocess, input_size=args.input_size,
                       opset=args.opset, fold_bn=not args.no_fuse, score_thr=args.score_thr, iou_thr=args.iou_thr,
                       max_det=args.max_det, channel_multiple=args.channel_multiple)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if args.verify and not args.with_postprocess:
        err = verify_onnx(detector, path, input_size=args.input_size)
        print(f"onnxruntime vs PyTorch on a random batch of 2: max abs diff {err:.2e}")
    return 0

