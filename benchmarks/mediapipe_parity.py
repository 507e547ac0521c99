"""The same faces from MediaPipe itself: a .tflite in MediaPipe Tasks' FaceDetector vs ``detector.predict``.

    python benchmarks/mediapipe_parity.py --tflite F.tflite --config C --weights W --images DIR_OR_FILES \
        [--max-images N]
    python benchmarks/mediapipe_parity.py --tflite face_detection_short_range.tflite \
        --config configs/blazeface_front.yml --weights mediapipe_short_range --images blazekit/data/demo/images

Opt-in: needs the ``mediapipe`` package (1.2.x; ~650 MB with its dependencies, so it is in no extra and not in
CI), best in its own virtual environment::

    python3 -m venv mpvenv && mpvenv/bin/pip install -c requirements-ci.txt -e ".[tflite]" mediapipe==1.2.3

Both sides read the same pixels (``blazekit.inference.load_image``). blazekit runs with
``model.preprocess.resize: mediapipe`` (MediaPipe's own pre-processing; ``--resize`` measures another mode) and
MediaPipe with the detector's score threshold and NMS IoU (``min_detection_confidence`` /
``min_suppression_threshold``; in an app those are MediaPipe's options, not the config's). Faces are paired by
IoU; per pair it checks the box (``box_int``: Tasks' integer box against blazekit's box clamped and truncated the
same way, within ``--box-tol`` px; ``box_px`` is the distance to blazekit's unrounded box, < 1 when they are
equal), the keypoints (within ``--kpt-tol`` of the image size; Tasks returns them normalised) and the score
(``--score-tol``). A face found by one side only is allowed when its score is within ``--score-tol`` of the
threshold (it may fall either side). Prints one row per image and a summary, exits 1 when a tolerance is missed.
``--save FILE.json`` writes MediaPipe's detections: that is how tests/fixtures/mediapipe_tasks/*.json were made.

An fp16 export stores the weights rounded to fp16: against the fp32 checkpoint a fine-tuned model's scores moved
by up to 3e-3 and boxes by up to 2 px. ``--weights-from-tflite`` (instead of ``--weights``) runs blazekit with the
weights read back from the .tflite itself, which compares the runtimes and pre-processing alone (like with like).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from blazekit.models.boxes import box_iou  # noqa: E402
from blazekit.convert import convert_tflite  # noqa: E402
from blazekit.inference import load_image  # noqa: E402
from blazekit.models.build import build_detector  # noqa: E402

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def tasks_face_detector(tflite: str, score_thr: float, iou_thr: float) -> Any:
    """MediaPipe Tasks' FaceDetector (image mode) on ``tflite``; raises ImportError when mediapipe is missing."""
    from mediapipe.tasks.python.core.base_options import BaseOptions
    from mediapipe.tasks.python.vision import face_detector

    opts = face_detector.FaceDetectorOptions(base_options=BaseOptions(model_asset_path=str(tflite)),
                                             min_detection_confidence=float(score_thr),
                                             min_suppression_threshold=float(iou_thr))
    return face_detector.FaceDetector.create_from_options(opts)


def tasks_detect(detector: Any, image: np.ndarray) -> Dict[str, List[Any]]:
    """One RGB image through Tasks -> ``{"boxes": [[x, y, w, h] int], "scores", "keypoints": [[[x, y]]]}``, keypoints
    normalised by the image size."""
    import mediapipe as mp

    result = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
    out: Dict[str, List[Any]] = {"boxes": [], "scores": [], "keypoints": []}
    for d in result.detections:
        bb = d.bounding_box
        out["boxes"].append([int(bb.origin_x), int(bb.origin_y), int(bb.width), int(bb.height)])
        out["scores"].append(float(d.categories[0].score))
        out["keypoints"].append([[float(k.x), float(k.y)] for k in d.keypoints])
    return out


def tasks_style_boxes(xyxy: np.ndarray, h: int, w: int) -> np.ndarray:
    """blazekit xyxy boxes as MediaPipe's ``DetectionTransformationCalculator`` turns a box into pixels: x, y, w,
    h each clamped to [0, W or H] (truncation aside: the tolerance covers it)."""
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    return np.clip(xywh, 0, np.array([w, h, w, h], np.float64))


def compare(tasks: Dict[str, List[Any]], ours: Dict[str, np.ndarray], h: int, w: int, score_thr: float,
            score_tol: float) -> Dict[str, Any]:
    """Pair MediaPipe's and blazekit's faces of one image by IoU (greedy, > 0.5) and measure the differences."""
    import torch

    t_boxes = np.asarray(tasks["boxes"], np.float64).reshape(-1, 4)
    t_xyxy = np.concatenate([t_boxes[:, :2], t_boxes[:, :2] + t_boxes[:, 2:]], axis=1)
    o_boxes = tasks_style_boxes(ours["boxes"], h, w)
    iou = box_iou(torch.as_tensor(t_xyxy), torch.as_tensor(np.asarray(ours["boxes"], np.float64).reshape(-1, 4))
                  ).numpy() if len(t_xyxy) and len(o_boxes) else np.zeros((len(t_xyxy), len(o_boxes)))
    pairs = []
    while iou.size and iou.max() > 0.5:
        i, j = np.unravel_index(int(iou.argmax()), iou.shape)
        pairs.append((int(i), int(j)))
        iou[i, :], iou[:, j] = -1, -1
    size = np.array([w, h], np.float64)
    rows = []
    for i, j in pairs:
        t_kp = np.asarray(tasks["keypoints"][i], np.float64) * size
        o_kp = np.asarray(ours["keypoints"][j], np.float64)
        rows.append({"score": abs(float(tasks["scores"][i]) - float(ours["scores"][j])),
                     "box_px": float(np.abs(t_boxes[i] - o_boxes[j]).max()),
                     "box_int": float(np.abs(t_boxes[i] - np.trunc(o_boxes[j])).max()),
                     "kpt_px": float(np.abs(t_kp - o_kp).max()) if t_kp.size else 0.0,
                     "kpt_frac": float((np.abs(t_kp - o_kp) / size).max()) if t_kp.size else 0.0})
    lone = [float(tasks["scores"][i]) for i in set(range(len(t_boxes))) - {p[0] for p in pairs}]
    lone += [float(ours["scores"][j]) for j in set(range(len(o_boxes))) - {p[1] for p in pairs}]
    return {"pairs": rows, "lone_scores": lone,
            "lone_bad": [s for s in lone if abs(s - score_thr) > score_tol]}


def list_images(items: Sequence[str], max_images: Optional[int]) -> List[Path]:
    """Files as given and the images directly inside given folders (sorted), at most ``max_images``."""
    paths: List[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            paths.append(p)
        else:
            raise SystemExit(f"error: {p}: no such file or folder")
    return paths[:max_images] if max_images else paths


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tflite", required=True, help="the .tflite MediaPipe Tasks runs")
    ap.add_argument("--config", required=True, help="blazekit config of the same model")
    ap.add_argument("--weights", default=None, help="blazekit weights (checkpoint or a bundled name)")
    ap.add_argument("--weights-from-tflite", action="store_true",
                    help="blazekit runs the weights read back from --tflite (an fp16 file's own rounded weights)")
    ap.add_argument("--images", required=True, nargs="+", help="image files and/or folders")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--resize", default="mediapipe", choices=["mediapipe", "letterbox", "config"],
                    help="blazekit's pre-processing (default mediapipe: MediaPipe's own; config: as configured)")
    ap.add_argument("--score-thr", type=float, default=None, help="both sides (default: the config's score_thr)")
    ap.add_argument("--box-tol", type=float, default=1.0, help="px, integer boxes (Tasks truncates boxes)")
    ap.add_argument("--kpt-tol", type=float, default=0.05, help="fraction of the image size")
    ap.add_argument("--score-tol", type=float, default=0.01)
    ap.add_argument("--save", default=None, help="write MediaPipe's detections per image to this JSON file")
    return ap.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if bool(args.weights) == args.weights_from_tflite:
        print("error: --weights: give the blazekit weights, or --weights-from-tflite (not both)", file=sys.stderr)
        return 2
    if args.weights_from_tflite:
        det = build_detector(args.config)
        det.load_state_dict(convert_tflite(args.tflite, det.cfg))
        args.weights = f"read back from {Path(args.tflite).name}"
    else:
        det = build_detector(args.config, weights=args.weights)
    if args.resize != "config":
        det.preprocess_cfg["resize"] = args.resize
    thr = float(det.postprocess.score_thr if args.score_thr is None else args.score_thr)
    try:
        tasks = tasks_face_detector(args.tflite, thr, det.postprocess.iou_thr)
    except ImportError:
        print("error: mediapipe is not installed: pip install mediapipe==1.2.3 (best in its own venv)",
              file=sys.stderr)
        return 2
    try:
        return _run(args, det, tasks, thr)
    finally:
        tasks.close()  # before interpreter exit, where mediapipe's own __del__ fails


def _run(args: argparse.Namespace, det: Any, tasks: Any, thr: float) -> int:
    paths = list_images(args.images, args.max_images)
    print(f"MediaPipe Tasks FaceDetector ({args.tflite}) vs detector.predict ({args.config}, {args.weights}, "
          f"resize {det.preprocess_cfg['resize']}); score threshold {thr}, NMS IoU {det.postprocess.iou_thr}")
    print(f"{'image':<40} {'size':>9} {'mp':>3} {'bk':>3} {'pair':>4} {'score':>8} {'box int':>7} "
          f"{'kpt px':>8} {'kpt/img':>8}")
    saved, pairs, lone, lone_bad = {}, [], [], []
    for p in paths:
        img = load_image(p)
        h, w = img.shape[:2]
        t = tasks_detect(tasks, img)
        o = det.predict(img, score_thr=thr)[0]
        saved[p.name] = t
        c = compare(t, o, h, w, thr, args.score_tol)
        pairs += c["pairs"]
        lone += c["lone_scores"]
        lone_bad += c["lone_bad"]

        def worst(key: str) -> float:
            return max((r[key] for r in c["pairs"]), default=0.0)

        print(f"{p.name[-40:]:<40} {w:>4}x{h:<4} {len(t['scores']):>3} {len(o['scores']):>3} "
              f"{len(c['pairs']):>4} {worst('score'):>8.1e} {worst('box_int'):>7.0f} {worst('kpt_px'):>8.1e} "
              f"{worst('kpt_frac'):>8.1e}")
    if args.save:
        import hashlib

        import mediapipe

        meta = {"mediapipe": mediapipe.__version__, "api": "mediapipe.tasks.python.vision.FaceDetector (IMAGE mode)",
                "tflite": Path(args.tflite).name, "tflite_md5": hashlib.md5(Path(args.tflite).read_bytes()).hexdigest(),
                "min_detection_confidence": thr, "min_suppression_threshold": float(det.postprocess.iou_thr),
                "boxes": "[x, y, w, h] integer pixels", "keypoints": "[x, y] normalised by image width, height",
                "images": "blazekit.inference.load_image"}
        rows = ",\n".join(f"  {json.dumps(name)}: {json.dumps(d)}" for name, d in saved.items())
        Path(args.save).write_text(f'{{"_meta": {json.dumps(meta, indent=1)},\n "images": {{\n{rows}}}}}\n')
    print(f"\n{len(paths)} images, {len(pairs)} faces paired, {len(lone)} found by one side only "
          f"({len(lone_bad)} of them beyond threshold +- {args.score_tol})")
    failed = bool(lone_bad)
    for key, tol, fmt in [("score", args.score_tol, ".2e"), ("box_px", None, ".2f"),
                          ("box_int", args.box_tol, ".0f"), ("kpt_px", None, ".2e"), ("kpt_frac", args.kpt_tol, ".2e")]:
        vals = np.array([r[key] for r in pairs]) if pairs else np.zeros(1)
        bad = tol is not None and float(vals.max()) > tol
        failed |= bad
        print(f"  {key:<9} max {vals.max():{fmt}}  median {np.median(vals):{fmt}}"
              + ("" if tol is None else f"  (tolerance {tol}{': MISSED' if bad else ''})"))
    print("FAIL" if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
