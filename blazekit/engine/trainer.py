"""The training loop: ``Trainer(cfg, work_dir, device, resume, seed).fit()``.

Design choices that make runs reproducible and resumable bit for bit:
- every sample's augmentation is seeded from ``(seed, epoch, index)`` and each epoch's order is a
  function of ``(seed, epoch)``, so the data a step sees does not depend on worker count, on rank
  scheduling or on where a previous run stopped; resuming mid-epoch skips the consumed indices in
  the sampler (no images are loaded to skip them);
- the learning rate is a function of the iteration (``optim.IterLRScheduler``);
- checkpoints hold model, optimizer, scheduler, scaler, EMA, counters, best metric and RNG states,
  and are written to a temporary file then renamed, so a crash never leaves a torn ``last.pt``.
"""
from __future__ import annotations

import contextlib
import copy
import difflib
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .. import config as config_lib
from .. import options
from ..config import expand_env
from . import distributed as dist_utils
from ..checkpoint import CheckpointError, check_compatible, load_checkpoint, load_model_weights, save_checkpoint
from .ema import ModelEMA, unwrap
from .logger import RunLogger
from .optim import build_lr_scheduler, build_optimizer, freeze_parameters, frozen_norm_modules

#: every ``train:`` option with its default: the schema lives in :mod:`blazekit.options`
TRAIN_DEFAULTS: Dict[str, Any] = options.defaults(options.TRAIN)

WIDER_HINT = (
    "WIDER FACE is expected at {root} with WIDER_train/images, WIDER_val/images and wider_face_split/ inside. "
    "Get it from the official site (http://shuoyang1213.me/WIDERFACE/) or the Hugging Face dataset "
    "'wider_face' (https://huggingface.co/datasets/wider_face), unpack it there, or point the config at it: "
    "--set data.train.dataset.root=/path/to/widerface"
)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset path in the config does not exist; the message says where it was expected and how to get it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TrainingError(RuntimeError):
    """Training cannot continue (too many non-finite losses, out of memory, incompatible checkpoint)."""


# ----------------------------------------------------------------------------------------- data


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The 32-bit seed of one sample's augmentation in one epoch."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)]).generate_state(1)[0])


def reseed_transforms(obj: Any, seed: int, _depth: int = 0) -> None:
    """Seed every transform that keeps its own RNG (albumentations >= 1.4 ignores the global seeds)."""
    if obj is None or _depth > 4:
        return
    for method in ("reseed", "set_random_seed"):  # blazekit Compose / albumentations Compose
        fn = getattr(obj, method, None)
        if callable(fn):
            fn(seed)
            return  # both propagate the stream to their children
    if isinstance(obj, (list, tuple)):
        for t in obj:
            reseed_transforms(t, seed, _depth + 1)
        return
    for attr in ("transforms", "transform", "aug", "compose", "pipeline"):
        child = getattr(obj, attr, None)
        if child is not None and child is not obj:
            reseed_transforms(child, seed, _depth + 1)


class SeededDataset(Dataset):
    """Index with ``(epoch, i)``: seeds python/numpy/torch and the transforms, then returns ``dataset[i]``."""

    def __init__(self, dataset: Any, seed: int, transforms: Any = None) -> None:
        self.dataset, self.seed, self.transforms = dataset, int(seed), transforms

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int]) -> Any:
        epoch, index = key
        s = sample_seed(self.seed, epoch, index)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)
        reseed_transforms(self.transforms if self.transforms is not None else self.dataset, s)
        return self.dataset[index]


class EpochSampler(Sampler):
    """Per-epoch order from ``(seed, epoch)``, sharded over ranks, able to start mid-epoch.

    Yields ``(epoch, index)`` for :class:`SeededDataset`. Like ``DistributedSampler`` it pads the
    order by wrapping around so every rank gets the same number of samples.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if size <= 0:
            raise ValueError("the training dataset is empty")
        self.size, self.shuffle, self.seed = size, shuffle, int(seed)
        self.rank, self.world_size = rank, world_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip_samples: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip_samples)

    def per_rank(self) -> int:
        return math.ceil(self.size / self.world_size)

    def indices(self) -> List[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(int(self.seed) * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = self.per_rank() * self.world_size
        while len(order) < total:
            order += order[: total - len(order)]
        return order[self.rank:total:self.world_size]

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        for i in self.indices()[self.skip:]:
            yield (self.epoch, i)

    def __len__(self) -> int:
        return max(0, self.per_rank() - self.skip)


def _dataset_paths(ds_cfg: Any) -> List[Tuple[str, str, str]]:
    """(type, key, path) of every path-like argument in a dataset config (lists and Concat included)."""
    out: List[Tuple[str, str, str]] = []
    if isinstance(ds_cfg, (list, tuple)):
        for d in ds_cfg:
            out += _dataset_paths(d)
    elif isinstance(ds_cfg, Mapping):
        for sub in ds_cfg.get("datasets", []) or []:
            out += _dataset_paths(sub)
        for key in ("root", "ann_file", "data_yaml", "image_root"):
            if isinstance(ds_cfg.get(key), str):
                out.append((str(ds_cfg.get("type", "?")), key, ds_cfg[key]))
    return out


def check_dataset_paths(cfg: Mapping[str, Any], splits: Sequence[str] = ("train", "val")) -> None:
    """Refuse missing dataset folders/files up front, with where they were expected and how to get them."""
    for split in splits:
        split_cfg = (cfg.get("data") or {}).get(split)
        if not split_cfg:
            continue
        try:
            ds_cfg = expand_env(copy.deepcopy(split_cfg.get("dataset")))
        except config_lib.ConfigError as exc:  # an unset ${VAR} in a path: say which dataset needs it
            raise config_lib.ConfigError(f"data.{split}.dataset: {exc}") from None
        for typ, key, path in _dataset_paths(ds_cfg):
            if os.path.exists(os.path.expanduser(path)):
                continue
            where = f"data.{split}.dataset.{key}"
            absolute = os.path.abspath(os.path.expanduser(path))
            if typ.lower().startswith("wider"):
                msg = f"{where}: WIDER FACE not found at {absolute!r}. " + WIDER_HINT.format(root=absolute)
            else:
                msg = (f"{where} ({typ}): {absolute!r} does not exist. Fix the path in the config or override it: "
                       f"--set {where}=/path/to/it")
            raise DatasetNotFoundError(msg)


def _to_device(targets: List[Dict[str, Any]], device: torch.device) -> List[Dict[str, Any]]:
    return [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
            for t in targets]


# ------------------------------------------------------------------------------------ state io


def capture_rng_state() -> Dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu() if torch.is_tensor(state["torch"]) else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_pretrained(model: nn.Module, init: str, log: Any = None) -> Dict[str, List[Any]]:
    """Load a named or path checkpoint into ``model`` where names and shapes match; report the rest.

    Unlike ``build_detector(weights=...)`` this is not strict: a changed head (another anchor count,
    other keypoints) is fine-tuned from the tensors that still fit instead of failing, and the report
    (``loaded`` / ``missing`` / ``unexpected`` / ``shape_mismatch``) is logged so nothing is silent.
    """
    from ..weights import resolve_weights

    try:
        path = resolve_weights(init)
    except FileNotFoundError as exc:
        raise TrainingError(f"model.init: {exc}") from None
    ckpt = load_checkpoint(path)
    report = load_model_weights(unwrap(model), ckpt, strict=False, source=f"model.init {init!r} ({path})")
    if log is not None:
        total = len(unwrap(model).state_dict())
        mism = [f"{k} {a}->{b}" for k, a, b in report["shape_mismatch"]]
        log.info("model.init %s (%s): loaded %d/%d tensors; not loaded: missing %d%s, unexpected %d%s, "
                 "shape mismatch %d%s", init, path, len(report["loaded"]), total, len(report["missing"]),
                 _few(report["missing"]), len(report["unexpected"]), _few(report["unexpected"]), len(mism), _few(mism))
    return report


def _few(names: List[str], n: int = 5) -> str:
    if not names:
        return ""
    return " (" + ", ".join(names[:n]) + (", ..." if len(names) > n else "") + ")"


# ------------------------------------------------------------------------------------- trainer


class Trainer:
    """Builds everything from a config and runs ``fit()``; importable so notebooks train the same way.

    ``resume``: None (fresh), ``"auto"`` (``work_dir/last.pt`` if present) or a checkpoint path.
    """

    def __init__(self, cfg: Union[str, os.PathLike, Mapping[str, Any]], work_dir: Optional[Union[str, Path]] = None,
                 device: Optional[str] = None, resume: Optional[str] = None, seed: Optional[int] = None,
                 overrides: Sequence[str] = (), imports: Sequence[str] = ()) -> None:
        if isinstance(cfg, (str, os.PathLike)):
            cfg = config_lib.load(cfg, imports=imports)
        else:
            cfg = copy.deepcopy(dict(cfg))
            config_lib.import_modules(list(cfg.get("imports", [])) + list(imports))
        cfg["train"] = self._train_cfg(cfg)  # defaults filled first, so --set train.<any option>=... works
        cfg = config_lib.apply_overrides(cfg, overrides)
        config_lib.import_modules(cfg.get("imports", []))
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
        self.logger = RunLogger(self.work_dir, enabled=self.is_main, tensorboard=bool(self.tcfg["tensorboard"]))
        log = self.logger

        check_dataset_paths(cfg, splits=("train", "val") if self._has_val() else ("train",))
        seed_everything(self.seed)
        if self.tcfg["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)

        self.model = self._build_model()
        self.train_loader, self.sampler = self._build_train_loader()
        self.iters_per_epoch = len(self.train_loader)
        if self.iters_per_epoch == 0:
            raise TrainingError("the training set yields no batch; lower data.train.batch_size")
        self.epochs = int(self.tcfg["epochs"])
        self.total_iters = self.epochs * self.iters_per_epoch

        self.optimizer = build_optimizer(self.model, self.tcfg["optimizer"], self.tcfg["no_decay_norm_bias"])
        self.scheduler = build_lr_scheduler(self.optimizer, self.tcfg["lr_scheduler"], self.total_iters,
                                            self.iters_per_epoch)
        self.amp_dtype = self._amp_dtype()
        self.scaler = (torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None)
        ema_cfg = self.tcfg["ema"]
        self.ema = ModelEMA(self.model, **ema_cfg) if ema_cfg else None

        self.train_model: nn.Module = self.model
        if self.world_size > 1:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(self.tcfg["find_unused_parameters"]))

        self.epoch, self.iter_in_epoch, self.global_step = 0, 0, 0
        self.best_metric: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.nonfinite_in_row = 0
        self.history: List[Dict[str, Any]] = []
        if resume:
            self._resume(resume)
        if self.is_main:
            config_lib.dump(self.cfg, self.work_dir / "config.yml")
        log.info("work dir %s | device %s | world size %d | %d images, %d iterations/epoch x %d epochs = %d | "
                 "batch %d/process", self.work_dir, self.device, self.world_size, self.sampler.size,
                 self.iters_per_epoch, self.epochs,
                 self.total_iters, self.batch_size)

    # ------------------------------------------------------------------ setup helpers
    @staticmethod
    def _train_cfg(cfg: Mapping[str, Any]) -> Dict[str, Any]:
        """``train:`` with every default filled, after validating the whole config (a model is required)."""
        return options.train_options(cfg, require=("model",))

    def _has_val(self) -> bool:
        return bool((self.cfg.get("data") or {}).get("val"))

    def _build_model(self) -> nn.Module:
        from ..models.detector import build_detector

        model_cfg = copy.deepcopy(self.cfg)
        init = model_cfg["model"].get("init")
        model_cfg["model"]["init"] = None  # loaded below, with a report of what matched
        model = build_detector(model_cfg, device=str(self.device))
        self.init_report: Optional[Dict[str, List[str]]] = None
        if init:
            self.init_report = load_pretrained(model, init, self.logger)
        frozen = freeze_parameters(model, self.tcfg["freeze"])
        if frozen:
            self.logger.info("frozen %d parameter tensors matching %s", len(frozen), self.tcfg["freeze"])
        if self.tcfg["sync_bn"] and self.world_size > 1:
            if self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:  # torch's SyncBatchNorm has no CPU kernel
                self.logger.warning("train.sync_bn ignored on %s: SyncBatchNorm needs GPUs", self.device)
        self._frozen_norms = frozen_norm_modules(model)
        if self.tcfg["norm_eval"]:
            self._frozen_norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        elif init and _has_folded_bn(model):
            self.logger.warning(
                "model.init %s has BatchNorm layers with folded statistics (running mean 0, var 1, as converted "
                "MediaPipe weights): training them in train mode re-normalises every pretrained feature and "
                "wrecks the model. Set train.norm_eval: true to fine-tune it.", init)
        return model.to(self.device).train()

    def _build_train_loader(self) -> Tuple[DataLoader, EpochSampler]:
        from ..data import build_dataset, collate
        from ..data.loader import check_dataset_keypoints, check_split_cfg, split_transforms

        data_cfg = (self.cfg.get("data") or {}).get("train")
        if not data_cfg:
            raise config_lib.ConfigError("data.train is missing: the trainer needs a training set")
        check_split_cfg(data_cfg, "data.train")
        transforms = split_transforms(data_cfg, self.cfg["model"])
        dataset = build_dataset(copy.deepcopy(data_cfg["dataset"]), transforms=transforms)
        check_dataset_keypoints(dataset, self.cfg["model"], "data.train")
        self.batch_size = int(data_cfg.get("batch_size", 32))
        sampler = EpochSampler(len(dataset), shuffle=bool(data_cfg.get("shuffle", True)), seed=self.seed,
                               rank=self.rank, world_size=self.world_size)
        drop_last = bool(data_cfg.get("drop_last", sampler.per_rank() >= self.batch_size))
        workers = int(data_cfg.get("num_workers", 2))
        loader = DataLoader(SeededDataset(dataset, self.seed, transforms), batch_size=self.batch_size,
                            sampler=sampler, num_workers=workers, collate_fn=collate, drop_last=drop_last,
                            pin_memory=bool(data_cfg.get("pin_memory", self.device.type == "cuda")),
                            persistent_workers=bool(data_cfg.get("persistent_workers", workers > 0)) and workers > 0,
                            **({"prefetch_factor": int(data_cfg["prefetch_factor"])}
                               if workers > 0 and data_cfg.get("prefetch_factor") is not None else {}))
        return loader, sampler

    def _amp_dtype(self) -> Optional[torch.dtype]:
        amp = self.tcfg["amp"]
        if not amp:
            return None
        if self.device.type != "cuda":
            self.logger.info("train.amp=%s ignored on %s (mixed precision is for CUDA)", amp, self.device)
            return None
        if amp == "bf16" and not torch.cuda.is_bf16_supported():
            self.logger.warning("bf16 not supported on this GPU; using fp16 with a grad scaler")
            amp = "fp16"
        return torch.bfloat16 if amp == "bf16" else torch.float16

    # ------------------------------------------------------------------ checkpoints
    def _ckpt_path(self, resume: str) -> Optional[Path]:
        if resume == "auto":
            p = self.work_dir / "last.pt"
            return p if p.is_file() else None
        p = Path(resume)
        if not p.is_file():
            raise TrainingError(f"--resume {resume}: no such checkpoint file")
        return p

    def _resume(self, resume: str) -> None:
        path = self._ckpt_path(resume)
        if path is None:
            self.logger.info("--resume auto: no %s yet, starting a new run", self.work_dir / "last.pt")
            return
        ckpt = load_checkpoint(path)
        if not isinstance(ckpt, Mapping) or "train_state" not in ckpt:
            raise TrainingError(f"cannot resume from {path}: it has no training state (only weights?). "
                                "Use it as model.init to fine-tune from it instead.")
        try:
            check_compatible(ckpt.get("model_cfg"), unwrap(self.model).cfg, source=f"--resume {path}")
        except CheckpointError as exc:
            raise TrainingError(f"cannot resume: {exc}") from None
        st = ckpt["train_state"]
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        if self.scaler is not None and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        if self.ema is not None:
            if st.get("ema") is None:
                raise TrainingError(f"cannot resume from {path}: the config enables train.ema but the checkpoint "
                                    "has no EMA state")
            self.ema.load_state_dict(st["ema"])
        self.epoch, self.iter_in_epoch, self.global_step = st["epoch"], st["iter_in_epoch"], st["global_step"]
        self.best_metric, self.best_epoch = st.get("best_metric"), st.get("best_epoch")
        self.nonfinite_in_row = st.get("nonfinite_in_row", 0)
        self.history = list(st.get("history", []))
        rng = st.get("rng", {}).get(self.rank) or st.get("rng", {}).get(0)
        if rng:
            restore_rng_state(rng)
        if st.get("world_size", 1) != self.world_size:
            self.logger.warning("resuming a run of world size %s with %s processes: the data order changes from "
                                "here on", st.get("world_size"), self.world_size)
        self.logger.truncate_after(self.global_step)
        self.logger.info("resumed from %s at epoch %d, iteration %d/%d (global step %d)", path, self.epoch,
                         self.iter_in_epoch, self.iters_per_epoch, self.global_step)

    def deploy_state_dict(self) -> Dict[str, torch.Tensor]:
        """The weights to evaluate and ship: the EMA when enabled, else the trained model."""
        return (self.ema.module if self.ema is not None else unwrap(self.model)).state_dict()

    def save_checkpoint(self, name: str = "last.pt", metrics: Optional[Mapping[str, Any]] = None) -> Optional[Path]:
        rngs = self._gather_rng()
        if not self.is_main:
            return None
        ckpt = {
            "state_dict": self.deploy_state_dict(),
            "model_cfg": copy.deepcopy(unwrap(self.model).cfg),
            "meta": {"epoch": self.epoch, "iter_in_epoch": self.iter_in_epoch, "global_step": self.global_step,
                     "metrics": dict(metrics or {}), "ema": self.ema is not None, "seed": self.seed,
                     "config": copy.deepcopy(self.cfg), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                     "torch": torch.__version__},
            "train_state": {
                "model": unwrap(self.model).state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "epoch": self.epoch, "iter_in_epoch": self.iter_in_epoch, "global_step": self.global_step,
                "best_metric": self.best_metric, "best_epoch": self.best_epoch,
                "nonfinite_in_row": self.nonfinite_in_row, "history": self.history,
                "rng": rngs, "world_size": self.world_size,
            },
        }
        return save_checkpoint(self.work_dir / name, ckpt)

    def _gather_rng(self) -> Dict[int, Any]:
        mine = capture_rng_state()
        if self.world_size == 1:
            return {0: mine}
        import torch.distributed as dist

        allr: List[Any] = [None] * self.world_size
        dist.all_gather_object(allr, mine)
        return dict(enumerate(allr))

    # ------------------------------------------------------------------ validation
    def validate(self) -> Dict[str, float]:
        """Evaluate the deploy weights (EMA if enabled) with the evaluator; rank 0 runs it, all ranks get it."""
        metrics: Dict[str, float] = {}
        if self.is_main:
            from .evaluator import evaluate

            net = self.ema.module if self.ema is not None else unwrap(self.model)
            n_vis = int(self.tcfg["val_vis"] or 0)
            vis_dir = self.work_dir / "vis" / f"epoch_{self.epoch:03d}" if n_vis > 0 else None
            # the evaluator sets eval mode / no_grad and restores the model's mode itself
            metrics = _floats(evaluate(net, self.cfg, split="val", progress=bool(self.tcfg["progress_bar"]),
                                       vis_dir=vis_dir, num_vis=n_vis))
        metrics = dist_utils.broadcast_object(metrics)
        key = self.tcfg["val_metric"]
        if key not in metrics:
            raise TrainingError(f"train.val_metric {key!r} is not among the evaluator's metrics: "
                                f"{', '.join(sorted(metrics)) or '(none)'}")
        return metrics

    def _is_better(self, value: float) -> bool:
        if self.best_metric is None or not math.isfinite(self.best_metric):
            return math.isfinite(value)
        return value > self.best_metric if self.tcfg["val_mode"] == "max" else value < self.best_metric

    def _validate_and_checkpoint(self) -> None:
        metrics: Dict[str, float] = {}
        interval = int(self.tcfg["val_interval"])
        last = self.epoch >= self.epochs
        if self._has_val() and ((interval > 0 and self.epoch % interval == 0) or last):
            metrics = self.validate()
            key = self.tcfg["val_metric"]
            improved = self._is_better(metrics[key])
            if improved:
                self.best_metric, self.best_epoch = metrics[key], self.epoch
            self.history.append({"epoch": self.epoch, **metrics})
            self.logger.scalars("val", self.global_step, metrics, epoch=self.epoch)
            self.logger.info("epoch %d/%d validation: %s%s", self.epoch, self.epochs, _fmt(metrics),
                             f"  (new best {key}={metrics[key]:.4f})" if improved else
                             f"  (best {key}={self.best_metric:.4f} at epoch {self.best_epoch})")
            self.save_checkpoint("last.pt", metrics)
            if improved and self.is_main:
                import shutil

                tmp = self.work_dir / ".best.pt.tmp"
                shutil.copyfile(self.work_dir / "last.pt", tmp)
                os.replace(tmp, self.work_dir / "best.pt")
        else:
            self.save_checkpoint("last.pt", metrics)
        if self.is_main:
            self.logger.plot()

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
                losses = self.train_model(images, targets)
            loss = losses["loss"]
            values = _floats(losses)  # one device sync for every loss term, before backward
            finite = dist_utils.all_true(math.isfinite(values["loss"]), self.device)
            self.optimizer.zero_grad(set_to_none=True)
            grad_norm = None
            if finite:
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
                clip = self.tcfg["clip_grad_norm"]
                if clip:
                    if self.scaler is not None:
                        self.scaler.unscale_(self.optimizer)
                    params = [p for p in self.model.parameters() if p.requires_grad]
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, float(clip)))
                    if self.scaler is None and not math.isfinite(grad_norm):
                        finite = False
                if finite:
                    if self.scaler is not None:
                        self.scaler.step(self.optimizer)
                        self.scaler.update()
                    else:
                        self.optimizer.step()
                    if self.ema is not None:
                        self.ema.update(self.model)
        except torch.cuda.OutOfMemoryError as exc:
            raise TrainingError(
                f"CUDA out of memory at batch size {self.batch_size} per process (input "
                f"{list(images.shape[-2:])}): lower it, e.g. --set data.train.batch_size={max(1, self.batch_size // 2)}"
                f" (and scale train.optimizer.lr by the same factor)") from exc
        self.scheduler.step()
        if not finite:
            self.nonfinite_in_row += 1
            self.optimizer.zero_grad(set_to_none=True)
            self.logger.warning("non-finite loss/gradient at epoch %d iteration %d (%s); step skipped (%d in a row, "
                                "limit %d)", self.epoch, self.iter_in_epoch, _fmt(values),
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

    def fit(self) -> Dict[str, Any]:
        """Train to ``train.epochs``; returns a summary (best metric, last validation, work dir, time)."""
        log = self.logger
        t_start = time.time()
        before: Optional[Dict[str, float]] = None
        try:
            if self.tcfg["val_before_train"] and self._has_val() and self.global_step == 0:
                before = self.validate()
                self.logger.scalars("val", 0, before, epoch=0)
                log.info("validation before training: %s", _fmt(before))
            while self.epoch < self.epochs:
                self._train_epoch()
                self.epoch += 1
                self.iter_in_epoch = 0
                self._validate_and_checkpoint()
        finally:
            if self.is_main:
                self.logger.plot()
        elapsed = time.time() - t_start
        last_val = self.history[-1] if self.history else {}
        summary = {"work_dir": str(self.work_dir), "epochs": self.epochs, "global_step": self.global_step,
                   "best_metric": self.best_metric, "best_epoch": self.best_epoch,
                   "val_metric": self.tcfg["val_metric"], "before": before, "last": last_val, "time_s": elapsed}
        if before is not None and last_val:
            key = self.tcfg["val_metric"]
            log.info("%s before training %.4f -> after %.4f (best %.4f at epoch %s)", key,
                     before.get(key, float("nan")), last_val.get(key, float("nan")), self.best_metric, self.best_epoch)
        log.info("done in %.1f s; checkpoints in %s", elapsed, self.work_dir)
        return summary

    def _train_epoch(self) -> None:
        self._set_train_mode()
        start = self.iter_in_epoch
        self.sampler.set_epoch(self.epoch, skip_samples=start * self.batch_size)
        bar = None
        if self.is_main and self.tcfg["progress_bar"]:
            from tqdm import tqdm

            bar = tqdm(total=self.iters_per_epoch, initial=start, desc=f"epoch {self.epoch + 1}/{self.epochs}",
                       dynamic_ncols=True, leave=False)
        sums: Dict[str, float] = {}
        count, imgs, t0 = 0, 0, time.time()
        ips = 0.0
        ckpt_every = int(self.tcfg["checkpoint_interval"])
        log_every = max(1, int(self.tcfg["log_interval"]))
        for images, targets in self.train_loader:
            if self.iter_in_epoch >= self.iters_per_epoch:
                break
            lr = self.optimizer.param_groups[0]["lr"]
            step_out = self.train_step(images, targets)
            self.iter_in_epoch += 1
            self.global_step += 1
            imgs += images.shape[0] * self.world_size
            if step_out is not None:
                count += 1
                for k, v in step_out.items():
                    sums[k] = sums.get(k, 0.0) + v
            dt = time.time() - t0
            ips = imgs / dt if dt > 0 else 0.0
            if bar is not None:
                shown = {k: f"{v:.3f}" for k, v in (step_out or {}).items() if k.startswith("loss")}
                bar.set_postfix(shown, lr=f"{lr:.2e}", img_s=f"{ips:.1f}")
                bar.update(1)
            if self.global_step % log_every == 0 or self.iter_in_epoch == self.iters_per_epoch:
                means = {k: v / max(count, 1) for k, v in sums.items()}
                means = dist_utils.all_reduce_mean(means, self.device)
                self.logger.scalars("train", self.global_step, {**means, "lr": lr, "images_per_s": ips},
                                    epoch=self.epoch, iter=self.iter_in_epoch)
                if bar is None or self.iter_in_epoch == self.iters_per_epoch:
                    self.logger.info("epoch %d/%d iter %d/%d %s lr %.3e %.1f img/s", self.epoch + 1, self.epochs,
                                     self.iter_in_epoch, self.iters_per_epoch, _fmt(means), lr, ips)
                sums, count = {}, 0
            if ckpt_every > 0 and self.global_step % ckpt_every == 0 and self.iter_in_epoch < self.iters_per_epoch:
                self.save_checkpoint("last.pt")
        if bar is not None:
            bar.close()


def _has_folded_bn(model: nn.Module) -> bool:
    """True when every BatchNorm has identity running statistics (BN folded into the convs at conversion)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    return bool(bns) and all(bool((m.running_mean == 0).all() and (m.running_var == 1).all()) for m in bns)


def _floats(losses: Mapping[str, Any]) -> Dict[str, float]:
    """The scalar entries as floats; the tensors are read in one transfer (one device sync, not one each)."""
    tensors = {k: v for k, v in losses.items() if torch.is_tensor(v) and v.numel() == 1}
    read = dict(zip(tensors, torch.stack([v.detach().float().reshape(()) for v in tensors.values()]).tolist())
                ) if tensors else {}
    out = {}
    for k, v in losses.items():
        if k in read:
            out[k] = read[k]
        elif isinstance(v, (int, float)):
            out[k] = float(v)
    return out


def _fmt(d: Mapping[str, Any]) -> str:
    return " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items())


def _config_stem(cfg: Mapping[str, Any]) -> str:
    src = cfg.get("_source_")
    return Path(src).stem if src else "run"
