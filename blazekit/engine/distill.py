"""Keypoint self-distillation (``train.distill``): box-only data must not erase the keypoints.

Most face sets label boxes only. Their faces give the keypoint loss nothing, while every step moves the shared
features, so fine-tuning silently wrecks the 6 keypoints. A frozen copy of the starting weights runs on the same
(augmented) batch; by default (``targets: face``) each such face gets the keypoints the teacher reports for it,
used like real labels. The teacher is :class:`KeypointTeacher` here; what the detector's loss does with its outputs
(:class:`~blazekit.models.teacher.TeacherOutputs`) is :mod:`blazekit.models.teacher`. Cost: one forward pass
without gradients per step.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from .. import options
from ..config import ConfigError
from ..models.teacher import TeacherOutputs

class KeypointTeacher:
    """Gives the detector's loss the frozen starting model's raw outputs for a batch."""

    def __init__(self, model: nn.Module, **settings: Any) -> None:
        """``settings``: the :class:`~blazekit.models.teacher.TeacherOutputs` fields after ``logits`` (``weight``,
        ``targets``, ``min_score``, ...), as checked by ``options.DISTILL``."""
        self.model = model.eval().requires_grad_(False)
        self.settings = {k: v for k, v in settings.items() if k in TeacherOutputs._fields}

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> Dict[str, Any]:
        """Keyword arguments for ``detector(images, targets, **kwargs)``."""
        regressors, logits = self.model.raw(images)
        return {"teacher": TeacherOutputs(regressors, logits, **self.settings)}


def distill_options(spec: Any) -> Optional[Dict[str, Any]]:
    """``train.distill`` (null/false, true or a mapping, checked by :mod:`blazekit.options`) -> the options."""
    if not spec:
        return None
    return {**options.defaults(options.DISTILL), **(spec if isinstance(spec, Mapping) else {})}


def build_teacher(model: nn.Module, spec: Any, init: Optional[str], device: torch.device,
                  log: Any) -> Optional[KeypointTeacher]:
    """The teacher for ``train.distill``: a frozen copy of ``model`` as loaded from ``model.init`` (call it before
    any training or resuming), or of the weights named by ``train.distill.teacher``."""
    opts = distill_options(spec)
    if opts is None:
        return None
    teacher = copy.deepcopy(model)
    if opts["teacher"] is not None:
        from ..models.build import load_weights

        load_weights(teacher, opts["teacher"], setting="train.distill.teacher")
    elif not init:
        raise ConfigError("train.distill: no teacher; set model.init (the weights fine-tuning starts from) or "
                          "train.distill.teacher")
    source = opts["teacher"] or f"model.init {init}"
    log.info("keypoint distillation: faces without keypoint labels learn them from %s (weight %g, %s targets)",
             source, float(opts["weight"]), opts["targets"])
    if opts["ignore_score"] is not None:
        log.info("teacher ignore: anchors the teacher scores >= %g are never negatives", float(opts["ignore_score"]))
    if opts["score_weight"]:
        log.info("score distillation: anchors the matcher calls background learn the teacher's scores (weight %g)",
                 float(opts["score_weight"]))
    if opts["positive_iou"] is not None:
        log.info("teacher positives: anchors the teacher scores >= %g with a box of IoU >= %g with a labelled face "
                 "are its positives (%s)", float(opts["min_score"]), float(opts["positive_iou"]), opts["positive_mode"])
    return KeypointTeacher(teacher.to(device), **opts)
