#!/usr/bin/env python
"""How close does the trainer get to the model's own speed?

Images/s of full training steps through :class:`blazekit.engine.trainer.Trainer` (data loading + augmentation
+ collate + forward + loss + backward + optimizer + scheduler + EMA + logging) against the model-only step
(forward + loss + backward + optimizer on synthetic tensors already on the device, same targets every step),
in the same run, printed with their ratio. On CUDA too when a GPU is available (``--device cuda``; AMP per
the config). A ratio near 1 means the input pipeline and the loop overhead cost nothing.

    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py                       # quickstart config (bundled demo)
    python benchmarks/train_throughput.py configs/finetune_shared.yml --steps 20 --device cuda
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from blazekit import config as config_lib  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def full_steps(trainer, steps: int) -> float:
    """Images/s of ``steps`` real trainer iterations (after one warm-up step)."""
    trainer._set_train_mode()
    trainer.sampler.set_epoch(0)
    trainer._call("before_epoch")
    it = iter(trainer.train_loader)
    images, targets = next(it)
    trainer.train_step(images, targets)
    _sync(trainer.device)
    n, t0 = 0, time.perf_counter()
    for _ in range(steps):
        try:
            images, targets = next(it)
        except StopIteration:
            trainer.sampler.set_epoch(trainer.sampler.epoch + 1)
            it = iter(trainer.train_loader)
            images, targets = next(it)
        out = trainer.run_step(images, targets)  # the step record (lr, batch size, losses) the hooks read
        trainer._call("after_step", out)  # EMA update and logging hang on this hook point, as in Trainer.fit
        n += images.shape[0]
    _sync(trainer.device)
    return n / (time.perf_counter() - t0)


def model_only_steps(trainer, steps: int) -> float:
    """Images/s of forward + loss + backward + optimizer on one synthetic batch kept on the device."""
    images, targets = next(iter(trainer.train_loader))
    from blazekit.engine.trainer import _to_device

    images, targets = torch.randn_like(images).to(trainer.device), _to_device(targets, trainer.device)
    model, opt = trainer.train_model, trainer.optimizer
    amp = (torch.autocast(trainer.device.type, dtype=trainer.amp_dtype) if trainer.amp_dtype is not None else None)

    def step():
        if amp is not None:
            with amp:
                loss = model(images, targets)["loss"]
        else:
            loss = model(images, targets)["loss"]
        opt.zero_grad(set_to_none=True)
        trainer.scaler.scale(loss).backward()  # a disabled scaler (no fp16) passes both through
        trainer.scaler.step(opt)
        trainer.scaler.update()

    step()
    _sync(trainer.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(trainer.device)
    return steps * images.shape[0] / (time.perf_counter() - t0)


def run(config: str, device: str, steps: int, overrides, imports=()) -> dict:
    import blazekit  # noqa: F401
    from blazekit.engine.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(config, work_dir=tmp, device=device, overrides=list(overrides) + ["train.progress_bar=false"],
                     imports=imports)
        full = full_steps(tr, steps)
        model = model_only_steps(tr, steps)
        tr.logger.close()
    return {"device": str(tr.device), "batch": tr.batch_size, "full": full, "model": model}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default=str(REPO / "configs" / "quickstart.yml"))
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cpu, plus cuda when available)")
    config_lib.add_common_args(p)  # --set (repeatable) and --import, as the tools take them
    args = p.parse_args()
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"config {args.config}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    print(f"{'device':<8} {'batch':>5} {'full step img/s':>16} {'model-only img/s':>17} {'ratio':>6}")
    for dev in devices:
        r = run(args.config, dev, args.steps, args.overrides, args.imports)
        print(f"{r['device']:<8} {r['batch']:>5} {r['full']:>16.1f} {r['model']:>17.1f} {r['full'] / r['model']:>6.2f}")


if __name__ == "__main__":
    main()
