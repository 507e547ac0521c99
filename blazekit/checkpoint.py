"""Checkpoints: ``{"state_dict", "model_cfg", "meta", ...}`` saved atomically, loaded with clear reports.

Generic on purpose: ``state`` is any dict (the trainer adds optimizer / scheduler / EMA / RNG
entries). Loading weights into a model first compares the architecture part of the model config,
so a back-camera checkpoint is refused by a front-camera config with the differing keys named,
instead of a wall of size-mismatch errors.

Checkpoints are data, never code: they hold only tensors and plain Python types (dict, list, str,
numbers, None) and are read with ``torch.load(weights_only=True)`` only, so a crafted file cannot run
anything when it is loaded. :func:`save_checkpoint` refuses other objects, which keeps that true.
"""
from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import nn

from .config import diff, plain
from .errors import UserError

PathLike = Union[str, os.PathLike]

#: model config keys that define the tensors (and their meaning); a mismatch refuses loading
ARCH_KEYS = ("backbone", "neck", "head", "anchors", "num_keypoints", "input_size")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


#: the only types a checkpoint may hold besides tensors (what ``torch.load(weights_only=True)`` reads back)
PLAIN_TYPES = (str, int, float, bool, type(None), torch.dtype, torch.device, torch.Size)


def check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Raise ``TypeError`` naming the first entry that is not a tensor, a plain type or a dict/list/tuple of them.

    Catches at save time what a weights-only load would refuse later (numpy arrays, custom classes).
    """
    if isinstance(obj, torch.Tensor) or type(obj) in PLAIN_TYPES:  # exact: a str subclass is refused on load
        return
    if type(obj) in (dict, OrderedDict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}; checkpoints hold str/int keys only")
            check_plain(v, f"{where}.{k}")
        return
    if type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(obj).__name__}: checkpoints hold only tensors and plain types "
                    "(so they load with weights_only=True); convert it first")


def _file_mode() -> int:
    """The mode a newly created file gets (0666 & ~umask); mkstemp's 0600 would make last.pt private."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_write(path: Path, write: Any) -> Path:
    """``write(tmp)`` into a temp file beside ``path``, then ``os.replace``: readers never see a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_checkpoint(path: PathLike, state: Mapping[str, Any], atomic: bool = True) -> Path:
    """``torch.save(state)``; with ``atomic`` write a temp file beside it then ``os.replace``.

    An interrupted save (Ctrl-C, pre-emption, full disk) then never leaves a truncated ``last.pt``;
    the leftover temp file is removed by :func:`remove_partial_writes`.
    """
    path = Path(path)
    check_plain(dict(state))
    if not atomic:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(dict(state), path)
        return path
    return _atomic_write(path, lambda tmp: torch.save(dict(state), tmp))


def copy_checkpoint(src: PathLike, dst: PathLike) -> Path:
    """Atomic file copy (``last.pt`` -> ``best.pt``), same temp-file naming and mode as :func:`save_checkpoint`."""
    import shutil

    return _atomic_write(Path(dst), lambda tmp: shutil.copyfile(src, tmp))


def remove_partial_writes(directory: PathLike) -> int:
    """Delete temp files left by interrupted :func:`save_checkpoint` calls (``.last.pt.*.tmp``); returns how many."""
    n = 0
    for p in Path(directory).glob(".*.pt.*tmp"):
        if p.is_file():
            p.unlink()
            n += 1
    return n


def nonfinite_tensors(state: Mapping[str, Any]) -> List[str]:
    """Keys of the floating-point tensors in ``state`` holding NaN or Inf (diverged training)."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


#: name prefixes of hollance's BlazeFace ``.pth`` (github.com/hollance/BlazeFace-PyTorch) state dicts
HOLLANCE_PREFIXES = ("backbone1.", "backbone2.", "classifier_8.", "classifier_16.", "regressor_8.", "regressor_16.")


def looks_like_hollance(state: Mapping[str, Any]) -> bool:
    """True for a bare hollance state dict: it needs ``tools/convert.py`` (other names, BN folded) first."""
    keys = [k for k in state if isinstance(k, str)]
    return bool(keys) and all(k.startswith(HOLLANCE_PREFIXES) for k in keys)


#: tensors at least this sparse are stored as a bit mask plus their non-zero values by :func:`pack_sparse`
PACK_MIN_ZEROS = 0.25


def pack_sparse(ckpt: Mapping[str, Any]) -> Dict[str, Any]:
    """A lossless, smaller layout for pruned weights (MediaPipe's full-range model is ~62 % zeros): each float
    tensor with >= ``PACK_MIN_ZEROS`` zeros moves from ``state_dict`` to ``packed`` as a bit mask of its non-zeros
    and their values (fp16 when every value is exactly fp16). :func:`load_checkpoint` restores the dense tensors,
    bit for bit."""
    import numpy as np

    state, packed = {}, {}
    for k, v in ckpt["state_dict"].items():
        nz = v != 0 if v.is_floating_point() else None
        if nz is None or v.numel() < 64 or float(nz.float().mean()) > 1 - PACK_MIN_ZEROS:
            state[k] = v
            continue
        values = v[nz]
        if torch.equal(values.half().to(v.dtype), values):
            values = values.half()
        mask = torch.from_numpy(np.packbits(nz.flatten().numpy()))
        packed[k] = {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", ""), "mask": mask,
                     "values": values}
    return {**ckpt, "state_dict": state, "packed": packed}


def _unpack_sparse(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """Inverse of :func:`pack_sparse` (no-op for a checkpoint without ``packed``)."""
    import numpy as np

    packed = ckpt.pop("packed", None)
    if not packed:
        return ckpt
    state = dict(ckpt["state_dict"])
    for k, p in packed.items():
        n = int(np.prod(p["shape"])) if p["shape"] else 1
        nz = torch.from_numpy(np.unpackbits(p["mask"].numpy(), count=n).astype(bool))
        dense = torch.zeros(n, dtype=getattr(torch, p["dtype"]))
        dense[nz] = p["values"].to(dense.dtype)
        state[k] = dense.reshape(p["shape"])
    return {**ckpt, "state_dict": state}


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Load a checkpoint on CPU with ``torch.load(weights_only=True)`` only; a bare state dict is wrapped as
    ``{"state_dict": ...}``.

    A file holding other Python objects is refused, never unpickled: loading a checkpoint must not run
    code from it. A hollance ``.pth`` is refused with the conversion command, weights holding NaN/Inf naming a
    tensor.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a pickle with other objects, a truncated zip, another file type
        raise CheckpointError(f"{path}: not a blazekit checkpoint or it holds Python objects that are not "
                              "loaded for safety") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    try:
        ckpt = _unpack_sparse(ckpt)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: damaged packed weights ({exc})") from None
    if "state_dict" not in ckpt and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        ckpt = {"state_dict": ckpt}
    sd = ckpt.get("state_dict")
    if isinstance(sd, Mapping) and looks_like_hollance(sd):
        raise CheckpointError(f"{path}: a hollance BlazeFace .pth (keys like backbone1.*, classifier_8.*), not a "
                              f"blazekit checkpoint; convert it first: python tools/convert.py {path} "
                              f"{path.with_suffix('.blazekit.pt')}")
    bad = nonfinite_tensors(sd) if isinstance(sd, Mapping) else []
    if bad:  # a diverged run's weights: every output would be NaN
        raise CheckpointError(f"{path}: non-finite weights (NaN/Inf) in {bad[0]}"
                              + (f" and {len(bad) - 1} more tensor(s)" if len(bad) > 1 else "")
                              + ": the training that wrote it diverged. Use an earlier checkpoint")
    return ckpt


def architecture_diff(ckpt_model_cfg: Optional[Mapping[str, Any]], model_cfg: Mapping[str, Any]) -> List[str]:
    """Human-readable differences of the :data:`ARCH_KEYS` of two model configs (empty = compatible).

    A key written on one side only is taken to be that class's default and not reported, so
    ``{type: SSDHead}`` and ``{type: SSDHead, prior_prob: 0.01}`` agree; ``type`` always counts.
    """
    if not ckpt_model_cfg:
        return []
    out: List[str] = []
    for key in ARCH_KEYS:
        a, b = ckpt_model_cfg.get(key), model_cfg.get(key)
        if a is None and b is None:
            continue
        out += diff(plain(a), plain(b), f"model.{key}", one_sided=None, always=("type",))
    return out


def check_compatible(ckpt_model_cfg: Optional[Mapping[str, Any]], model_cfg: Mapping[str, Any],
                     source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming every differing architecture key.

    A checkpoint without ``model_cfg`` (a bare state dict) is not checked here; strict tensor
    loading still catches shape mismatches.
    """
    diffs = architecture_diff(ckpt_model_cfg, model_cfg)
    if diffs:
        raise CheckpointError(
            f"{source} was trained with a different architecture than this model config; differing keys: "
            + "; ".join(diffs)
            + ". Use the config the checkpoint was trained with (its model_cfg is stored inside), "
              "or load only matching tensors with load_model_weights(..., strict=False)."
        )


def _strip_prefix(state: Mapping[str, torch.Tensor], model_keys: set) -> Dict[str, torch.Tensor]:
    """Drop DistributedDataParallel's ``module.`` prefix when the model has none."""
    if state and all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in model_keys):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _state_dict(model: nn.Module, ckpt: Mapping[str, Any], source: str) -> Dict[str, torch.Tensor]:
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else ckpt
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: 'state_dict' is {type(state).__name__}, expected a mapping of tensors")
    return _strip_prefix(state, set(model.state_dict()))


def compare_weights(model: nn.Module, ckpt: Mapping[str, Any], source: str = "checkpoint") -> Dict[str, List[Any]]:
    """What :func:`load_model_weights` would load into ``model`` and leave out (the same report); nothing is copied."""
    own = model.state_dict()
    state = _state_dict(model, ckpt, source)
    loaded, unexpected, mismatch = [], [], []
    for k, v in state.items():
        if k not in own:
            unexpected.append(k)
        elif not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(own[k].shape):
            mismatch.append((k, tuple(getattr(v, "shape", ())), tuple(own[k].shape)))
        else:
            loaded.append(k)
    missing = [k for k in own if k not in state]
    return {"loaded": loaded, "missing": missing, "unexpected": unexpected, "shape_mismatch": mismatch}


def load_model_weights(model: nn.Module, ckpt: Mapping[str, Any], strict: bool = True,
                       source: str = "checkpoint") -> Dict[str, List[Any]]:
    """Copy ``ckpt["state_dict"]`` (or a bare state dict) into ``model``.

    Returns ``{"loaded": [...], "missing": [...], "unexpected": [...], "shape_mismatch": [(key,
    ckpt_shape, model_shape)]}``. ``strict`` raises if anything but "loaded" is non-empty; otherwise
    only the tensors that fit are copied (e.g. a backbone into a model with a new head).
    """
    report = compare_weights(model, ckpt, source)
    if strict and (report["missing"] or report["unexpected"] or report["shape_mismatch"]):
        raise CheckpointError(f"{source} does not fit the model (strict=True): " + "; ".join(misfit_lines(report)))
    own, state = model.state_dict(), _state_dict(model, ckpt, source)
    with torch.no_grad():
        for k in report["loaded"]:
            own[k].copy_(state[k])
    return report


def misfit_lines(report: Mapping[str, List[Any]]) -> List[str]:
    """What did not load, from a :func:`load_model_weights` report: shape mismatches, missing, unexpected keys."""
    lines = []
    mismatch = report["shape_mismatch"]
    if mismatch:
        shown = ", ".join(f"{k} {a} (checkpoint) vs {b} (model)" for k, a, b in mismatch[:10])
        lines.append(f"shape mismatch ({len(mismatch)}): " + shown
                     + (f" ... (+{len(mismatch) - 10})" if len(mismatch) > 10 else ""))
    for name, keys in (("missing in checkpoint", report["missing"]), ("unexpected in checkpoint", report["unexpected"])):
        if keys:
            lines.append(f"{name} ({len(keys)}): " + ", ".join(keys[:10]) + (" ..." if len(keys) > 10 else ""))
    return lines


def load_summary(report: Mapping[str, List[Any]], shown: int = 5) -> str:
    """A :func:`load_model_weights` report in one line: ``loaded 200/206 tensors; not loaded: missing 6 (a, b, ...),
    unexpected 0, shape mismatch 0`` (the model's tensors are the loaded, missing and mis-shaped ones)."""
    def few(names: List[str]) -> str:
        return " (" + ", ".join(names[:shown]) + (", ..." if len(names) > shown else "") + ")" if names else ""

    loaded, missing, unexpected = report["loaded"], report["missing"], report["unexpected"]
    mism = [f"{k} {a}->{b}" for k, a, b in report["shape_mismatch"]]
    return (f"loaded {len(loaded)}/{len(loaded) + len(missing) + len(mism)} tensors; not loaded: missing "
            f"{len(missing)}{few(missing)}, unexpected {len(unexpected)}{few(unexpected)}, shape mismatch "
            f"{len(mism)}{few(mism)}")


def model_checkpoint(model: nn.Module, meta: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """``{"state_dict", "model_cfg", "meta"}`` for a detector (``model.cfg`` is its model config)."""
    return {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "model_cfg": plain(getattr(model, "cfg", None)) if getattr(model, "cfg", None) is not None else None,
            "meta": dict(meta or {})}

