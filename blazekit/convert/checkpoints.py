"""A source weight file -> a blazekit checkpoint: the format by suffix, the model variant by content, the source's
MD5 recorded so the checkpoint can be traced back to it."""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

from .hollance import load_state_dict, read_hollance
from .mapping import map_to_state_dict
from .source import ConversionError, PathLike
from .tflite import read_tflite

#: shipped model configs, picked by :func:`default_model_cfg`
_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "_base_" / "models"


def file_md5(path: PathLike) -> str:
    """MD5 of a file, recorded in converted checkpoints so their source can be verified."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_tflite(path: PathLike, model_cfg: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """MediaPipe BlazeFace ``.tflite`` -> blazekit state dict (``backbone.*``, ``head.*``)."""
    return map_to_state_dict(read_tflite(path), model_cfg, str(path))


def convert_hollance(path: PathLike, model_cfg: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """hollance ``blazeface.pth`` / ``blazefaceback.pth`` -> blazekit state dict."""
    return map_to_state_dict(read_hollance(path), model_cfg, str(path))


#: tflite input size -> model variant (``configs/_base_/models/blazeface_{variant}.yml``)
_VARIANT_BY_INPUT = {(128, 128): "front", (256, 256): "back", (192, 192): "full_range"}


def guess_variant(path: PathLike) -> str:
    """``"front"``, ``"back"`` or ``"full_range"`` from the file's content (input size / layer names), not its name."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        hw = read_tflite(path).input_hw
        if hw in _VARIANT_BY_INPUT:
            return _VARIANT_BY_INPUT[hw]
        raise ConversionError(f"{path}: input size {hw} is none of the BlazeFace models (front 128, full range 192, "
                              "back 256); pass a model config explicitly (--config)")
    if suffix in (".pth", ".pt"):
        return "back" if any(k.startswith("final.") for k in load_state_dict(path)) else "front"
    raise ConversionError(f"{path}: unknown weight format {suffix!r}; expected .tflite (MediaPipe) or .pth (hollance)")


def default_model_cfg(variant: str) -> Dict[str, Any]:
    """The ``model`` section of ``configs/_base_/models/blazeface_{variant}.yml``."""
    from .. import config

    path = _CONFIG_DIR / f"blazeface_{variant}.yml"
    if not path.is_file():
        raise ConversionError(f"default model config {path} not found; pass a config with a 'model' section")
    return dict(config.load(path)["model"])


def convert_checkpoint(src: PathLike, model_cfg: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Convert ``src`` (format by suffix) to ``{"state_dict", "model_cfg", "meta"}`` (save_checkpoint layout)."""
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"weights file {src} not found")
    suffix = src.suffix.lower()
    if suffix not in (".tflite", ".pth"):
        raise ConversionError(f"{src}: unknown weight format {suffix!r}; "
                              "expected .tflite (MediaPipe) or .pth (hollance)")
    if model_cfg is None:
        model_cfg = default_model_cfg(guess_variant(src))
    model_cfg = copy.deepcopy(dict(model_cfg))
    model_cfg.pop("init", None)  # a checkpoint does not point at weights
    fmt = "tflite" if suffix == ".tflite" else "hollance"
    state_dict = (convert_tflite if fmt == "tflite" else convert_hollance)(src, model_cfg)
    meta = {"source": src.name, "md5": file_md5(src), "format": fmt, "converter": "blazekit.convert"}
    return {"state_dict": state_dict, "model_cfg": model_cfg, "meta": meta}


def save_converted(src: PathLike, out: PathLike, model_cfg: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Convert ``src`` and ``torch.save`` the checkpoint to ``out`` (pruned weights packed losslessly, see
    :func:`blazekit.checkpoint.pack_sparse`); returns the checkpoint (dense)."""
    from ..checkpoint import pack_sparse

    ckpt = convert_checkpoint(src, model_cfg)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(pack_sparse(ckpt), out)
    return ckpt
