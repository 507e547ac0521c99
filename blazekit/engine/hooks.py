"""Callback points of the training loop (detectron2's ``HookBase``, smaller).

The loop only trains; what happens around a step or an epoch (EMA, logging, checkpoints, validation)
hangs on these points, in the order of ``Trainer.hooks``. A hook reads and changes the trainer it is
attached to (``self.trainer``); at ``after_step`` the step counters are already advanced, at
``after_epoch`` the epoch counter is too.
"""
from __future__ import annotations

import math
import time
from typing import Any, Dict, Optional

import torch

from . import distributed as dist_utils
from .ema import unwrap
from .logger import fmt_metrics, scalar_floats


class HookBase:
    """No-op callbacks; subclasses override the points they need."""

    trainer: Any = None

    def before_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def after_step(self, out: Optional[Dict[str, float]]) -> None:
        """``out``: the step's loss terms, or None when the step was skipped (non-finite loss)."""

    def after_epoch(self) -> None:
        pass

    def after_train(self) -> None:
        pass


class KeepSparsityHook(HookBase):
    """``train.keep_sparsity``: weights that start at zero in a pruned tensor stay zero after every step.

    MediaPipe's full-range model stores 46 convs sparse (~62 % zeros); kept zero, the fine-tuned weights still fit
    its sparse layout, so the .tflite export keeps MediaPipe's size and speed (no ``--densify``). A tensor counts as
    pruned with >= ``min_zeros`` of its entries exactly zero, so the odd zero of a dense tensor is not frozen.
    Runs before the EMA hook, so the averaged model is sparse too.
    """

    def __init__(self, min_zeros: float = 0.25) -> None:
        self.min_zeros = min_zeros
        self.masks: Dict[str, Any] = {}

    def before_train(self) -> None:
        model = unwrap(self.trainer.model)
        self.masks = {name: p != 0 for name, p in model.named_parameters()
                      if p.dim() == 4 and p.numel() >= 64 and float((p == 0).float().mean()) >= self.min_zeros}
        if self.masks and self.trainer.is_main:
            self.trainer.logger.info("keep_sparsity: %d pruned tensors keep their zeros", len(self.masks))

    def after_step(self, out: Optional[Dict[str, float]]) -> None:
        if out is None or not self.masks:
            return
        params = dict(unwrap(self.trainer.model).named_parameters())
        with torch.no_grad():
            for name, mask in self.masks.items():
                params[name].mul_(mask)


class EMAHook(HookBase):
    """Blend the weights of every applied optimizer step into the EMA model."""

    def after_step(self, out: Optional[Dict[str, float]]) -> None:
        if out is not None and self.trainer.ema is not None:
            self.trainer.ema.update(self.trainer.model)


class LoggingHook(HookBase):
    """Progress bar, running means of the loss terms, one metrics record every ``train.log_interval`` steps."""

    def before_epoch(self) -> None:
        t = self.trainer
        self.sums: Dict[str, float] = {}
        self.count, self.images, self.t0, self.bar = 0, 0, time.time(), None
        if t.is_main and t.tcfg["progress_bar"]:
            from tqdm import tqdm

            self.bar = tqdm(total=t.iters_per_epoch, initial=t.iter_in_epoch, desc=f"epoch {t.epoch + 1}/{t.epochs}",
                            dynamic_ncols=True, leave=False)

    def after_step(self, out: Optional[Dict[str, float]]) -> None:
        t = self.trainer
        self.images += t.last_batch_size * t.world_size
        if out is not None:
            self.count += 1
            for k, v in out.items():
                self.sums[k] = self.sums.get(k, 0.0) + v
        dt = time.time() - self.t0
        ips = self.images / dt if dt > 0 else 0.0
        end = t.iter_in_epoch == t.iters_per_epoch
        if self.bar is not None:
            shown = {k: f"{v:.3f}" for k, v in (out or {}).items() if k.startswith("loss")}
            self.bar.set_postfix(shown, lr=f"{t.last_lr:.2e}", img_s=f"{ips:.1f}")
            self.bar.update(1)
        if t.global_step % max(1, int(t.tcfg["log_interval"])) == 0 or end:
            means = dist_utils.all_reduce_mean({k: v / max(self.count, 1) for k, v in self.sums.items()}, t.device)
            t.logger.scalars("train", t.global_step, {**means, "lr": t.last_lr, "images_per_s": ips},
                             epoch=t.epoch, iter=t.iter_in_epoch)
            if self.bar is None or end:
                t.logger.info("epoch %d/%d iter %d/%d %s lr %.3e %.1f img/s", t.epoch + 1, t.epochs, t.iter_in_epoch,
                              t.iters_per_epoch, fmt_metrics(means), t.last_lr, ips)
            self.sums, self.count = {}, 0

    def after_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()


class PeriodicCheckpointHook(HookBase):
    """``last.pt`` every ``train.checkpoint_interval`` iterations too (pre-emptible machines); epoch ends are
    written by :class:`EvalHook`."""

    def after_step(self, out: Optional[Dict[str, float]]) -> None:
        t = self.trainer
        every = int(t.tcfg["checkpoint_interval"])
        if every > 0 and t.global_step % every == 0 and t.iter_in_epoch < t.iters_per_epoch:
            t.save_checkpoint("last.pt")


class EvalHook(HookBase):
    """Validation before training (optional) and every ``train.val_interval`` epochs; ``last.pt`` at every
    epoch end and ``best.pt`` when ``train.val_metric`` improves."""

    def __init__(self) -> None:
        self.before: Optional[Dict[str, float]] = None

    def before_train(self) -> None:
        t = self.trainer
        if t.tcfg["val_before_train"] and t.has_val() and t.global_step == 0:
            self.before = t.validate()
            t.logger.scalars("val", 0, self.before, epoch=0)
            t.logger.info("validation before training: %s", fmt_metrics(self.before))

    def validate(self) -> Dict[str, float]:
        """Evaluate the deploy weights (EMA if enabled) with the evaluator; rank 0 runs it, all ranks get it."""
        t = self.trainer
        metrics: Dict[str, float] = {}
        if t.is_main:
            from .evaluator import evaluate

            net = t.ema.module if t.ema is not None else unwrap(t.model)
            n_vis = int(t.tcfg["val_vis"] or 0)
            vis_dir = t.work_dir / "vis" / f"epoch_{t.epoch:03d}" if n_vis > 0 else None
            # the evaluator sets eval mode / no_grad and restores the model's mode itself
            metrics = scalar_floats(evaluate(net, t.cfg, split="val", progress=bool(t.tcfg["progress_bar"]),
                                             vis_dir=vis_dir, num_vis=n_vis,
                                             datasets=getattr(t, "val_datasets", None)))  # built at the start
        metrics = dist_utils.broadcast_object(metrics)
        key = t.tcfg["val_metric"]
        if key not in metrics:
            from .state import TrainingError

            raise TrainingError(f"train.val_metric {key!r} is not among the evaluator's metrics: "
                                f"{', '.join(sorted(metrics)) or '(none)'}")
        return metrics

    def _is_better(self, value: float) -> bool:
        best = self.trainer.best_metric
        if best is None or not math.isfinite(best):
            return math.isfinite(value)
        return value > best if self.trainer.tcfg["val_mode"] == "max" else value < best

    def after_epoch(self) -> None:
        t = self.trainer
        t.check_finite()
        metrics: Dict[str, float] = {}
        interval = int(t.tcfg["val_interval"])
        improved = False
        if t.has_val() and ((interval > 0 and t.epoch % interval == 0) or t.epoch >= t.epochs):
            metrics = t.validate()
            key = t.tcfg["val_metric"]
            improved = self._is_better(metrics[key])
            if improved:
                t.best_metric, t.best_epoch = metrics[key], t.epoch
            t.history.append({"epoch": t.epoch, **metrics})
            t.logger.scalars("val", t.global_step, metrics, epoch=t.epoch)
            t.logger.info("epoch %d/%d validation: %s%s", t.epoch, t.epochs, fmt_metrics(metrics),
                          f"  (new best {key}={metrics[key]:.4f})" if improved else
                          f"  (best {key}={t.best_metric:.4f} at epoch {t.best_epoch})")
        t.save_checkpoint("last.pt", metrics)
        if improved and t.is_main:
            from ..checkpoint import copy_checkpoint

            copy_checkpoint(t.work_dir / "last.pt", t.work_dir / "best.pt")
        if t.is_main:
            t.logger.plot()
