"""Config -> detector: registry look-ups, head sizing and the one weights loader.

The one place that knows both the config schema and :class:`~blazekit.models.detector.BlazeFace`'s parts. The
head's sizes are derived here (``in_channels`` from the backbone or neck, ``num_anchors`` from the anchor
generator) so they can never disagree with the rest of the config. Importing this module registers the
``BlazeFace`` entry of ``DETECTORS``; the parts' registries import their own modules on first lookup.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .. import config as config_lib, options
from ..checkpoint import (CheckpointError, architecture_diff, compare_weights, load_checkpoint, load_model_weights,
                          misfit_lines)
from ..registry import (ANCHOR_GENERATORS, BACKBONES, BOX_CODERS, DETECTORS, HEADS, LOSSES, MATCHERS, NECKS,
                        POSTPROCESSORS)
from .detector import DEFAULT_PARTS, DEFAULT_PREPROCESS, BlazeFace, as_size, check_levels

PathLike = Union[str, os.PathLike]


@DETECTORS.register("BlazeFace")
def blazeface_from_config(backbone: Mapping[str, Any], head: Mapping[str, Any], anchors: Mapping[str, Any],
                          coder: Optional[Mapping[str, Any]] = None, matcher: Optional[Mapping[str, Any]] = None,
                          loss: Optional[Mapping[str, Any]] = None, postprocess: Optional[Mapping[str, Any]] = None,
                          input_size: Union[int, Sequence[int]] = (128, 128), num_keypoints: int = 6,
                          preprocess: Optional[Mapping[str, Any]] = None, neck: Optional[Mapping[str, Any]] = None,
                          init: Optional[str] = None) -> BlazeFace:
    """The ``model`` section's keys -> a :class:`BlazeFace` with ``cfg`` set (``init`` is recorded, not loaded:
    :func:`build_detector` loads it). A part left out is the detector's default (``DEFAULT_PARTS``)."""
    coder, matcher, loss, postprocess = (given or {"type": DEFAULT_PARTS[name].__name__} for name, given in (
        ("coder", coder), ("matcher", matcher), ("loss", loss), ("postprocess", postprocess)))
    preprocess = {**DEFAULT_PREPROCESS, **(preprocess or {})}
    size = as_size(input_size, "model.input_size")
    k = int(num_keypoints)
    cfg: Dict[str, Any] = copy.deepcopy({
        "type": "BlazeFace", "input_size": list(size), "num_keypoints": k, "preprocess": dict(preprocess),
        "backbone": dict(backbone), **({"neck": dict(neck)} if neck else {}), "head": dict(head),
        "anchors": dict(anchors), "coder": dict(coder), "matcher": dict(matcher), "loss": dict(loss),
        "postprocess": dict(postprocess), "init": init})

    body = BACKBONES.build(backbone, where="model.backbone")
    neck_module = (NECKS.build(neck, where="model.neck", in_channels=list(body.out_channels)) if neck else None)
    features = neck_module if neck_module is not None else body
    generator = ANCHOR_GENERATORS.build(anchors, where="model.anchors")
    check_levels(features, generator, size)
    head_module = HEADS.build(head, where="model.head", in_channels=list(features.out_channels),
                              num_anchors=list(generator.num_anchors_per_level(size)), num_keypoints=k)
    return BlazeFace(body, head_module, generator,
                     coder=BOX_CODERS.build(coder, where="model.coder"),
                     matcher=MATCHERS.build(matcher, where="model.matcher"),
                     loss=LOSSES.build(loss, where="model.loss"),
                     postprocess=POSTPROCESSORS.build(postprocess, where="model.postprocess"),
                     neck=neck_module, input_size=size, num_keypoints=k, preprocess=preprocess, cfg=cfg)


def model_section(cfg: Union[PathLike, Mapping[str, Any]]) -> Dict[str, Any]:
    """A config file, full config dict or ``model`` section -> the ``model`` section (a copy). A file is validated
    by :func:`blazekit.config.load`, a full dict here; a section is trusted (the tools pass the one they loaded)."""
    if isinstance(cfg, (str, os.PathLike)):
        return dict(config_lib.load(cfg, require=("model",))["model"])
    if not isinstance(cfg, Mapping):
        raise TypeError(f"build_detector: expected a config path or dict, got {type(cfg).__name__}")
    if "backbone" in cfg or "type" in cfg:
        return dict(cfg)
    options.validate(cfg, require=("model",))  # a missing or malformed model: one ConfigError naming the file
    return dict(cfg["model"])


#: what a strict refusal suggests, by the setting that named the weights
LOOSE_HINTS = {"model.init": "Use the matching config, or set train.init_strict: false to load only the tensors "
                             "that fit."}


def load_weights(model: nn.Module, weights: PathLike, strict: bool = True,
                 setting: str = "weights") -> Dict[str, List[Any]]:
    """Load a named weight or checkpoint file into ``model``: the one weights loader (``--weights``, ``model.init``,
    ``train.distill.teacher``; ``setting`` names where the weights were given, in messages).

    ``strict`` (default): the checkpoint's architecture (its ``model_cfg`` against ``model.cfg``; a detector
    assembled by hand has none) and every tensor must fit, else one :class:`CheckpointError` lists the architecture
    differences and the missing, unexpected and mis-shaped tensors, and nothing is loaded. ``strict=False``
    (``train.init_strict: false``) loads the tensors that fit (a backbone into a model with a new head). Weights
    whose outputs are NaN/Inf are refused. Returns the report of what loaded and what was left out
    (:func:`~blazekit.checkpoint.load_model_weights`; :func:`~blazekit.checkpoint.load_summary` says it in one
    line, which the trainer logs).
    """
    from ..weights import resolve_weights

    try:
        path = resolve_weights(weights)
    except FileNotFoundError as exc:  # its message already says "weights ..."
        if setting == "weights":
            raise
        raise FileNotFoundError(f"{setting}: {exc}") from None
    source = f"{setting} {os.fspath(weights)!r} ({path})"
    ckpt = load_checkpoint(path)
    model_cfg = getattr(model, "cfg", None)
    arch = architecture_diff(ckpt.get("model_cfg"), model_cfg) if model_cfg is not None else []
    report = compare_weights(model, ckpt, source=source)
    misfit = [f"architecture {a}" for a in arch] + misfit_lines(report)
    if strict and misfit:
        hint = LOOSE_HINTS.get(setting, "Use the config the checkpoint was trained with (its model_cfg is stored "
                                        "inside).")
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(misfit) + f". {hint}")
    load_model_weights(model, ckpt, strict=False, source=source)
    layer = model.nonfinite_layer() if hasattr(model, "nonfinite_layer") else None
    if layer is not None:  # finite weights that overflow: every detection would be NaN
        big = max((float(v.abs().max()) for v in model.state_dict().values() if v.is_floating_point() and v.numel()),
                  default=0.0)
        raise CheckpointError(f"{source}: the network's outputs are NaN/Inf (first at {layer}; weights up to "
                              f"{big:.3g}): the training that wrote it diverged. Use an earlier checkpoint, or "
                              "retrain with a lower train.optimizer.lr or train.clip_grad_norm")
    return report


def shipped_weights_for(model_cfg: Mapping[str, Any]) -> List[str]:
    """Names of the shipped weights whose architecture fits ``model_cfg`` (a ``model`` section)."""
    from ..weights import NAMED_WEIGHTS

    return [name for name, path in NAMED_WEIGHTS.items()
            if path.is_file() and not architecture_diff(load_checkpoint(path).get("model_cfg"), model_cfg)]


def inference_weights(cfg: Mapping[str, Any], weights: Optional[PathLike] = None) -> PathLike:
    """The weights eval / predict / export run: ``weights`` (``--weights``), else the config's ``model.init``.

    With neither, the detector would keep its random initialisation and find no faces while every tool exits 0, so
    that is a :class:`~blazekit.config.ConfigError` naming the ``--weights`` to give instead.
    """
    model_cfg = cfg["model"] if isinstance(cfg.get("model"), Mapping) else model_section(cfg)  # reads, no check
    if weights or model_cfg.get("init"):
        return weights or model_cfg["init"]
    fits = shipped_weights_for(model_cfg)
    stem = os.path.splitext(os.path.basename(cfg.get("_source_") or "run"))[0]
    ckpt = f"a checkpoint you trained (e.g. --weights work_dirs/{stem}/best.pt)"
    give = (f"--weights {' or '.join(fits)} (shipped, for this architecture) or {ckpt}" if fits else
            f"{ckpt}; the shipped weights are other architectures")
    src = cfg.get("_source_")
    raise config_lib.ConfigError(f"{src + ': ' if src else ''}no weights to run: neither --weights nor model.init is "
                                 f"set (an untrained detector finds no faces); give {give}")


def build_detector(config_or_path: Union[PathLike, Mapping[str, Any]], weights: Optional[PathLike] = None,
                   device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Build the detector of a config file, full config dict or ``model`` section.

    ``weights`` (a named weight or a checkpoint path) is loaded and the model put in eval mode;
    otherwise ``model.init`` (if set) is loaded and the model stays in train mode (fine-tuning).
    """
    model_cfg = model_section(config_or_path)
    model_cfg.setdefault("type", "BlazeFace")
    model = DETECTORS.build(model_cfg, where="model")
    source = weights if weights is not None else model_cfg.get("init")
    if source:
        load_weights(model, source)
    if weights is not None:
        model.eval()
    return model.to(device)


__all__ = ["blazeface_from_config", "build_detector", "inference_weights", "load_weights", "model_section",
           "shipped_weights_for", "CheckpointError"]
