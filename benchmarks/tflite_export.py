"""The exported MediaPipe .tflite next to MediaPipe's own file: size, LiteRT latency, outputs vs PyTorch.

    python benchmarks/tflite_export.py                          # MediaPipe's weights + a fine-tuned stand-in
    python benchmarks/tflite_export.py --weights work_dirs/x/best.pt --config configs/finetune_shared.yml

For short range (128) and full range (192): MediaPipe's file (the shipped template), and the export of
``--weights`` (default: the MediaPipe weights after a few Adam steps on the bundled demo photos, every layer
trained, pruned zeros kept as ``train.keep_sparsity`` does) as fp16 and fp32, as fp16 after rounding the weights
the way ``train.fp16_weights`` does (its error is against that rounded model, which such a fine-tune saves), and,
full range, MediaPipe's file with every sparse tensor stored dense. Each file runs in ai-edge-litert (XNNPACK, batch 1, ``--threads``) in the same
process on the same demo photos; the table gives the median latency and its ratio to MediaPipe's file, the file
size, and the largest |LiteRT - det.raw| relative to the largest |output| per image.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from blazekit.deploy.fp16 import fp16_rounded  # noqa: E402
from blazekit.deploy.tflite import export_tflite  # noqa: E402
from blazekit.inference import load_image  # noqa: E402
from blazekit.models.build import build_detector  # noqa: E402
from blazekit.preprocess import letterbox, normalize  # noqa: E402
from blazekit.weights import TFLITE_TEMPLATES  # noqa: E402

MODELS = {"short range": ("configs/blazeface_front.yml", "mediapipe_short_range"),
          "full range": ("configs/blazeface_full_range.yml", "mediapipe_full_range")}
DEMO = ROOT / "blazekit" / "data" / "demo" / "images"
ROUNDED = "export fp16, fp16 wts"  # the weights rounded as train.fp16_weights does, error vs that model


def photos(size: int) -> np.ndarray:
    imgs = [load_image(p) for p in sorted(DEMO.glob("*.jpg"))]
    return np.stack([normalize(letterbox(im, (size, size))[0]) for im in imgs])


def stand_in_fine_tune(det: torch.nn.Module, steps: int = 5) -> torch.nn.Module:
    """Adam steps on the demo photos labelled with the model's own detections (all layers; zeros kept)."""
    size = det.input_size[0]
    boxed = [letterbox(load_image(p), (size, size))[0] for p in sorted(DEMO.glob("*.jpg"))]
    targets = [{"boxes": d["boxes"], "keypoints": d["keypoints"]} for d in det.predict(boxed)]
    x = torch.from_numpy(np.stack([normalize(b) for b in boxed]))
    masks = {m: m.weight != 0 for m in det.modules() if isinstance(m, torch.nn.Conv2d)}
    opt = torch.optim.Adam(det.parameters(), lr=1e-3)
    det.train()
    torch.manual_seed(0)
    for _ in range(steps):
        loss = det(x + 0.05 * torch.randn_like(x), targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for m, keep in masks.items():
                m.weight.mul_(keep)
    return det.eval()


def litert(path: Path, x: np.ndarray, threads: int, repeats: int):
    """(outputs per image, median ms per invoke) of ``path`` in LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    inp = it.get_input_details()[0]["index"]
    outs = []
    for img in x:
        it.set_tensor(inp, np.ascontiguousarray(img.transpose(1, 2, 0)[None]))
        it.invoke()
        outs.append(sorted((it.get_tensor(d["index"])[0] for d in it.get_output_details()), key=lambda a: a.shape[-1]))
    one = np.ascontiguousarray(x[0].transpose(1, 2, 0)[None])
    times = []
    for _ in range(repeats):
        it.set_tensor(inp, one)
        t = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - t)
    return outs, 1e3 * statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, help="checkpoint to export (default: a fine-tuned stand-in)")
    p.add_argument("--config", default=None, help="its config (default: the shipped model config)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"{'model':<11} {'file':<22} {'size KB':>8} {'ms':>7} {'x MediaPipe':>11} {'max rel err':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (cfg, weights) in MODELS.items():
            det = build_detector(ROOT / cfg, weights=weights).eval()
            if args.weights is not None:
                chosen = build_detector(args.config or ROOT / cfg, weights=args.weights).eval()
                if tuple(chosen.input_size) != tuple(det.input_size):
                    continue
                det = chosen
            else:
                det = stand_in_fine_tune(det)
            size = det.input_size[0]
            x = photos(size)
            rounded = fp16_rounded(det)  # what train.fp16_weights saves: its fp16 file is exact
            with torch.no_grad():
                refs = {False: [t.numpy() for t in det.raw(torch.from_numpy(x))],
                        True: [t.numpy() for t in rounded.raw(torch.from_numpy(x))]}
            files = {"MediaPipe's file": Path(TFLITE_TEMPLATES[(size, size)]["path"])}
            for label, kw in (("export fp16", {}), ("export fp32", {"precision": "fp32"})):
                files[label] = export_tflite(det, Path(tmp) / f"{label}.tflite", **kw).path
            files[ROUNDED] = export_tflite(rounded, Path(tmp) / "rounded.tflite", densify=True).path
            if name == "full range":
                from blazekit.deploy import tflite

                # every sparse tensor dense, fp16: what --densify costs at most
                buf = tflite._restructure(files["MediaPipe's file"].read_bytes(), False, True)
                dense = Path(tmp) / "dense.tflite"
                dense.write_bytes(buf)
                files["MediaPipe dense fp16"] = dense
            base = None
            for label, path in files.items():
                outs, ms = litert(path, x, args.threads, args.repeats)
                base = base or ms
                err = "-"
                if label.startswith("export"):
                    reg, logits = refs[label == ROUNDED]
                    err = max(max(float(np.abs(o[k] - r[i]).max() / np.abs(r[i]).max()) for i, o in enumerate(outs))
                              for k, r in ((1, reg), (0, logits)))
                    err = f"{err:.1e}"
                print(f"{name:<11} {label:<22} {path.stat().st_size / 1e3:>8.1f} {ms:>7.3f} {ms / base:>11.2f} "
                      f"{err:>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
