"""CPU latency of the front model: blazekit (eager PyTorch, optimised PyTorch, ONNX Runtime) vs MediaPipe's TFLite.

    python benchmarks/latency.py                 # threads 1 and 2, ~5 minutes on 2 idle cores
    python benchmarks/latency.py --threads 1 --repeats 500   # steadier medians

Every path is timed in one process on the same machine, on the same 640x480 uint8 RGB frame, at batch 1
and batch 64, both *end to end* (uint8 image -> decoded detections in original pixels) and *model only*
(normalised tensor -> raw outputs). Threads are fixed per row (torch.set_num_threads, onnxruntime
intra_op_num_threads, LiteRT num_threads). Paths:

- ``torch eager``: ``build_detector(..., weights="mediapipe_short_range").predict`` as shipped;
- ``torch fused``: the same after ``fuse_bn`` + channels_last + inference_mode;
- ``onnxruntime``: ``tools/export.py`` output; end to end = ``OnnxDetector`` (decode + NMS in the graph);
- ``onnxruntime MP-w``: the same export with MediaPipe's channel widths (``channel_multiple=1``), model only:
  the baseline for what :mod:`blazekit.deploy.channel_align` gains;
- ``onnxruntime lean``: the raw ONNX export in ``blazekit.deploy.fastpath.FastDetector``: numpy letterbox into a
  reused buffer, logits thresholded before decoding, numpy weighted blending; batch 64 = 64 batch-1 calls;
- ``litert``: ``face_detection_short_range.tflite`` in ai-edge-litert (XNNPACK); end to end uses blazekit's
  letterbox/normalise and torch decode/weighted blending around ``invoke`` (MediaPipe's own C++
  calculators are not in the Python interpreter);
- ``litert lean``: the same LiteRT model with the *same* lean numpy pre/post as ``onnxruntime lean``
  (NHWC buffer), also 64 batch-1 calls at batch 64 -- the like-for-like comparison.

Prints the table, the ratios to LiteRT, and where the time goes for eager PyTorch and the lean path. Last,
the batch-1 end-to-end race (onnxruntime lean vs litert lean) is rerun with each path alone in a fresh
process, in back-to-back pairs: that is how an application runs it, and with threads > 1 the in-process rows swung
up to 2x on the 2-vCPU development VM (the same onnxruntime session read 0.74 and 1.46 ms a few seconds apart).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from blazekit.deploy.export import export_onnx  # noqa: E402
from blazekit.deploy.fastpath import FastDetector, LeanPostprocessor  # noqa: E402
from blazekit.deploy.fuse import fuse_bn  # noqa: E402
from blazekit.deploy.runtime import OnnxDetector, onnx_session, preprocessor_for  # noqa: E402
from blazekit.inference import load_image  # noqa: E402
from blazekit.models.build import build_detector  # noqa: E402
from blazekit.preprocess import letterbox, normalize  # noqa: E402

CONFIG = "_base_/models/blazeface_front.yml"
SHARED = Path(os.environ.get("BLAZEKIT_SHARED", ROOT.parent / "shared"))  # as tests/conftest.py
TFLITE_CANDIDATES = [SHARED / "weights" / "mediapipe" / "face_detection_short_range.tflite"]


def time_paths(fns: Sequence[Callable[[], object]], repeats: int, per_round: int = 10,
               warmup: int = 3) -> List[Tuple[float, float]]:
    """(median, p90) ms of each function, timed round-robin in rounds of ``per_round`` calls per function.

    Interleaving puts every path under the same machine state (a shared VM's speed drifts by tens of
    percent within seconds), so the ratios between paths hold even when absolute numbers move.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    per = max(1, min(per_round, repeats))
    samples: List[List[float]] = [[] for _ in fns]
    for _ in range(max(1, -(-repeats // per))):
        for i, fn in enumerate(fns):
            for _ in range(per):
                t0 = time.perf_counter()
                fn()
                samples[i].append((time.perf_counter() - t0) * 1e3)
    out = []
    for ts in samples:
        ts.sort()
        out.append((statistics.median(ts), ts[min(len(ts) - 1, int(round(0.9 * (len(ts) - 1))))]))
    return out


def pipeline_split(fast: FastDetector, frame: np.ndarray, repeats: int) -> Dict[str, float]:
    """Median ms of each stage of ``fast.predict([frame])``, timed inside the real sequence.

    Timing a stage alone in a loop keeps its data in cache; in the pipeline the 0.9 MB frame evicts the
    weights, so isolated numbers undercount. These are the stages as a caller pays for them.
    """
    parts: Dict[str, List[float]] = {"pre-process (lean letterbox+normalise)": [], "model (onnxruntime raw)": [],
                                     "post-process (lean decode+blending)": []}
    names = list(parts)
    for i in range(repeats + 3):
        t0 = time.perf_counter()
        x, infos = fast.pre([frame])
        t1 = time.perf_counter()
        reg, logits = fast.runner(x)
        t2 = time.perf_counter()
        fast.post(reg, logits, infos)
        t3 = time.perf_counter()
        if i >= 3:
            for name, dt in zip(names, (t1 - t0, t2 - t1, t3 - t2)):
                parts[name].append(dt * 1e3)
    return {k: statistics.median(v) for k, v in parts.items()}


def find_tflite(arg: str = None) -> Path:
    cands = [Path(arg)] if arg else list(TFLITE_CANDIDATES)
    try:  # the mediapipe wheel ships it too
        import mediapipe  # type: ignore

        cands.append(Path(mediapipe.__file__).parent / "modules" / "face_detection" / "face_detection_short_range.tflite")
    except ImportError:
        pass
    for c in cands:
        if c.is_file():
            return c
    raise SystemExit(f"face_detection_short_range.tflite not found (looked in {', '.join(map(str, cands))}); "
                     "pass --tflite PATH")


class LiteRT:
    """MediaPipe's model in the LiteRT interpreter; batch B by resizing the input tensor.

    The model reshapes each level to batch 1 before concatenating, so a batch-B run returns
    ``[1, B*A, C]`` ordered level by level; :meth:`raw` restores ``[B, A, C]``.
    """

    def __init__(self, path: Path, threads: int, det) -> None:
        from ai_edge_litert.interpreter import Interpreter

        gen, size = det.anchor_generator, det.input_size
        level_anchors = [n * h * w for n, (h, w) in zip(gen.num_anchors_per_level(size), gen.grid_sizes(size))]

        self.it = Interpreter(model_path=str(path), num_threads=threads)
        self.inp = self.it.get_input_details()[0]["index"]
        outs = {o["name"]: o["index"] for o in self.it.get_output_details()}
        self.reg, self.cls = outs["regressors"], outs["classificators"]
        self.levels = list(level_anchors)
        self.batch = 0

    def raw(self, x_nhwc: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        b = x_nhwc.shape[0]
        if b != self.batch:
            self.it.resize_tensor_input(self.inp, list(x_nhwc.shape))
            self.it.allocate_tensors()
            self.batch = b
        self.it.set_tensor(self.inp, x_nhwc)
        self.it.invoke()
        return self._unbatch(self.it.get_tensor(self.reg), b), self._unbatch(self.it.get_tensor(self.cls), b)

    def _unbatch(self, t: np.ndarray, b: int) -> np.ndarray:
        parts, start = [], 0
        for n in self.levels:
            parts.append(t[0, start:start + n * b].reshape(b, n, -1))
            start += n * b
        return np.concatenate(parts, axis=1)


def preprocess(images: Sequence[np.ndarray], size: Tuple[int, int]):
    boxed = [letterbox(im, size) for im in images]
    return np.stack([normalize(b) for b, _ in boxed]), [i for _, i in boxed]


def litert_predict(lite: LiteRT, det, images: Sequence[np.ndarray]) -> List[Dict[str, np.ndarray]]:
    """uint8 images -> detections with LiteRT doing the network (blazekit pre/post around it)."""
    x, infos = preprocess(images, det.input_size)
    reg, cls = lite.raw(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    boxes, kpts, scores = det.decode(torch.from_numpy(reg), torch.from_numpy(cls))
    out = []
    for i, info in enumerate(infos):
        d = det.postprocess(boxes[i], scores[i], kpts[i])
        out.append({"boxes": info.to_original(d["boxes"].numpy()), "scores": d["scores"].numpy()})
    return out


def lean_litert(lite: LiteRT, det) -> FastDetector:
    """LiteRT with blazekit's lean numpy pre/post (NHWC buffer), one image per invoke."""
    return FastDetector(lite.raw, preprocessor_for(det, layout="NHWC"), LeanPostprocessor.from_detector(det),
                        micro_batch=1)


SOLO_PATHS = ("onnxruntime lean", "litert lean")


def solo_main(path: str, threads: int, repeats: int, onnx_path: str, tflite: str, image: str) -> int:
    """Child process: build one path only, time ``predict`` on the frame, print one JSON line."""
    torch.set_num_threads(threads)
    det = build_detector(CONFIG, weights="mediapipe_short_range").eval()
    frame = cv2.resize(load_image(image), (640, 480), interpolation=cv2.INTER_LINEAR)
    fast = (FastDetector.from_onnx(det, onnx_path, threads) if path == "onnxruntime lean"
            else lean_litert(LiteRT(Path(tflite), threads, det), det))
    fn: Callable[[], object] = lambda: fast.predict([frame])
    med, p90 = time_paths([fn], repeats, per_round=repeats, warmup=50)[0]
    print(json.dumps({"median": med, "p90": p90}))
    return 0


def solo_runs(threads: int, repeats: int, onnx_path: Path, tflite: Path, image: str, rounds: int = 5
              ) -> Dict[str, List[float]]:
    """Median ms of each SOLO_PATHS entry, each in a fresh process (one runtime, one thread pool, as deployed),
    alternating paths for ``rounds`` rounds (each round is a pair measured back to back)."""
    out: Dict[str, List[float]] = {p: [] for p in SOLO_PATHS}
    for _ in range(rounds):
        for path in SOLO_PATHS:
            cmd = [sys.executable, __file__, "--solo", path, "--threads", str(threads), "--repeats", str(repeats),
                   "--onnx", str(onnx_path), "--tflite", str(tflite), "--image", image]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            out[path].append(json.loads(res.stdout.strip().splitlines()[-1])["median"])
    return out


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--solo", default=None, choices=SOLO_PATHS, help=argparse.SUPPRESS)
    ap.add_argument("--onnx", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--solo-rounds", type=int, default=5,
                    help="fresh processes per path for the one-runtime-per-process comparison (0: skip it)")
    ap.add_argument("--repeats", type=int, default=200,
                    help="timed runs per path at batch 1 (batch 64: repeats // 20, >= 5), interleaved 10 (batch 64: 1) at a time")
    ap.add_argument("--image", default=str(ROOT / "blazekit" / "data" / "demo" / "images" / "astronaut.jpg"))
    ap.add_argument("--tflite", default=None)
    return ap.parse_args(argv)


class Runtimes:
    """Every runtime of one thread count, built once and timed at batch 1 and 64."""

    def __init__(self, det: torch.nn.Module, fused: torch.nn.Module, files: Dict[str, Path], threads: int) -> None:
        size = det.input_size
        self.det, self.fused = det, fused
        self.ort_raw = onnx_session(files["raw"], threads)
        self.lite = LiteRT(files["tflite"], threads, det)
        self.lite_lean = lean_litert(LiteRT(files["tflite"], threads, det), det)
        self.ort_lean = FastDetector.from_onnx(det, files["raw"], threads=threads, micro_batch=1)
        self.plain_raw = onnx_session(files["plain"], threads)
        self.ort_det = OnnxDetector(files["pp"], size, threads=threads, micro_batch=1)

    def paths(self, imgs: List[np.ndarray], x: np.ndarray) -> List[Tuple[str, str, Callable[[], Any]]]:
        """(path, kind, call) for one batch of frames ``imgs`` and their network input ``x``."""
        det, fused, batch = self.det, self.fused, len(imgs)
        xt = torch.from_numpy(x)
        xcl = xt.contiguous(memory_format=torch.channels_last)
        x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))

        def eager_raw():
            with torch.no_grad():
                return det.raw(xt)

        def fused_raw():
            with torch.inference_mode():
                return fused.raw(xcl)

        def fused_predict():
            with torch.inference_mode():
                return fused.predict(imgs, batch_size=batch)

        def ort_micro():
            return [self.ort_raw.run(None, {"images": x[i:i + 1]}) for i in range(batch)]

        paths = [
            ("torch eager", "end-to-end", lambda: det.predict(imgs, batch_size=batch)),
            ("torch eager", "model", eager_raw),
            ("torch fused", "end-to-end", fused_predict),
            ("torch fused", "model", fused_raw),
            ("onnxruntime", "end-to-end", lambda: self.ort_det.predict(imgs)),
            ("onnxruntime", "model", lambda: self.ort_raw.run(None, {"images": x})),
            ("onnxruntime MP-w", "model", lambda: self.plain_raw.run(None, {"images": x})),
            ("onnxruntime lean", "end-to-end", lambda: self.ort_lean.predict(imgs)),
            ("litert", "end-to-end", lambda: litert_predict(self.lite, det, imgs)),
            ("litert lean", "end-to-end", lambda: self.lite_lean.predict(imgs)),
            ("litert", "model", lambda: self.lite.raw(x_nhwc)),
        ]
        if batch > 1:
            paths.insert(8, ("onnxruntime x1", "model", ort_micro))
        return paths


def eager_split(det: torch.nn.Module, imgs: List[np.ndarray], x: np.ndarray, reps: int) -> Tuple[float, float, float]:
    """Median ms of pre-processing, decoding and blending: where the eager time goes besides the model."""
    size, batch = det.input_size, len(imgs)
    with torch.no_grad():
        reg, cls = det.raw(torch.from_numpy(x))
        boxes, kpts, scores = det.decode(reg, cls)
    return tuple(m for m, _ in time_paths(
        [lambda: preprocess(imgs, size), lambda: det.decode(reg, cls),
         lambda: [det.postprocess(boxes[i], scores[i], kpts[i]) for i in range(batch)]],
        reps, per_round=10 if batch == 1 else 1, warmup=1))


def measure(det: torch.nn.Module, fused: torch.nn.Module, files: Dict[str, Path], frame: np.ndarray,
            args: argparse.Namespace) -> Tuple[List[Tuple[int, str, str, int, float, float]], Dict, Dict]:
    """(rows: threads, path, kind, batch, median, p90), the eager splits and the lean onnxruntime splits."""
    rows: List[Tuple[int, str, str, int, float, float]] = []
    splits, lean_splits = {}, {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        runtimes = Runtimes(det, fused, files, threads)
        for batch in (1, 64):
            reps = args.repeats if batch == 1 else max(5, args.repeats // 20)
            imgs = [frame] * batch
            x, _ = preprocess(imgs, det.input_size)
            paths = runtimes.paths(imgs, x)
            timed = time_paths([fn for _, _, fn in paths], reps, per_round=10 if batch == 1 else 1,
                               warmup=3 if batch == 1 else 1)
            for (name, kind, _), (med, p90) in zip(paths, timed):
                rows.append((threads, name, kind, batch, med, p90))
            pre_t, decode_t, blend_t = eager_split(det, imgs, x, reps)
            splits[(threads, batch)] = {
                "pre-process (letterbox+normalise)": pre_t,
                "model (det.raw)": next(r[4] for r in rows[::-1] if r[1] == "torch eager" and r[2] == "model"),
                "decode": decode_t,
                "weighted blending (per image)": blend_t,
            }
        # where the lean onnxruntime time goes (per image, batch-1 calls, stages timed in sequence)
        lean_splits[threads] = pipeline_split(runtimes.ort_lean, frame, args.repeats)
    return rows, splits, lean_splits


def sanity_check(det: torch.nn.Module, tflite: Path, frame: np.ndarray) -> None:
    """LiteRT batch 4 equals LiteRT batch 1 (the un-batching is right) and blazekit equals LiteRT."""
    x1, _ = preprocess([frame], det.input_size)
    lite = LiteRT(tflite, 1, det)
    r1 = lite.raw(np.ascontiguousarray(x1.transpose(0, 2, 3, 1)))
    r64 = lite.raw(np.ascontiguousarray(np.repeat(x1, 4, 0).transpose(0, 2, 3, 1)))
    with torch.no_grad():
        rt = det.raw(torch.from_numpy(x1))
    print(f"check: LiteRT batch-4 vs batch-1 max diff {np.abs(r64[0][3] - r1[0][0]).max():.2e}; "
          f"blazekit vs LiteRT logits max diff {np.abs(rt[1].numpy() - r1[1]).max():.2e}\n")


def print_table(rows: List[Tuple[int, str, str, int, float, float]]) -> Dict[Tuple[int, str, int], float]:
    """The rows with their ratio to LiteRT; returns LiteRT's latency by (threads, kind, batch)."""
    print(f"{'threads':>7} {'path':<17} {'kind':<11} {'batch':>5} {'median ms':>10} {'p90 ms':>8} {'img/s':>8} "
          f"{'vs LiteRT':>9}")
    ref = {(t, k, b): m for t, n, k, b, m, _ in rows if n == "litert"}  # LiteRT with blazekit's torch pre/post
    for t, n, k, b, m, p in rows:
        print(f"{t:>7} {n:<17} {k:<11} {b:>5} {m:>10.2f} {p:>8.2f} {b * 1e3 / m:>8.0f} {m / ref[(t, k, b)]:>8.2f}x")
    print("\n'vs LiteRT' = latency / LiteRT latency at the same threads, kind and batch (< 1: faster than LiteRT).")
    print("'onnxruntime x1' = the 64 images as 64 batch-1 calls (onnxruntime's depthwise kernels are faster so).")
    print("'onnxruntime MP-w' = the export with MediaPipe's channel widths (channel_multiple=1); every other "
          "onnxruntime row\nuses the default export, widths rounded up to 16 (blazekit.deploy.channel_align).")
    print("Paths are timed round-robin (10 calls at a time at batch 1, 1 at batch 64), so all rows of one "
          "threads/batch block\nshare the machine state.")
    print("end-to-end = uint8 640x480 frame -> detections in original pixels. 'litert' uses blazekit's torch "
          "decode/blending;\n'onnxruntime lean' and 'litert lean' use the same numpy pre/post "
          "(blazekit.deploy.fastpath), 64 batch-1 calls at batch 64.\n")
    return ref


def print_summary(rows: List[Tuple[int, str, str, int, float, float]], ref: Dict[Tuple[int, str, int], float],
                  splits: Dict, lean_splits: Dict, threads_list: Sequence[int]) -> None:
    """Per thread count: the fastest paths against LiteRT, where the time goes, what channel alignment buys."""
    def pick(t, n, k, b):
        return next(m for tt, nn, kk, bb, m, _ in rows if (tt, nn, kk, bb) == (t, n, k, b))

    for t in threads_list:
        best1 = min((m, n) for tt, n, k, b, m, _ in rows
                    if tt == t and b == 1 and k == "end-to-end" and not n.startswith("litert"))
        lite1 = ref[(t, "end-to-end", 1)]
        eager1 = pick(t, "torch eager", "end-to-end", 1)
        best64 = min((m, n) for tt, n, k, b, m, _ in rows
                     if tt == t and b == 64 and k == "end-to-end" and not n.startswith("litert"))
        thr = (64e3 / best64[0]) / (1e3 / eager1)
        lean1 = pick(t, "litert lean", "end-to-end", 1)
        print(f"threads={t}: fastest blazekit end-to-end batch 1 = {best1[1]} {best1[0]:.2f} ms vs LiteRT "
              f"{lite1:.2f} ms (ratio {best1[0] / lite1:.2f}; vs LiteRT with the same lean pre/post {lean1:.2f} ms, "
              f"ratio {best1[0] / lean1:.2f}); batch-64 throughput ({best64[1]}) = "
              f"{thr:.1f}x eager batch-1 throughput")
    print("\nwhere eager PyTorch end-to-end time goes (ms per call):")
    for (t, b), parts in splits.items():
        total = sum(parts.values())
        print(f"  threads={t} batch={b}: " + ", ".join(f"{k} {v:.2f} ({100 * v / total:.0f}%)" for k, v in parts.items()))
    for t in threads_list:
        for b in (1, 64):
            a, w = pick(t, "onnxruntime", "model", b), pick(t, "onnxruntime MP-w", "model", b)
            print(f"channel alignment, threads={t} batch={b}: onnxruntime model {a:.2f} ms vs {w:.2f} ms with "
                  f"MediaPipe's widths (ratio {a / w:.2f})")
    print("where onnxruntime lean end-to-end time goes (ms per image):")
    for t, parts in lean_splits.items():
        total = sum(parts.values())
        print(f"  threads={t} batch=1: " + ", ".join(f"{k} {v:.2f} ({100 * v / total:.0f}%)" for k, v in parts.items()))


def print_solo(args: argparse.Namespace, onnx_path: Path, tflite: Path) -> None:
    print("\none runtime per process, as deployed (batch 1 end to end; each number is one fresh process's median; "
          "pairs run\nback to back, so compare within a pair):")
    for t in args.threads:
        solo = solo_runs(t, max(args.repeats, 2000), onnx_path, tflite, args.image, args.solo_rounds)
        ratios = [a / b for a, b in zip(solo["onnxruntime lean"], solo["litert lean"])]
        print(f"  threads={t}: " + ", ".join(f"{p} {statistics.median(solo[p]):.2f} ms "
                                             f"({' '.join(f'{v:.2f}' for v in solo[p])})" for p in SOLO_PATHS)
              + f"; onnxruntime lean / litert lean per round {' '.join(f'{r:.2f}' for r in ratios)}, "
                f"median {statistics.median(ratios):.2f}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.solo:
        return solo_main(args.solo, args.threads[0], args.repeats, args.onnx, args.tflite, args.image)
    det = build_detector(CONFIG, weights="mediapipe_short_range").eval()
    size = det.input_size
    frame = cv2.resize(load_image(args.image), (640, 480), interpolation=cv2.INTER_LINEAR)
    tmp = Path(tempfile.mkdtemp(prefix="blazekit_bench_"))
    files = {"tflite": find_tflite(args.tflite), "raw": export_onnx(det, tmp / "raw.onnx"),
             "pp": export_onnx(det, tmp / "pp.onnx", with_postprocess=True),
             # the same export with MediaPipe's own channel widths: what channel alignment buys, in the same run
             "plain": export_onnx(det, tmp / "plain.onnx", channel_multiple=1)}
    fused = fuse_bn(det).to(memory_format=torch.channels_last)
    print(f"blazekit latency: front model {size[0]}x{size[1]}, 640x480 uint8 RGB frame, torch {torch.__version__}, "
          f"CPU {os.cpu_count()} cores; median / p90 ms per call\n")
    rows, splits, lean_splits = measure(det, fused, files, frame, args)
    sanity_check(det, files["tflite"], frame)
    ref = print_table(rows)
    print_summary(rows, ref, splits, lean_splits, args.threads)
    if args.solo_rounds > 0:
        print_solo(args, files["raw"], files["tflite"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
