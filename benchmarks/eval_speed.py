"""How long ``tools/eval.py`` takes compared with the eager network forward on the same images.

Default set: FDDB folds 4-5 (the ``test`` split of configs/finetune_shared.yml, 579 images) at 320x320 with
``eval.score_thr`` 0.02 and 1000 detections per image. In one process: (1) the eager PyTorch forward
(``detector.raw``, BatchNorm unfolded, batches of ``eval.batch_size``) over the letterboxed images, timed alone;
(2) the whole eval command (weights loading, image reading, network, post-processing, COCO AP) per backend.

    OMP_NUM_THREADS=2 python benchmarks/eval_speed.py [--max-images N] [--backends onnxruntime torch]

Prints each backend's time as a ratio to (1) (target <= 1.0) and the largest metric difference between the
backends (target <= 1e-4).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
REPO = Path(__file__).resolve().parent.parent


def eager_forward_seconds(cfg_path: str, split: str, weights: str, size: int, max_images: int, overrides) -> float:
    """Seconds of ``detector.raw`` (eager, as built) over the letterboxed images of the split, batch by batch."""
    import numpy as np
    import torch

    from blazekit import build_detector, config
    from blazekit.data import build_dataset
    from blazekit.evaluation.evaluator import _dataset_cfgs
    from blazekit.preprocess import letterbox, normalize

    cfg = config.load(cfg_path, overrides=overrides)
    det = build_detector(cfg, weights=weights).eval()
    bs = int((cfg.get("eval") or {}).get("batch_size", 16))
    total = 0.0
    for _, ds_cfg in _dataset_cfgs(cfg, split):
        ds = build_dataset(ds_cfg)
        n = min(len(ds), max_images) if max_images else len(ds)
        x = torch.from_numpy(np.stack([normalize(letterbox(ds[i]["image"], (size, size))[0]) for i in range(n)]))
        with torch.no_grad():
            det.raw(x[:bs])  # warm-up
            t0 = time.perf_counter()
            for s in range(0, n, bs):
                det.raw(x[s:s + bs])
            total += time.perf_counter() - t0
    return total


def tool_seconds(args_list) -> tuple:
    """(seconds, metrics) of one in-process run of the eval command."""
    from blazekit.commands.eval import main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main([*args_list, "--out", str(out)])
        dt = time.perf_counter() - t0
        if rc:
            raise SystemExit(f"eval exited with {rc}")
        return dt, json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "finetune_shared.yml"))
    p.add_argument("--split", default="test")
    p.add_argument("--weights", default="mediapipe_short_range")
    p.add_argument("--size", type=int, default=320, help="test scale (square)")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--backends", nargs="+", default=["onnxruntime", "torch"])
    args = p.parse_args()
    os.environ.setdefault("BLAZEKIT_SHARED", str(REPO.parent / "shared"))
    overrides = [f"eval.test_scale=[{args.size},{args.size}]", "eval.score_thr=0.02", "eval.max_det=1000"]
    import torch

    print(f"{args.config} split {args.split}, {args.size}x{args.size}, score_thr 0.02, max_det 1000, "
          f"torch threads {torch.get_num_threads()}")
    eager = eager_forward_seconds(args.config, args.split, args.weights, args.size, args.max_images, overrides)
    print(f"eager network forward: {eager:.2f} s")
    cmd = [args.config, "--split", args.split, "--weights", args.weights, "--quiet", "--set", *overrides]
    if args.max_images:
        cmd += ["--max-images", str(args.max_images)]
    results = {}
    for backend in args.backends:
        dt, metrics = tool_seconds([*cmd, "--backend", backend])
        results[backend] = metrics
        print(f"eval --backend {backend:<12} {dt:7.2f} s   ratio to eager forward {dt / eager:.3f}   "
              f"coco/AP {metrics['coco/AP']:.4f} AP50 {metrics['coco/AP50']:.4f}")
    if len(results) > 1:
        ref, *others = results.values()
        keys = [k for k, v in ref.items() if isinstance(v, float)]
        diff = max(abs(ref[k] - o[k]) for o in others for k in keys)
        print(f"largest metric difference between backends: {diff:.2e}")


if __name__ == "__main__":
    main()
