"""Setting up and carrying a training run: the model with its ``model.init`` / freezing, mixed precision,
RNG states and the checks on ``--resume``. RNG states are plain data so checkpoints load with weights_only.
"""
from __future__ import annotations

import contextlib
import fnmatch
import random
import copy
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .. import config as config_lib
from ..errors import UserError
from ..checkpoint import CheckpointError, check_compatible, load_summary
from .optim import freeze_parameters, frozen_norm_modules


class TrainingError(UserError, RuntimeError):
    """Training cannot continue (too many non-finite losses, out of memory, incompatible checkpoint)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :meth:`Trainer.fit`: ``str()`` says where it stopped and what ``last.pt`` holds; ``saved``
    whether there is a checkpoint to resume from; ``rank`` which process tells (rank 0 speaks for all)."""

    def __init__(self, note: str, saved: bool, rank: int = 0) -> None:
        super().__init__(note)
        self.saved, self.rank = saved, rank


#: config keys that may change on ``--resume`` (fnmatch patterns): they change how long, how often and how
#: verbosely the run goes on, or where and how fast data is read, never the optimisation itself. Any other
#: difference (lr, freeze, schedule, data, seed, model) would silently make the resumed run another
#: experiment, or fail deep inside the optimizer, so it is refused with the keys named.
RESUME_SAFE_KEYS = (
    "train.epochs", "train.val_interval", "train.val_vis", "train.val_before_train", "train.checkpoint_interval",
    "train.log_interval", "train.progress_bar", "train.tensorboard", "train.work_dir", "train.max_nonfinite_steps",
    "train.init_strict", "model.init", "data.*.num_workers", "data.*.pin_memory", "data.*.persistent_workers",
    "data.*.prefetch_factor", "data.val.batch_size", "_source_", "imports",
)


def resume_config_changes(ckpt_cfg: Mapping[str, Any], cfg: Mapping[str, Any]) -> List[str]:
    """The differences of :func:`blazekit.config.diff` outside :data:`RESUME_SAFE_KEYS`."""
    diffs = config_lib.diff(config_lib.plain(ckpt_cfg), config_lib.plain(cfg))
    return [d for d in diffs if not any(fnmatch.fnmatchcase(d.split(":", 1)[0], pat) or
                                        d.startswith(pat + ".") for pat in RESUME_SAFE_KEYS)]


def capture_rng_state() -> Dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as tensors and plain types: loadable with weights_only."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: Dict[str, Any] = {
        "python": {"version": int(version), "state": list(mt), "gauss": gauss},
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(world_size: int) -> Dict[int, Any]:
    """Every rank's RNG state, by rank (a collective under DDP: all ranks call it)."""
    mine = capture_rng_state()
    if world_size == 1:
        return {0: mine}
    import torch.distributed as dist

    allr: List[Any] = [None] * world_size
    dist.all_gather_object(allr, mine)
    return dict(enumerate(allr))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_train_model(cfg: Mapping[str, Any], tcfg: Mapping[str, Any], device: torch.device, world_size: int,
                      log: Any) -> Tuple[nn.Module, Optional[Dict[str, List[Any]]], List[nn.Module]]:
    """The detector of ``cfg`` with ``model.init`` loaded (strict unless ``train.init_strict: false``; see
    :func:`blazekit.models.build.load_weights`, its report is logged), ``train.freeze`` applied and SyncBN if asked;
    returns ``(model, init report or None, norm layers to keep in eval mode)``."""
    from ..models.build import build_detector, load_weights

    model_cfg = copy.deepcopy(dict(cfg["model"]))  # the section: the config was validated when it was loaded
    init = model_cfg.get("init")
    model_cfg["init"] = None  # loaded below, with a report of what matched
    model = build_detector(model_cfg, device=str(device))
    report = load_weights(model, init, strict=bool(tcfg["init_strict"]), setting="model.init") if init else None
    if report is not None:
        log.info("model.init %s: %s", init, load_summary(report))
    frozen = freeze_parameters(model, tcfg["freeze"])
    if frozen:
        log.info("frozen %d parameter tensors matching %s", len(frozen), tcfg["freeze"])
    if tcfg["sync_bn"] and world_size > 1:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:  # torch's SyncBatchNorm has no CPU kernel
            log.warning("train.sync_bn ignored on %s: SyncBatchNorm needs GPUs", device)
    frozen_norms = frozen_norm_modules(model)
    if tcfg["norm_eval"]:
        frozen_norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    elif init and _has_folded_bn(model) and not tcfg["calibrate_bn"]:
        log.warning("model.init %s has BatchNorm layers with folded statistics (running mean 0, var 1, as converted "
                    "MediaPipe weights): training them in train mode re-normalises every pretrained feature and "
                    "wrecks the model. Set train.norm_eval: true (or train.calibrate_bn: 8) to fine-tune it.", init)
    return model.to(device).train(), report, frozen_norms


def _has_folded_bn(model: nn.Module) -> bool:
    """True when every BatchNorm has identity running statistics (BN folded into the convs at conversion)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    return bool(bns) and all(bool((m.running_mean == 0).all() and (m.running_var == 1).all()) for m in bns)


def amp_dtype(amp: Any, device: torch.device, log: Any) -> Optional[torch.dtype]:
    """``train.amp`` -> the autocast dtype (None: full precision; mixed precision is for CUDA only)."""
    if not amp:
        return None
    if device.type != "cuda":
        log.info("train.amp=%s ignored on %s (mixed precision is for CUDA)", amp, device)
        return None
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        log.warning("bf16 not supported on this GPU; using fp16 with a grad scaler")
        amp = "fp16"
    return torch.bfloat16 if amp == "bf16" else torch.float16


def check_resumable(ckpt: Mapping[str, Any], path: Path, model_cfg: Mapping[str, Any], cfg: Mapping[str, Any],
                    data: Optional[Mapping[str, Any]] = None) -> None:
    """Refuse to resume from weights only, another architecture, a config changed outside
    :data:`RESUME_SAFE_KEYS` (a changed ``train.freeze`` used to end in an optimizer traceback) or a training set
    whose content changed (``data``: this run's :func:`blazekit.data.datasets.base.data_fingerprint` per split,
    compared with the checkpoint's; the sample order and what the steps learned depend on it)."""
    if "train_state" not in ckpt:
        raise TrainingError(f"cannot resume from {path}: it has no training state (only weights?). "
                            "Use it as model.init to fine-tune from it instead.")
    try:
        check_compatible(ckpt.get("model_cfg"), model_cfg, source=f"--resume {path}")
    except CheckpointError as exc:
        raise TrainingError(f"cannot resume: {exc}") from None
    saved_cfg = (ckpt.get("meta") or {}).get("config")
    changed = resume_config_changes(saved_cfg, cfg) if saved_cfg is not None else []
    if changed:
        raise TrainingError(f"cannot resume from {path}: the config differs from the one it was trained with: "
                            + "; ".join(changed) + ". Resume with the same config (keys that may change: "
                            + ", ".join(RESUME_SAFE_KEYS) + "), or start a new run from it with model.init.")
    saved_data = (ckpt.get("meta") or {}).get("data") or {}
    for split, now in (data or {}).items():
        before = saved_data.get(split)
        if before is None or now is None or before == now:  # older checkpoints have no fingerprint
            continue
        what = (f"{before['images']} -> {now['images']} images" if before["images"] != now["images"] else
                f"the same {now['images']} images but other annotations or image sizes")
        raise TrainingError(f"cannot resume from {path}: data.{split} changed since it was written ({what}; "
                            f"fingerprint {before['sha1'][:12]} -> {now['sha1'][:12]}). Resume with the data it was "
                            f"trained on, or start a new run from it: --set model.init={path}")
