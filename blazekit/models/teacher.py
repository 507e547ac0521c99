"""Self-distillation in the detector's loss: what a frozen starting model (the teacher) says where the labels are silent.

The teacher itself (a frozen copy of the starting weights run on each batch) is the engine's
(:class:`blazekit.engine.distill.KeypointTeacher`); the detector gets only its outputs, :class:`TeacherOutputs`, and
:meth:`BlazeFace.compute_loss <blazekit.models.detector.BlazeFace.compute_loss>` hands them to the functions here at
two points: :func:`teach_targets` after matching (the teacher's positives, ignored anchors and face keypoints) and
:func:`teach_anchor_keypoints` after encoding (``targets="anchor"``); :func:`score_distillation` is the extra loss
term. Nothing here knows the detector: its ``decode`` is passed in.
"""
from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .boxes import box_iou
from .matcher import IGNORED, NEGATIVE

Size = Tuple[int, int]
#: the detector's ``decode(regressors, logits, size)`` -> (boxes [B, A, 4], keypoints [B, A, K, 2], scores [B, A])
Decode = Callable[[Tensor, Tensor, Size], Tuple[Tensor, Tensor, Tensor]]


class TeacherOutputs(NamedTuple):
    """A frozen starting model's raw outputs on the training batch, with the settings of what they teach.

    ``targets="face"``: each face without keypoint labels gets the keypoints the teacher itself would report for
    it: the score-weighted blend of its anchors that score >= ``min_score`` with a decoded box of IoU >= ``min_iou``
    with the face (MediaPipe's weighted NMS in miniature). They are then encoded for every anchor matched to the
    face like real labels, so all of a face's anchors agree; faces the teacher does not find get no keypoint term.
    ``targets="anchor"``: each matched anchor copies the teacher's raw keypoint outputs at that anchor, also where
    the teacher's anchor does not see the face (kept for comparison; see RESULTS.md).

    ``ignore_score``: anchors the teacher scores at least this high are ignored instead of being negatives. Box
    sets leave faces unlabelled (FDDB skips most small background faces); hard negative mining would otherwise
    teach the model to miss exactly the faces the starting model finds. ``score_weight``: every anchor the
    matcher calls background also learns the teacher's face probability (``loss_score``, a KL term; learning
    without forgetting), so what the labels do not cover stays as the starting model had it.
    ``positive_iou``: the anchors where the teacher finds a labelled face (score >= ``min_score``, decoded box IoU
    >= ``positive_iou``) are that face's positives too (``positive_mode="add"``), or instead of the matcher's
    (``"replace"``, the matcher's others are ignored; faces the teacher misses keep the matcher's). A peaky
    model (MediaPipe full range fires one or two anchors per face) otherwise has to re-learn which anchors
    answer for a face, and forgets what its data does not show.
    """

    regressors: Tensor                  # [B, A, 4+2K]
    logits: Tensor                      # [B, A, 1]
    weight: float = 1.0                 # multiplies the taught keypoints' loss
    targets: str = "face"
    min_score: float = 0.5
    min_iou: float = 0.4
    ignore_score: Optional[float] = None
    score_weight: float = 0.0           # > 0: anchors the labels call background learn the teacher's scores (LwF)
    positive_iou: Optional[float] = None
    positive_mode: str = "add"


class TaughtTargets(NamedTuple):
    """The matched targets after :func:`teach_targets`."""

    matches: Tensor           # [B, A] with the teacher's positives and ignored anchors
    keypoints: Tensor         # [B, N, K, 2] with the taught keypoints of faces without keypoint labels
    keypoint_weights: Tensor  # [B, N, K] 1 labelled, ``weight`` taught, 0 neither
    background: Tensor        # [B, A] what the labels (and the teacher's positives) call background: the score term's


def teach_targets(teacher: TeacherOutputs, matches: Tensor, boxes: Tensor, ignore: List[Tensor], keypoints: Tensor,
                  keypoint_weights: Tensor, decode: Decode, size: Size) -> TaughtTargets:
    """The matcher's ``matches`` [B, A] and the padded, normalised faces (``boxes`` [B, N, 4], per image ``ignore``
    flags, ``keypoints`` [B, N, K, 2] and their weights [B, N, K], 0 = unlabelled) as the teacher changes them:
    its positives (``positive_iou``), its face keypoints (``targets="face"``) and its ignored anchors
    (``ignore_score``), in that order."""
    face_mode = teacher.targets == "face" and keypoints.shape[2] > 0
    background = matches == NEGATIVE  # what the labels call background, before the teacher's ignores
    if not (face_mode or teacher.ignore_score is not None or teacher.positive_iou is not None):
        return TaughtTargets(matches, keypoints, keypoint_weights, background)
    t_boxes, t_kpts, t_score = teacher_detections(teacher, decode, size, boxes.dtype)
    if face_mode or teacher.positive_iou is not None:
        t_iou = box_iou(boxes, t_boxes)  # [B, N, A] labelled faces vs the teacher's boxes, used by both
    if teacher.positive_iou is not None:
        matches = teacher_positives(teacher, matches, ignore, t_iou, t_score)
        background = background & (matches < 0)
    if face_mode:
        keypoints, keypoint_weights = taught_face_keypoints(teacher, keypoints, keypoint_weights, t_iou, t_kpts,
                                                            t_score)
    if teacher.ignore_score is not None:
        matches = torch.where(background & (t_score >= teacher.ignore_score), torch.full_like(matches, IGNORED),
                              matches)
    return TaughtTargets(matches, keypoints, keypoint_weights, background)


def teach_anchor_keypoints(teacher: TeacherOutputs, matches: Tensor, encoded: Tensor,
                           weights: Tensor) -> Tuple[Tensor, Tensor]:
    """``targets="anchor"``: the encoded targets [B, A, 4+2K] and keypoint weights [B, A, K] with each matched
    anchor's unlabelled keypoints copied from the teacher's raw outputs at that anchor (weight ``weight``);
    unchanged for ``targets="face"`` (taught before encoding) or a model without keypoints."""
    if teacher.targets == "face" or weights.shape[-1] == 0:
        return encoded, weights
    learn = (matches >= 0)[..., None] & (weights == 0)  # [B, A, K]: matched anchors, unlabelled keypoints
    taught = teacher.regressors.detach()[..., 4:].reshape(*learn.shape, 2).to(encoded.dtype)
    kp = torch.where(learn[..., None], taught, encoded[..., 4:].reshape(*learn.shape, 2))
    encoded = torch.cat([encoded[..., :4], kp.flatten(-2)], dim=-1)
    return encoded, torch.where(learn, weights.new_tensor(float(teacher.weight)), weights)


def teacher_detections(teacher: TeacherOutputs, decode: Decode, size: Size,
                       dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
    """The teacher's boxes [B, A, 4] and keypoints [B, A, K, 2], normalised like the targets, and scores
    [B, A] as the detector's post-processor reports them (``decode``: one scoring path for training and
    inference), in the targets' ``dtype`` (under autocast the teacher's outputs may be half precision)."""
    h, w = size
    boxes, kpts, score = decode(teacher.regressors.detach().to(dtype), teacher.logits.detach().to(dtype), size)
    norm = boxes.new_tensor([w, h])
    return boxes / norm.repeat(2), kpts / norm, score


def teacher_positives(teacher: TeacherOutputs, matches: Tensor, ignore: List[Tensor], iou: Tensor,
                      t_score: Tensor) -> Tensor:
    """``matches`` [B, A] with the anchors where the teacher finds a labelled face made its positives (see
    :class:`TeacherOutputs`); an anchor that fires for several faces goes to the one its box overlaps most. With
    ``add`` the matcher's positives keep their faces; with ``replace`` the teacher's assignment wins.
    ``iou`` [B, N, A]: the padded faces against the teacher's boxes (padding rows are all-zero boxes, IoU 0,
    so only ignored faces need masking)."""
    valid = torch.ones(iou.shape[:2], dtype=torch.bool, device=iou.device)  # [B, N] not ignored
    for i, ign in enumerate(ignore):
        valid[i, : len(ign)] = ~ign
    fire = (iou >= teacher.positive_iou) & (t_score[:, None, :] >= teacher.min_score) & valid[..., None]
    best, face = torch.where(fire, iou, torch.full_like(iou, -1.0)).max(1)  # [B, A]
    taught = best >= 0
    if teacher.positive_mode == "replace":
        found = fire.any(-1)  # [B, N] faces the teacher finds
        owner_found = torch.gather(found, 1, matches.clamp_min(0)) & (matches >= 0)
        matches = torch.where(owner_found & ~taught, torch.full_like(matches, IGNORED), matches)
    take = taught if teacher.positive_mode == "replace" else taught & (matches < 0)
    return torch.where(take, face, matches)


def taught_face_keypoints(teacher: TeacherOutputs, keypoints: Tensor, weights: Tensor, iou: Tensor, t_kpts: Tensor,
                          score: Tensor) -> Tuple[Tensor, Tensor]:
    """Fill the unlabelled keypoints (weight 0) of faces the teacher finds with its blended keypoints (normalised),
    and give them the weight ``teacher.weight``; returns (keypoints [B, N, K, 2], weights [B, N, K]).
    ``iou`` [B, N, A] is the faces' IoU with the teacher's decoded boxes, ``t_kpts`` [B, A, K, 2] and
    ``score`` [B, A] its decoded keypoints and scores."""
    blend = torch.where((iou >= teacher.min_iou) & (score[:, None, :] >= teacher.min_score), score[:, None, :],
                        torch.zeros_like(iou))
    total = blend.sum(-1)  # [B, N]
    blended = torch.einsum("bna,bakc->bnkc", blend, t_kpts) / total.clamp_min(1e-12)[..., None, None]
    learn = (total > 0)[..., None] & (weights == 0)  # [B, N, K]
    kp = torch.where(learn[..., None], blended, keypoints)
    return kp, torch.where(learn, weights.new_tensor(float(teacher.weight)), weights)


def score_distillation(logits: Tensor, teacher_logits: Tensor, matches: Tensor, background: Tensor) -> Tensor:
    """Binary KL divergence from the teacher's face probability to the model's on the anchors the labels call
    background (``background``, the matcher's negatives, also those then ignored for the teacher), summed
    and divided by the positives like the other terms: away from labelled faces (background, and faces a
    box set leaves unlabelled) the model keeps the starting model's scores. Near a labelled face (positives
    and the matcher's ignore band) the labels decide: teacher scores there would keep the teacher's own
    peaks, whose boxes then blend into the face's box."""
    s = logits.reshape(matches.shape)
    t = teacher_logits.detach().reshape(matches.shape).to(s.dtype).sigmoid()
    entropy = F.binary_cross_entropy(t, t, reduction="none")  # the BCE's minimum: KL = BCE - entropy >= 0
    kl = F.binary_cross_entropy_with_logits(s, t, reduction="none") - entropy
    return torch.where(background, kl, torch.zeros_like(kl)).sum() / (matches >= 0).sum().clamp_min(1).to(s.dtype)


__all__ = ["TeacherOutputs", "TaughtTargets", "teach_targets", "teach_anchor_keypoints", "teacher_detections",
           "teacher_positives", "taught_face_keypoints", "score_distillation"]
