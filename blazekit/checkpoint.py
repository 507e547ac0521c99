"""Checkpoints: ``{"state_dict", "model_cfg", "meta", ...}`` saved atomically, loaded with clear reports.

Generic on purpose: ``state`` is any dict (the trainer adds optimizer / scheduler / EMA / RNG
entries). Loading weights into a model first compares the architecture part of the model config,
so a back-camera checkpoint is refused by a front-camera config with the differing keys named,
instead of a wall of size-mismatch errors.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import nn

from .config import plain

PathLike = Union[str, os.PathLike]

#: model config keys that define the tensors (and their meaning); a mismatch refuses loading
ARCH_KEYS = ("backbone", "neck", "head", "anchors", "num_keypoints", "input_size")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


def save_checkpoint(path: PathLike, state: Mapping[str, Any], atomic: bool = True) -> Path:
    """``torch.save(state)``; with ``atomic`` write a temp file beside it then ``os.replace``.

    An interrupted save (Ctrl-C, pre-emption, full disk) then never leaves a truncated ``last.pt``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not atomic:
        torch.save(dict(state), path)
        return path
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(dict(state), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_checkpoint(path: PathLike, allow_pickle: bool = True) -> Dict[str, Any]:
    """Load a checkpoint on CPU. Plain tensors/dicts load with ``weights_only``; training checkpoints
    (RNG states etc.) need full unpickling, allowed unless ``allow_pickle=False`` (untrusted files).
    A bare state dict is wrapped as ``{"state_dict": ...}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not allow_pickle:
            raise CheckpointError(f"{path}: cannot be loaded with weights_only (it holds non-tensor Python objects, "
                                  f"or is no checkpoint) and allow_pickle=False: {exc}") from exc
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc2).__name__}: {exc2})") from exc2
    except Exception as exc:  # truncated zip, wrong file type
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    if "state_dict" not in ckpt and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        ckpt = {"state_dict": ckpt}
    return ckpt


def _diff(a: Any, b: Any, prefix: str) -> List[str]:
    """Dotted keys where two plain config trees differ.

    A key written on one side only is taken to be that class's default and not reported, so
    ``{type: SSDHead}`` and ``{type: SSDHead, prior_prob: 0.01}`` agree; ``type`` always counts.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        out: List[str] = []
        for k in sorted(set(a) | set(b)):
            if k in a and k in b:
                out += _diff(a[k], b[k], f"{prefix}.{k}")
            elif k == "type":
                out.append(f"{prefix}.type: checkpoint {a.get(k)!r} vs config {b.get(k)!r}")
        return out
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return [] if float(a) == float(b) else [f"{prefix}: checkpoint {a!r} vs config {b!r}"]
    return [] if a == b else [f"{prefix}: checkpoint {a!r} vs config {b!r}"]


def architecture_diff(ckpt_model_cfg: Optional[Mapping[str, Any]], model_cfg: Mapping[str, Any]) -> List[str]:
    """Human-readable differences of the :data:`ARCH_KEYS` of two model configs (empty = compatible)."""
    if not ckpt_model_cfg:
        return []
    out: List[str] = []
    for key in ARCH_KEYS:
        a, b = ckpt_model_cfg.get(key), model_cfg.get(key)
        if a is None and b is None:
            continue
        out += _diff(plain(a), plain(b), f"model.{key}")
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
            f"{source} was trained with a different architecture than this model config; differing keys:\n  "
            + "\n  ".join(diffs)
            + "\nUse the config the checkpoint was trained with (its model_cfg is stored inside), "
              "or load only matching tensors with load_model_weights(..., strict=False)."
        )


def _strip_prefix(state: Mapping[str, torch.Tensor], model_keys: set) -> Dict[str, torch.Tensor]:
    """Drop DistributedDataParallel's ``module.`` prefix when the model has none."""
    if state and all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in model_keys):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def load_model_weights(model: nn.Module, ckpt: Mapping[str, Any], strict: bool = True,
                       source: str = "checkpoint") -> Dict[str, List[Any]]:
    """Copy ``ckpt["state_dict"]`` (or a bare state dict) into ``model``.

    Returns ``{"loaded": [...], "missing": [...], "unexpected": [...], "shape_mismatch": [(key,
    ckpt_shape, model_shape)]}``. ``strict`` raises if anything but "loaded" is non-empty; otherwise
    only the tensors that fit are copied (e.g. a backbone into a model with a new head).
    """
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else ckpt
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: 'state_dict' is {type(state).__name__}, expected a mapping of tensors")
    own = model.state_dict()
    state = _strip_prefix(state, set(own))
    loaded, unexpected, mismatch = [], [], []
    for k, v in state.items():
        if k not in own:
            unexpected.append(k)
        elif not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(own[k].shape):
            mismatch.append((k, tuple(getattr(v, "shape", ())), tuple(own[k].shape)))
        else:
            loaded.append(k)
    missing = [k for k in own if k not in state]
    report: Dict[str, List[Any]] = {"loaded": loaded, "missing": missing, "unexpected": unexpected,
                                    "shape_mismatch": mismatch}
    if strict and (missing or unexpected or mismatch):
        lines = []
        if mismatch:
            shown = ", ".join(f"{k} {a} (checkpoint) vs {b} (model)" for k, a, b in mismatch[:10])
            lines.append("shape mismatch: " + shown
                         + (f" ... (+{len(mismatch) - 10})" if len(mismatch) > 10 else ""))
        for name, keys in (("missing in checkpoint", missing), ("unexpected in checkpoint", unexpected)):
            if keys:
                lines.append(f"{name} ({len(keys)}): " + ", ".join(keys[:10]) + (" ..." if len(keys) > 10 else ""))
        raise CheckpointError(f"{source} does not fit the model (strict=True):\n  " + "\n  ".join(lines))
    with torch.no_grad():
        for k in loaded:
            own[k].copy_(state[k])
    return report


def model_checkpoint(model: nn.Module, meta: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """``{"state_dict", "model_cfg", "meta"}`` for a detector (``model.cfg`` is its model config)."""
    return {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "model_cfg": plain(getattr(model, "cfg", None)) if getattr(model, "cfg", None) is not None else None,
            "meta": dict(meta or {})}

