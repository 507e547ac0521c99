"""The training loop: ``Trainer(cfg, work_dir, device, resume, seed).fit()``.

Design choices that make runs reproducible and resumable bit for bit:
- every sample's augmentation is seeded from ``(seed, epoch, index)`` and each epoch's order is a
  function of ``(seed, epoch)`` (``data/sampler.py``), so the data a step sees does not depend on worker
  count, on rank scheduling or on where a previous run stopped;
- the learning rate is a function of the iteration (``optim.IterLRScheduler``, a ``LambdaLR``);
- checkpoints hold the :meth:`Trainer.checkpointables` (model, optimizer, scheduler, scaler, EMA), the
  counters and RNG states as tensors and plain types only (they load with ``weights_only``), are
  written atomically, and are never written with non-finite weights.
Around the loop, EMA, logging, checkpoints and validation are hooks (``hooks.py``).
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import time
import warnings
import weakref
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .. import config as config_lib
from .. import options
from ..checkpoint import load_checkpoint, nonfinite_tensors, remove_partial_writes
from ..checkpoint import save_checkpoint as write_checkpoint
from ..data.datasets.base import data_fingerprint
from ..data.loader import DatasetNotFoundError, build_dataloader, check_dataset_paths  # noqa: F401 (tools import them here)
from ..data.sampler import EpochSampler
from . import distributed as dist_utils
from .ema import ModelEMA, unwrap
from ..evaluation.evaluator import eval_datasets
from .hooks import (EMAHook, EvalHook, Fp16WeightsHook, HookBase, KeepSparsityHook, LoggingHook,
                    PeriodicCheckpointHook, StepRecord, saved_hook_states)
from .logger import RunLogger, fmt_metrics, scalar_floats
from .optim import build_lr_scheduler, build_optimizer
from .distill import build_teacher
from . import workdir
from .state import (TrainingError, TrainingInterrupted, amp_dtype, build_train_model, check_resumable,
                    gather_rng_states, restore_rng_state, seed_everything)

#: every ``train:`` option with its default: the schema lives in :mod:`blazekit.options`
TRAIN_DEFAULTS: Dict[str, Any] = options.defaults(options.TRAIN)

#: trainer attributes saved in ``train_state`` beside the checkpointables and the hooks' states (plain numbers)
COUNTERS = ("epoch", "iter_in_epoch", "global_step", "nonfinite_in_row")


def _to_device(targets: List[Dict[str, Any]], device: torch.device) -> List[Dict[str, Any]]:
    return [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
            for t in targets]



class Trainer:
    """Builds everything from a config and runs ``fit()``; importable so notebooks train the same way.

    ``resume``: None (fresh), ``"auto"`` (``work_dir/last.pt`` if present) or a checkpoint path. A fresh run into a
    work dir holding an earlier run's checkpoints is refused unless ``overwrite`` (:mod:`.workdir`).
    """

    def __init__(self, cfg: Union[str, os.PathLike, Mapping[str, Any]], work_dir: Optional[Union[str, Path]] = None,
                 device: Optional[str] = None, resume: Optional[str] = None, seed: Optional[int] = None,
                 overrides: Sequence[str] = (), imports: Sequence[str] = (), overwrite: bool = False) -> None:
        if isinstance(cfg, (str, os.PathLike)):  # loaded, overridden and validated once; trusted from here on
            cfg = config_lib.load(cfg, overrides, imports, require=("model",))
        else:
            cfg = config_lib.resolve(cfg, overrides, imports, require=("model",))
        self.cfg: Dict[str, Any] = cfg
        self.tcfg = self._train_cfg(cfg)
        if seed is not None:
            self.tcfg["seed"] = int(seed)
        cfg["train"] = self.tcfg
        self.seed = int(self.tcfg["seed"])

        self.device = dist_utils.init_distributed(device)
        self.rank, self.world_size = dist_utils.get_rank(), dist_utils.get_world_size()
        self.is_main = self.rank == 0
        self.work_dir = Path(work_dir or self.tcfg["work_dir"] or Path("work_dirs") / _config_stem(cfg))
        self.tcfg["work_dir"] = str(self.work_dir)
        created = workdir.check_writable(self.work_dir) if self.is_main else []
        self.lock = workdir.claim(self.work_dir, bool(resume), overwrite) if self.is_main else None
        if self.lock is not None:
            weakref.finalize(self, self.lock.release)  # a Trainer dropped without fit() frees its work dir too
        self.logger = RunLogger(self.work_dir, enabled=self.is_main, tensorboard=bool(self.tcfg["tensorboard"]))
        if self.lock is not None and self.lock.took_over:
            self.logger.info("took over %s from %s, which is no longer running", self.lock.path, self.lock.took_over)
        if self.lock is not None and self.lock.replaced:
            self.logger.info("--overwrite: removed the previous run (%s) from %s", ", ".join(self.lock.replaced),
                             self.work_dir)
        self.last_saved: Optional[str] = None  # where the newest last.pt of this work dir stands (Ctrl-C says it)
        try:
            self._setup(resume)
        except BaseException:  # refused (bad data, checkpoint, ...) or Ctrl-C before training: leave no empty run
            if self.lock is not None:
                self.lock.release()
            if created:
                self.logger.close()  # the error is on the console; the log goes with the folder
                workdir.remove_new(self.work_dir, created)
            raise

    def _setup(self, resume: Optional[str]) -> None:
        """Everything after the work dir: data, model, optimizer, hooks, ``--resume``; the config dump last."""
        log = self.logger
        removed = remove_partial_writes(self.work_dir) if self.is_main and self.work_dir.is_dir() else 0
        if removed:
            log.info("removed %d partial checkpoint file(s) left by an interrupted write in %s", removed, self.work_dir)

        check_dataset_paths(self.cfg, splits=("train", "val") if self.has_val() else ("train",))
        seed_everything(self.seed)
        if self.tcfg["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)

        self.model, self.init_report, self._frozen_norms = build_train_model(self.cfg, self.tcfg, self.device,
                                                                             self.world_size, log)
        self.teacher = build_teacher(self.model, self.tcfg["distill"], self.cfg["model"].get("init"), self.device, log)
        self.train_loader = self._build_train_loader()
        self.data_fingerprint = {"train": data_fingerprint(self.train_loader.dataset)}  # checked on --resume
        # built (and so checked: repeated image ids, unreadable files) now, not at the first validation
        self.val_datasets = eval_datasets(self.cfg, "val") if self.has_val() and self.is_main else None
        for _, _, ds in self.val_datasets or []:
            if getattr(ds, "summary", None) is not None:
                log.info("val set %s", ds.summary)
        self.sampler: EpochSampler = self.train_loader.sampler
        self.iters_per_epoch = len(self.train_loader)
        if self.iters_per_epoch == 0:
            raise TrainingError("the training set yields no batch; lower data.train.batch_size")
        if self.tcfg["calibrate_bn"] and self._resume_path(resume) is None:  # before the EMA copies the model
            self._calibrate_bn(int(self.tcfg["calibrate_bn"]))
        self.epochs = int(self.tcfg["epochs"])
        self.total_iters = self.epochs * self.iters_per_epoch

        self.optimizer = build_optimizer(self.model, self.tcfg["optimizer"], self.tcfg["no_decay_norm_bias"])
        self.scheduler = build_lr_scheduler(self.optimizer, self.tcfg["lr_scheduler"], self.total_iters,
                                            self.iters_per_epoch)
        self.amp_dtype = amp_dtype(self.tcfg["amp"], self.device, log)
        # one code path: a disabled scaler passes the loss and the step through unchanged
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        ema_cfg = self.tcfg["ema"]
        self.ema = ModelEMA(self.model, **ema_cfg) if ema_cfg else None

        self.train_model: nn.Module = self.model
        if self.world_size > 1:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(self.tcfg["find_unused_parameters"]))

        self.epoch, self.iter_in_epoch, self.global_step, self.nonfinite_in_row = 0, 0, 0, 0
        self.hooks: List[HookBase] = self._build_hooks()
        if resume:
            self._resume(resume)
        if self.is_main:
            config_lib.dump(self.cfg, self.work_dir / "config.yml")
        log.info("work dir %s | device %s | world size %d | %d images, %d iterations/epoch x %d epochs = %d | "
                 "batch %d/process", self.work_dir, self.device, self.world_size, self.sampler.size,
                 self.iters_per_epoch, self.epochs, self.total_iters, self.batch_size)

    # ------------------------------------------------------------------ setup helpers
    @staticmethod
    def _train_cfg(cfg: Mapping[str, Any]) -> Dict[str, Any]:
        """``train:`` of the validated config with every default filled."""
        return options.with_defaults(options.TRAIN, cfg.get("train"))

    def _build_hooks(self) -> List[HookBase]:
        """The built-in hooks with their ``train:`` settings, in calling order (``self.eval_hook`` among them)."""
        t = self.tcfg
        self.eval_hook = EvalHook(interval=t["val_interval"], metric=t["val_metric"], mode=t["val_mode"],
                                  num_vis=t["val_vis"] or 0, before_train=t["val_before_train"],
                                  progress=t["progress_bar"])
        hooks: List[HookBase] = [EMAHook(), LoggingHook(t["log_interval"], t["progress_bar"]),
                                 PeriodicCheckpointHook(t["checkpoint_interval"]), self.eval_hook]
        if t["keep_sparsity"]:
            hooks.insert(0, KeepSparsityHook())
        if t["fp16_weights"]:  # before the eval hook: what is validated and saved is the rounded model
            hooks.insert(hooks.index(self.eval_hook), Fp16WeightsHook())
        for h in hooks:
            h.trainer = self
        return hooks

    def has_val(self) -> bool:
        return bool((self.cfg.get("data") or {}).get("val"))

    def _build_train_loader(self) -> torch.utils.data.DataLoader:
        data_cfg = (self.cfg.get("data") or {}).get("train")
        if not data_cfg:
            raise config_lib.ConfigError("data.train is missing: the trainer needs a training set")
        loader = build_dataloader(data_cfg, self.cfg["model"], seed=self.seed, train=True, seeded=True,
                                  rank=self.rank, world_size=self.world_size, where="data.train")
        self.batch_size = int(loader.batch_size)
        summary = getattr(loader.dataset.dataset, "summary", None)
        if summary is not None:
            self.logger.info("train set %s", summary)
        return loader

    def _calibrate_bn(self, num_batches: int) -> None:
        """``train.calibrate_bn``: BatchNorm statistics from the first training batches, measured before any step
        of a new run (a resumed one has them in its checkpoint)."""
        from ..models.batchnorm import calibrate_batchnorm

        def batches():
            for i, (images, _) in enumerate(self.train_loader):
                if i == num_batches:
                    return
                yield images.to(self.device)

        n = calibrate_batchnorm(unwrap(self.model), batches())
        used = min(num_batches, self.iters_per_epoch)
        self.logger.info("train.calibrate_bn: %d BatchNorm layers calibrated on %d training batch%s", n, used,
                         "" if used == 1 else "es")

    # ------------------------------------------------------------------ checkpoints
    def checkpointables(self) -> Dict[str, Any]:
        """Objects with ``state_dict`` / ``load_state_dict`` saved in ``train_state`` under these names (None: off)."""
        return {"model": unwrap(self.model), "optimizer": self.optimizer, "scheduler": self.scheduler,
                "scaler": self.scaler if self.scaler.is_enabled() else None, "ema": self.ema}

    def _resume_path(self, resume: Optional[str]) -> Optional[Path]:
        """The checkpoint ``--resume`` continues from; None for a new run (no --resume, or ``auto`` without
        ``last.pt``). A named file that does not exist is an error."""
        if not resume:
            return None
        path = self.work_dir / "last.pt" if resume == "auto" else Path(resume)
        if path.is_file():
            return path
        if resume == "auto":
            return None
        raise TrainingError(f"--resume {resume}: no such checkpoint file")

    def _resume(self, resume: str) -> None:
        path = self._resume_path(resume)
        if path is None:
            self.logger.info("--resume auto: no %s yet, starting a new run", self.work_dir / "last.pt")
            return
        ckpt = load_checkpoint(path)
        check_resumable(ckpt, path, unwrap(self.model).cfg, self.cfg, self.data_fingerprint)
        st = ckpt["train_state"]
        for name, obj in self.checkpointables().items():
            if obj is not None:
                if st.get(name) is None:
                    raise TrainingError(f"cannot resume from {path}: the config enables {name} but the checkpoint "
                                        f"has no {name} state")
                obj.load_state_dict(st[name])
        for name in COUNTERS:
            setattr(self, name, st[name])
        self._load_hook_states(saved_hook_states(st))
        rng = st.get("rng", {}).get(self.rank) or st.get("rng", {}).get(0)
        if rng:
            restore_rng_state(rng)
        if st.get("world_size", 1) != self.world_size:
            self.logger.warning("resuming a run of world size %s with %s processes: the data order changes from "
                                "here on", st.get("world_size"), self.world_size)
        self.logger.truncate_after(self.global_step)
        if path.resolve() == (self.work_dir / "last.pt").resolve():
            self.last_saved = self.where()
        self.logger.info("resumed from %s at epoch %d, iteration %d/%d (global step %d)", path, self.epoch,
                         self.iter_in_epoch, self.iters_per_epoch, self.global_step)

    def _load_hook_states(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        """Give each hook its saved state, matched by class name (detectron2's ``TrainerBase.load_state_dict``)."""
        by_name = {type(h).__name__: h for h in self.hooks}
        for name, state in states.items():
            if name in by_name:
                by_name[name].load_state_dict(state)
            else:
                self.logger.warning("the checkpoint holds a state for hook %s, which this run does not have: "
                                    "ignored", name)

    def deploy_state_dict(self) -> Dict[str, torch.Tensor]:
        """The weights to evaluate and ship: the EMA when enabled, else the trained model."""
        return (self.ema.module if self.ema is not None else unwrap(self.model)).state_dict()

    def where(self) -> str:
        """The position as the log lines write it: 'epoch 2/5 iteration 3/4 (global step 7)'."""
        ep, it = ((self.epoch, self.iters_per_epoch) if self.iter_in_epoch == 0 and self.global_step > 0
                  else (self.epoch + 1, self.iter_in_epoch))
        return f"epoch {ep}/{self.epochs} iteration {it}/{self.iters_per_epoch} (global step {self.global_step})"

    def check_finite(self) -> None:
        """Stop with :class:`TrainingError` when the model or EMA weights hold NaN/Inf, or the deployed model's
        outputs do (diverged): called before validation and before every checkpoint write, so last.pt/best.pt
        keep the last finite state."""
        bad = nonfinite_tensors(unwrap(self.model).state_dict())
        if self.ema is not None:
            bad += [f"ema.{k}" for k in nonfinite_tensors(self.ema.module.state_dict())]
        what = f"non-finite weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
        if not bad:  # finite weights can still overflow (lr=1e6): then every output is NaN
            deploy = self.ema.module if self.ema is not None else unwrap(self.model)
            layer = deploy.nonfinite_layer() if hasattr(deploy, "nonfinite_layer") else None
            what = f"finite weights but non-finite outputs (from {layer} on)"
            bad = [layer] if layer else []
        if bad:
            raise TrainingError(
                f"training diverged: {what} at {self.where()}; last.pt/best.pt were not overwritten and keep the "
                f"last finite state. Lower train.optimizer.lr (now {self.tcfg['optimizer'].get('lr')}) or set "
                "train.clip_grad_norm.")

    def save_checkpoint(self, name: str = "last.pt", metrics: Optional[Mapping[str, Any]] = None) -> Optional[Path]:
        """Write ``work_dir/name`` (rank 0; every rank must call it: RNG states are gathered)."""
        self.check_finite()
        rngs = gather_rng_states(self.world_size)
        if not self.is_main:
            return None
        train_state = {name_: (obj.state_dict() if obj is not None else None)
                       for name_, obj in self.checkpointables().items()}
        train_state.update({k: copy.deepcopy(getattr(self, k)) for k in COUNTERS})
        hook_states = {type(h).__name__: h.state_dict() for h in self.hooks}
        train_state["hooks"] = copy.deepcopy({k: v for k, v in hook_states.items() if v})
        train_state.update(rng=rngs, world_size=self.world_size)
        path = write_checkpoint(self.work_dir / name, {
            "state_dict": self.deploy_state_dict(),
            "model_cfg": config_lib.plain(unwrap(self.model).cfg),
            "meta": {"epoch": self.epoch, "iter_in_epoch": self.iter_in_epoch, "global_step": self.global_step,
                     "metrics": dict(metrics or {}), "ema": self.ema is not None, "seed": self.seed,
                     "config": config_lib.plain(self.cfg), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                     "torch": str(torch.__version__), "data": copy.deepcopy(self.data_fingerprint)},
            "train_state": train_state})
        if name == "last.pt":
            self.last_saved = self.where()
        return path

    # ------------------------------------------------------------------ validation
    def validate(self) -> Dict[str, float]:
        """Evaluate the deploy weights (EMA if enabled) now; rank 0 runs it, all ranks get it (the eval hook's
        :meth:`EvalHook.validate`, with its settings)."""
        return self.eval_hook.validate()

    # ------------------------------------------------------------------ training
    def _set_train_mode(self) -> None:
        self.train_model.train()
        for m in self._frozen_norms:
            m.eval()  # frozen layers (and all BN under train.norm_eval) keep their statistics

    def train_step(self, images: torch.Tensor, targets: List[Dict[str, Any]]) -> Optional[Dict[str, float]]:
        """One optimisation step; returns the loss terms, or None when the step was skipped (non-finite)."""
        images = images.to(self.device, non_blocking=True)
        targets = _to_device(targets, self.device)
        amp_ctx = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                   else contextlib.nullcontext())
        try:
            with amp_ctx:
                extra = self.teacher(images) if self.teacher is not None else {}
                losses = self.train_model(images, targets, **extra)
            loss = losses["loss"]
            values = scalar_floats(losses)  # one device sync for every loss term, before backward
            finite = dist_utils.all_true(math.isfinite(values["loss"]), self.device)
            self.optimizer.zero_grad(set_to_none=True)
            grad_norm = None
            if finite:
                self.scaler.scale(loss).backward()
                clip = self.tcfg["clip_grad_norm"]
                if clip:
                    self.scaler.unscale_(self.optimizer)
                    params = [p for p in self.model.parameters() if p.requires_grad]
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, float(clip)))
                    # an enabled (fp16) scaler skips a step with non-finite gradients itself and lowers its scale
                    finite = math.isfinite(grad_norm) or self.scaler.is_enabled()
                if finite:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
        except torch.cuda.OutOfMemoryError as exc:
            raise TrainingError(
                f"CUDA out of memory at batch size {self.batch_size} per process (input "
                f"{list(images.shape[-2:])}): lower it, e.g. --set data.train.batch_size={max(1, self.batch_size // 2)}"
                f" (and scale train.optimizer.lr by the same factor)") from exc
        with warnings.catch_warnings():  # after a skipped first step torch warns about the call order: by design
            warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)`", UserWarning)
            self.scheduler.step()
        if not finite:
            self.nonfinite_in_row += 1
            self.optimizer.zero_grad(set_to_none=True)
            self.logger.warning("non-finite loss/gradient at epoch %d iteration %d (%s); step skipped (%d in a row, "
                                "limit %d)", self.epoch, self.iter_in_epoch, fmt_metrics(values),
                                self.nonfinite_in_row, self.tcfg["max_nonfinite_steps"])
            if self.nonfinite_in_row >= int(self.tcfg["max_nonfinite_steps"]):
                raise TrainingError(
                    f"{self.nonfinite_in_row} non-finite losses in a row: stopping. Lower train.optimizer.lr, set "
                    "train.clip_grad_norm, or check the data (boxes outside the image, empty boxes).")
            return None
        self.nonfinite_in_row = 0
        if grad_norm is not None:
            values["grad_norm"] = grad_norm
        return values

    def run_step(self, images: torch.Tensor, targets: List[Dict[str, Any]]) -> StepRecord:
        """:meth:`train_step` as the hooks see it: the step record with the lr the step used and its batch size."""
        lr = self.optimizer.param_groups[0]["lr"]  # read before train_step moves the scheduler on
        return {"lr": lr, "batch_size": int(images.shape[0]), "losses": self.train_step(images, targets)}

    def _call(self, point: str, *args: Any) -> None:
        for h in self.hooks:
            getattr(h, point)(*args)

    def fit(self) -> Dict[str, Any]:
        """Train to ``train.epochs``; returns a summary (best metric, last validation, work dir, time)."""
        t_start = time.time()
        try:
            self._call("before_train")
            while self.epoch < self.epochs:
                self._call("before_epoch")
                self._train_epoch()
                self.epoch += 1
                self.iter_in_epoch = 0
                self._call("after_epoch")
            self._call("after_train")
        except KeyboardInterrupt:
            raise TrainingInterrupted(self.interrupted_note(), saved=self.last_saved is not None,
                                      rank=self.rank) from None
        finally:
            if self.is_main:
                self.logger.plot()
            if self.lock is not None:
                self.lock.release()
        elapsed = time.time() - t_start
        self.logger.info("done in %.1f s; checkpoints in %s", elapsed, self.work_dir)
        return {"work_dir": str(self.work_dir), "epochs": self.epochs, "global_step": self.global_step,
                **self.eval_hook.summary(), "time_s": elapsed}

    def interrupted_note(self) -> str:
        """What a Ctrl-C at this point leaves behind, in one line."""
        last = self.work_dir / "last.pt"
        if self.last_saved is None:
            return (f"stopped at {self.where()}, before the first checkpoint (written at each epoch end"
                    + (f" and every {self.tcfg['checkpoint_interval']} iterations" if self.tcfg["checkpoint_interval"]
                       else "") + f"); nothing to resume in {self.work_dir}")
        return f"stopped at {self.where()}; {last} holds {self.last_saved}"

    def _train_epoch(self) -> None:
        self._set_train_mode()
        self.sampler.set_epoch(self.epoch, skip_samples=self.iter_in_epoch * self.batch_size)
        for images, targets in self.train_loader:
            if self.iter_in_epoch >= self.iters_per_epoch:
                break
            out = self.run_step(images, targets)
            self.iter_in_epoch += 1
            self.global_step += 1
            self._call("after_step", out)


def _config_stem(cfg: Mapping[str, Any]) -> str:
    src = cfg.get("_source_")
    return Path(src).stem if src else "run"
