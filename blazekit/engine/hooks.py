"""Callback points of the training loop (detectron2's ``HookBase``, smaller).

The loop only trains; what happens around a step or an epoch (EMA, logging, checkpoints, validation)
hangs on these points, in the order of ``Trainer.hooks``. A hook is built with its settings and keeps its
own state (``state_dict`` / ``load_state_dict``, saved in the checkpoint's ``train_state["hooks"]``); it
reads the trainer it is attached to (``self.trainer``: model, counters, checkpoint writer). At
``after_step`` the step counters are already advanced, at ``after_epoch`` the epoch counter is too.
"""
from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from . import distributed as dist_utils
from .ema import unwrap
from .logger import fmt_metrics, scalar_floats

#: what ``after_step`` gets: ``{"lr": the step's learning rate, "batch_size": images in this process's batch,
#: "losses": the loss terms (and ``grad_norm``), or None when the step was skipped (non-finite loss)}``
StepRecord = Dict[str, Any]


class HookBase:
    """No-op callbacks and no state; subclasses override the points they need."""

    trainer: Any = None

    def before_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def after_step(self, out: StepRecord) -> None:
        """``out``: the step record (:data:`StepRecord`)."""

    def after_epoch(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def state_dict(self) -> Dict[str, Any]:
        """What a resumed run needs of this hook (plain types: checkpoints load with weights_only); {}: nothing."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class KeepSparsityHook(HookBase):
    """``train.keep_sparsity``: weights that start at zero in a pruned tensor stay zero after every step.

    MediaPipe's full-range model stores 46 convs sparse (~62 % zeros); kept zero, the fine-tuned weights still fit
    its sparse layout, so the .tflite export keeps MediaPipe's size and speed (no ``--densify``). A tensor counts as
    pruned with >= ``min_zeros`` of its entries exactly zero, so the odd zero of a dense tensor is not frozen.
    Runs before the EMA hook, so the averaged model is sparse too.
    """

    def __init__(self, min_zeros: Optional[float] = None) -> None:
        from ..checkpoint import PACK_MIN_ZEROS  # the share of zeros that makes checkpoints store a tensor sparse

        self.min_zeros = PACK_MIN_ZEROS if min_zeros is None else min_zeros
        self.masks: List[Tuple[torch.nn.Parameter, torch.Tensor]] = []

    def before_train(self) -> None:
        model = unwrap(self.trainer.model)
        self.masks = [(p, p != 0) for p in model.parameters()
                      if p.dim() == 4 and p.numel() >= 64 and float((p == 0).float().mean()) >= self.min_zeros]
        if self.masks and self.trainer.is_main:
            self.trainer.logger.info("keep_sparsity: %d pruned tensors keep their zeros", len(self.masks))

    def after_step(self, out: StepRecord) -> None:
        if out["losses"] is None:
            return
        with torch.no_grad():
            for param, mask in self.masks:
                param.mul_(mask)


class Fp16WeightsHook(HookBase):
    """``train.fp16_weights``: at every epoch end, before validation and the checkpoint, the deployed model's
    BN-folded weights are rounded to float16 (:func:`blazekit.deploy.fp16.round_to_fp16_`).

    An fp16 .tflite stores exactly those values, so the checkpoint, its validation numbers and the exported file
    compute one function; without it a full-range fine-tune moves by ~4e-3 of its output range on export.
    Rounding once an epoch (not every step) leaves the optimizer's small steps alone: a step under half an fp16
    spacing would be rounded away. The deployed model is the EMA one when EMA is on (the one validated and saved).
    """

    def after_epoch(self) -> None:
        from ..deploy.fp16 import round_to_fp16_

        t = self.trainer
        net = t.ema.module if t.ema is not None else unwrap(t.model)
        report = round_to_fp16_(net)
        if report.overflow:
            from .state import TrainingError

            raise TrainingError(f"train.fp16_weights: after epoch {t.epoch} these weights overflow fp16 (max 65504), "
                                f"so no fp16 export can hold them: {', '.join(report.overflow)}")
        if t.is_main:
            t.logger.info("fp16_weights: %d tensors rounded to fp16 (%d values moved)", report.tensors, report.moved)


class EMAHook(HookBase):
    """Blend the weights of every applied optimizer step into the EMA model."""

    def after_step(self, out: StepRecord) -> None:
        if out["losses"] is not None and self.trainer.ema is not None:
            self.trainer.ema.update(self.trainer.model)


class LoggingHook(HookBase):
    """Progress bar, running means of the loss terms, one metrics record every ``interval`` steps
    (``train.log_interval``)."""

    def __init__(self, interval: int = 20, progress_bar: bool = True) -> None:
        self.interval, self.progress_bar = max(1, int(interval)), bool(progress_bar)

    def before_epoch(self) -> None:
        t = self.trainer
        self.sums: Dict[str, float] = {}
        self.count, self.images, self.t0, self.bar = 0, 0, time.time(), None
        if t.is_main and self.progress_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=t.iters_per_epoch, initial=t.iter_in_epoch, desc=f"epoch {t.epoch + 1}/{t.epochs}",
                            dynamic_ncols=True, leave=False)

    def after_step(self, out: StepRecord) -> None:
        t, losses, lr = self.trainer, out["losses"], out["lr"]
        self.images += out["batch_size"] * t.world_size
        if losses is not None:
            self.count += 1
            for k, v in losses.items():
                self.sums[k] = self.sums.get(k, 0.0) + v
        dt = time.time() - self.t0
        ips = self.images / dt if dt > 0 else 0.0
        end = t.iter_in_epoch == t.iters_per_epoch
        if self.bar is not None:
            shown = {k: f"{v:.3f}" for k, v in (losses or {}).items() if k.startswith("loss")}
            self.bar.set_postfix(shown, lr=f"{lr:.2e}", img_s=f"{ips:.1f}")
            self.bar.update(1)
        if t.global_step % self.interval == 0 or end:
            means = dist_utils.all_reduce_mean({k: v / max(self.count, 1) for k, v in self.sums.items()}, t.device)
            t.logger.scalars("train", t.global_step, {**means, "lr": lr, "images_per_s": ips},
                             epoch=t.epoch, iter=t.iter_in_epoch)
            if self.bar is None or end:
                t.logger.info("epoch %d/%d iter %d/%d %s lr %.3e %.1f img/s", t.epoch + 1, t.epochs, t.iter_in_epoch,
                              t.iters_per_epoch, fmt_metrics(means), lr, ips)
            self.sums, self.count = {}, 0

    def after_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()


class PeriodicCheckpointHook(HookBase):
    """``last.pt`` every ``every`` iterations too (``train.checkpoint_interval``; pre-emptible machines; 0: off);
    epoch ends are written by :class:`EvalHook`."""

    def __init__(self, every: int = 0) -> None:
        self.every = int(every)

    def after_step(self, out: StepRecord) -> None:
        t = self.trainer
        if self.every > 0 and t.global_step % self.every == 0 and t.iter_in_epoch < t.iters_per_epoch:
            t.save_checkpoint("last.pt")


class EvalHook(HookBase):
    """Validation before training (``before_train``) and every ``interval`` epochs (0: only after the last);
    ``last.pt`` at every epoch end and ``best.pt`` when ``metric`` improves (``mode`` max or min). Keeps the best
    value, its epoch and every validation's metrics (``history``); ``num_vis`` val images are drawn into
    ``work_dir/vis/epoch_NNN/`` each time."""

    def __init__(self, interval: int = 1, metric: str = "coco/AP", mode: str = "max", num_vis: int = 0,
                 before_train: bool = False, progress: bool = False) -> None:
        self.interval, self.metric, self.mode, self.num_vis = int(interval), metric, mode, int(num_vis or 0)
        self.run_before_train, self.progress = bool(before_train), bool(progress)
        self.best_metric: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.history: List[Dict[str, Any]] = []
        self.before: Optional[Dict[str, float]] = None  # the metrics before training (not resumed)

    def state_dict(self) -> Dict[str, Any]:
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch, "history": list(self.history)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_metric, self.best_epoch = state["best_metric"], state["best_epoch"]
        self.history = list(state["history"])

    def before_train(self) -> None:
        t = self.trainer
        if self.run_before_train and t.has_val() and t.global_step == 0:
            self.before = self.validate()
            t.logger.scalars("val", 0, self.before, epoch=0)
            t.logger.info("validation before training: %s", fmt_metrics(self.before))

    def validate(self) -> Dict[str, float]:
        """Evaluate the deploy weights (EMA if enabled) with the evaluator; rank 0 runs it, all ranks get it."""
        t = self.trainer
        metrics: Dict[str, float] = {}
        if t.is_main:
            from ..evaluation.evaluator import evaluate

            net = t.ema.module if t.ema is not None else unwrap(t.model)
            vis_dir = t.work_dir / "vis" / f"epoch_{t.epoch:03d}" if self.num_vis > 0 else None
            # the evaluator sets eval mode / no_grad and restores the model's mode itself
            metrics = scalar_floats(evaluate(net, t.cfg, split="val", progress=self.progress, vis_dir=vis_dir,
                                             num_vis=self.num_vis,
                                             datasets=getattr(t, "val_datasets", None)))  # built at the start
        metrics = dist_utils.broadcast_object(metrics)
        if self.metric not in metrics:
            from .state import TrainingError

            raise TrainingError(f"train.val_metric {self.metric!r} is not among the evaluator's metrics: "
                                f"{', '.join(sorted(metrics)) or '(none)'}")
        return metrics

    def _is_better(self, value: float) -> bool:
        best = self.best_metric
        if best is None or not math.isfinite(best):
            return math.isfinite(value)
        return value > best if self.mode == "max" else value < best

    def _best_note(self) -> str:
        if self.best_metric is None:  # every validation so far gave NaN (e.g. nme with no face matched)
            return f"no finite {self.metric} yet"
        return f"best {self.metric}={self.best_metric:.4f} at epoch {self.best_epoch}"

    def after_epoch(self) -> None:
        t = self.trainer
        t.check_finite()
        metrics: Dict[str, float] = {}
        improved = False
        if t.has_val() and ((self.interval > 0 and t.epoch % self.interval == 0) or t.epoch >= t.epochs):
            metrics = self.validate()
            key = self.metric
            improved = self._is_better(metrics[key])
            if improved:
                self.best_metric, self.best_epoch = metrics[key], t.epoch
            self.history.append({"epoch": t.epoch, **metrics})
            t.logger.scalars("val", t.global_step, metrics, epoch=t.epoch)
            t.logger.info("epoch %d/%d validation: %s  (%s)", t.epoch, t.epochs, fmt_metrics(metrics),
                          f"new best {key}={metrics[key]:.4f}" if improved else self._best_note())
        t.save_checkpoint("last.pt", metrics)
        if improved and t.is_main:
            from ..checkpoint import copy_checkpoint

            copy_checkpoint(t.work_dir / "last.pt", t.work_dir / "best.pt")
        if t.is_main:
            t.logger.plot()

    def after_train(self) -> None:
        last = self.history[-1] if self.history else {}
        if self.before is not None and last:
            self.trainer.logger.info("%s before training %.4f -> after %.4f (best %.4f at epoch %s)", self.metric,
                                     self.before.get(self.metric, float("nan")), last.get(self.metric, float("nan")),
                                     self.best_metric, self.best_epoch)

    def summary(self) -> Dict[str, Any]:
        """The run's validation in brief, for :meth:`Trainer.fit`'s return value."""
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch, "val_metric": self.metric,
                "before": self.before, "last": self.history[-1] if self.history else {}}


def saved_hook_states(train_state: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Each hook's saved state by hook class name: ``train_state["hooks"]``, or for a checkpoint written before
    hooks kept their own state (``best_metric``, ``best_epoch``, ``history`` beside the counters) what
    :class:`EvalHook` holds now, so such checkpoints still resume."""
    if "hooks" in train_state:
        return dict(train_state["hooks"])
    if "best_metric" not in train_state:
        return {}
    return {"EvalHook": {k: train_state[k] for k in ("best_metric", "best_epoch", "history")}}
