#!/usr/bin/env python
"""Is the data pipeline fast enough to feed training?

Measures samples/s of the training pipeline (JPEG decode + RandomFaceCrop + flip + jitter + letterbox + normalize
+ collate) through ``build_dataloader`` on ../shared/data/facemask with 0 and 1 worker processes, and, in the same
run, the model's own train step (forward + loss + backward + SGD step) on synthetic tensors. The ratio
pipeline-per-worker / train-step says how many workers keep one training process busy.

    OMP_NUM_THREADS=1 python benchmarks/data_pipeline.py [--samples 320] [--batch-size 32]
"""
import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from blazekit.data import build_dataloader  # noqa: E402

SHARED = Path(os.environ.get("BLAZEKIT_SHARED", REPO.parent / "shared"))
TRAIN_TRANSFORMS = [{"type": "RandomFaceCrop", "scales": [0.3, 1.0]}, {"type": "HorizontalFlip", "p": 0.5},
                    {"type": "PhotometricJitter"}, {"type": "Letterbox"}, {"type": "Normalize"}]
MODEL_CFG = REPO / "configs" / "_base_" / "models" / "blazeface_front.yml"


def pipeline_rate(workers: int, samples: int, batch_size: int) -> float:
    split = {"dataset": {"type": "CocoFaces", "ann_file": str(SHARED / "data" / "facemask" / "annotations.json")},
             "transforms": TRAIN_TRANSFORMS, "batch_size": batch_size, "num_workers": workers, "shuffle": True}
    loader = build_dataloader(split, {"input_size": [128, 128], "num_keypoints": 6}, seed=0)
    it = iter(loader)
    next(it)  # worker start-up and first batch are not throughput
    n, t0 = 0, time.perf_counter()
    while n < samples:
        images, _ = next(it)
        n += images.shape[0]
    rate = n / (time.perf_counter() - t0)
    del it, loader
    return rate


def train_step_rate(batch_size: int, steps: int):
    try:
        from blazekit import build_detector
        from blazekit.config import load

        model = build_detector(load(MODEL_CFG))
    except Exception as exc:  # another engineer's part missing: say so instead of failing the benchmark
        return None, f"build_detector unavailable: {type(exc).__name__}: {exc}"
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, 3, 128, 128, generator=g) * 2 - 1
    targets = []
    for _ in range(batch_size):
        n = 3
        xy = torch.rand(n, 2, generator=g) * 80
        wh = 16 + torch.rand(n, 2, generator=g) * 30
        boxes = torch.cat([xy, xy + wh], 1)
        kp = xy[:, None, :] + torch.rand(n, 6, 2, generator=g) * wh[:, None, :]
        targets.append({"boxes": boxes, "labels": torch.zeros(n, dtype=torch.int64), "keypoints": kp,
                        "keypoints_visible": torch.ones(n, 6, dtype=torch.bool), "ignore": torch.zeros(n, dtype=torch.bool)})

    def step():
        loss = model(images, targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - t0), ""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=320, help="samples timed per pipeline setting")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="timed train steps")
    args = p.parse_args()
    if not (SHARED / "data" / "facemask").is_dir():
        print(f"skipped: {SHARED / 'data' / 'facemask'} not found (set BLAZEKIT_SHARED)")
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, {os.cpu_count()} CPUs")
    for f in (SHARED / "data" / "facemask" / "images").iterdir():  # warm the OS file cache: time CPU, not disk
        f.read_bytes()
    rates = {}
    import cv2

    default_cv2_threads = cv2.getNumThreads()
    for workers in (0, 1):
        cv2.setNumThreads(1 if workers == 0 else default_cv2_threads)  # workers set 1 thread themselves
        rates[workers] = pipeline_rate(workers, args.samples, args.batch_size)
        print(f"pipeline  num_workers={workers}: {rates[workers]:7.1f} samples/s"
              + ("  (main process, cv2 1 thread)" if workers == 0 else "  (1 worker process)"))
    per_worker = rates[1]
    train, why = train_step_rate(args.batch_size, args.steps)
    if train is None:
        print(f"train step: not measured ({why})")
        return 0
    print(f"train step (forward+loss+backward+SGD, batch {args.batch_size}, 128x128): {train:7.1f} samples/s")
    ratio = per_worker / train
    print(f"ratio pipeline per worker / train step = {ratio:.2f}  ->  "
          f"{max(1, int(-(-train // per_worker)))} worker(s) keep one training process fed"
          + ("" if ratio >= 1 else " (use num_workers >= that)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
