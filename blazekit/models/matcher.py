"""Anchor <-> ground-truth assignment by IoU, batched over images on the priors' device.

Matching uses the *priors* (real anchor scales): MediaPipe's fixed-size anchors (w = h = 1) have no
meaningful IoU with a face. Result codes per anchor: ``>= 0`` index of the matched face, ``-1``
negative (background), ``-2`` ignored (neither positive nor negative in the loss).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..registry import MATCHERS
from .boxes import batched_box_iou, cxcywh_to_xyxy

NEGATIVE = -1
IGNORED = -2


def pad_boxes(gt_boxes: Sequence[Tensor], device: torch.device, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """List of [N_i, 4] -> padded [B, Nmax, 4] and a validity mask [B, Nmax]."""
    nmax = max([len(b) for b in gt_boxes] + [1])
    out = torch.zeros(len(gt_boxes), nmax, 4, device=device, dtype=dtype)
    valid = torch.zeros(len(gt_boxes), nmax, dtype=torch.bool, device=device)
    for i, b in enumerate(gt_boxes):
        b = torch.as_tensor(b, dtype=dtype, device=device).reshape(-1, 4)
        out[i, : len(b)] = b
        valid[i, : len(b)] = True
    return out, valid


@MATCHERS.register()
class IoUMatcher:
    """Best gt per anchor by IoU; ``>= pos_iou`` positive, ``< neg_iou`` negative, between ignored.

    ``force_best``: each face's best anchor is made positive even below ``pos_iou`` (so small or
    odd-shaped faces always train something). If two faces share a best anchor it goes to the face
    with the higher IoU there (lower index on ties), which is deterministic.
    Faces flagged in ``gt_ignore`` are never positives; anchors overlapping them by ``>= neg_iou``
    (and matched to no real face) are ignored rather than punished as background.
    """

    def __init__(self, pos_iou: float = 0.35, neg_iou: float = 0.35, force_best: bool = True) -> None:
        if not 0.0 <= neg_iou <= pos_iou <= 1.0:
            raise ValueError(f"IoUMatcher: need 0 <= neg_iou <= pos_iou <= 1, got neg_iou={neg_iou}, pos_iou={pos_iou}")
        self.pos_iou = float(pos_iou)
        self.neg_iou = float(neg_iou)
        self.force_best = bool(force_best)

    def __repr__(self) -> str:
        return f"IoUMatcher(pos_iou={self.pos_iou}, neg_iou={self.neg_iou}, force_best={self.force_best})"

    def __call__(self, priors: Tensor, gt_boxes: Sequence[Tensor],
                 gt_ignore: Optional[Sequence[Optional[Tensor]]] = None) -> Tensor:
        """priors [A, 4] cxcywh; gt_boxes: per image [N_i, 4] xyxy (same units) -> matches [B, A] long."""
        device, dtype = priors.device, priors.dtype
        boxes, valid = pad_boxes(gt_boxes, device, dtype)
        ignored = torch.zeros_like(valid)
        if gt_ignore is not None:
            for i, ign in enumerate(gt_ignore):
                if ign is not None and len(ign):
                    ign = torch.as_tensor(ign, dtype=torch.bool, device=device).reshape(-1)
                    if len(ign) != len(gt_boxes[i]):
                        raise ValueError(f"gt_ignore[{i}] has {len(ign)} flags for {len(gt_boxes[i])} boxes")
                    ignored[i, : len(ign)] = ign
        return self.match_padded(priors, boxes, valid & ~ignored, valid & ignored)

    def match_padded(self, priors: Tensor, boxes: Tensor, real: Tensor, ignored: Tensor) -> Tensor:
        """Padded form: boxes [B, N, 4], ``real`` / ``ignored`` masks [B, N] (padding is neither)."""
        iou = batched_box_iou(boxes, cxcywh_to_xyxy(priors))  # [B, N, A]
        iou_real = torch.where(real[..., None], iou, iou.new_tensor(-1.0))
        best_iou, best_gt = iou_real.max(dim=1)  # [B, A]
        matches = torch.full_like(best_gt, NEGATIVE)
        matches[best_iou >= self.neg_iou] = IGNORED
        matches = torch.where(best_iou >= self.pos_iou, best_gt, matches)
        if self.force_best and iou.shape[1] > 0:
            # one-hot of each real face's best anchor; faces with IoU 0 everywhere (degenerate) are skipped
            face_best_iou, face_best_anchor = iou_real.max(dim=2)  # [B, N]
            is_best = torch.zeros_like(iou_real, dtype=torch.bool)
            is_best.scatter_(2, face_best_anchor[..., None], (real & (face_best_iou > 0))[..., None])
            contest = torch.where(is_best, iou_real, iou.new_tensor(-1.0))
            win_iou, win_gt = contest.max(dim=1)  # first index among equal IoUs
            matches = torch.where(win_iou > 0, win_gt, matches)
        if ignored.any():
            ign_iou = torch.where(ignored[..., None], iou, iou.new_tensor(-1.0)).amax(dim=1)
            matches[(matches == NEGATIVE) & (ign_iou >= self.neg_iou)] = IGNORED
        return matches


def prior_groups(priors: Tensor, decimals: int = 4) -> Tensor:
    """[A] group id per prior: priors of one (w, h) shape share one, i.e. one scale of one pyramid level."""
    shapes = torch.round(priors[:, 2:] * 10 ** decimals)
    return torch.unique(shapes, dim=0, return_inverse=True)[1]


@MATCHERS.register()
class ATSSMatcher:
    """Adaptive training sample selection (Zhang et al., CVPR 2020), so small faces get several positives.

    For each face, the ``topk`` priors with the nearest centres are taken *per prior shape* (one scale of one
    level; the matcher only sees priors, and a shape is ATSS's "level" made finer). The IoU threshold is that
    face's own candidate IoU mean + standard deviation: a tiny face whose best IoU is 0.2 still gets the
    candidates that overlap it best, where a fixed 0.35 gives it none (or one, forced). Candidates above the
    threshold whose centre lies inside the face are positives; an anchor claimed by two faces goes to the
    higher IoU. Everything else is negative, except: ``neg_iou`` (optional) ignores non-positives overlapping
    a face by at least that much, anchors overlapping an ``ignore`` face by ``>= ignore_iou`` are ignored, and
    ``force_best`` makes a face without positives take its best candidate.
    """

    def __init__(self, topk: int = 9, force_best: bool = True, ignore_iou: float = 0.35,
                 neg_iou: Optional[float] = None) -> None:
        if int(topk) < 1:
            raise ValueError(f"ATSSMatcher: topk must be >= 1, got {topk}")
        if not 0.0 <= ignore_iou <= 1.0 or (neg_iou is not None and not 0.0 <= neg_iou <= 1.0):
            raise ValueError(f"ATSSMatcher: ignore_iou and neg_iou must be in [0, 1], got {ignore_iou}, {neg_iou}")
        self.topk, self.force_best = int(topk), bool(force_best)
        self.ignore_iou = float(ignore_iou)
        self.neg_iou = None if neg_iou is None else float(neg_iou)

    def __repr__(self) -> str:
        return (f"ATSSMatcher(topk={self.topk}, force_best={self.force_best}, ignore_iou={self.ignore_iou}, "
                f"neg_iou={self.neg_iou})")

    def __call__(self, priors: Tensor, gt_boxes: Sequence[Tensor],
                 gt_ignore: Optional[Sequence[Optional[Tensor]]] = None) -> Tensor:
        """priors [A, 4] cxcywh; gt_boxes: per image [N_i, 4] xyxy (same units) -> matches [B, A] long."""
        return IoUMatcher.__call__(self, priors, gt_boxes, gt_ignore)  # same padding / ignore-flag checks

    def match_padded(self, priors: Tensor, boxes: Tensor, real: Tensor, ignored: Tensor) -> Tensor:
        """Padded form: boxes [B, N, 4], ``real`` / ``ignored`` masks [B, N] (padding is neither)."""
        bsz, n = real.shape
        iou = batched_box_iou(boxes, cxcywh_to_xyxy(priors))  # [B, N, A]
        matches = torch.full((bsz, priors.shape[0]), NEGATIVE, dtype=torch.long, device=priors.device)
        if n == 0 or not real.any():
            return self._ignore(matches, iou, ignored)
        centres = (boxes[..., :2] + boxes[..., 2:]) / 2  # [B, N, 2]
        dist = (centres[..., None, :] - priors[:, :2]).square().sum(-1)  # [B, N, A] squared: same order
        groups = prior_groups(priors)
        order = torch.argsort(groups, stable=True)  # anchors grouped by shape: each group is one slice
        dist = dist[..., order]
        picked, start = [], 0
        for count in torch.bincount(groups).tolist():
            near = dist[..., start:start + count].topk(min(self.topk, count), dim=-1, largest=False).indices
            picked.append(order[near + start])
            start += count
        cand = torch.cat(picked, dim=-1)  # [B, N, C] candidate anchor indices (groups are disjoint)
        cand_iou = iou.gather(2, cand)
        mean = cand_iou.mean(-1, keepdim=True)
        std = cand_iou.std(-1, keepdim=True) if cand.shape[-1] > 1 else torch.zeros_like(mean)
        c = priors[cand]  # [B, N, C, 4]
        b = boxes[..., None, :]
        inside = (c[..., 0] > b[..., 0]) & (c[..., 0] < b[..., 2]) & (c[..., 1] > b[..., 1]) & (c[..., 1] < b[..., 3])
        chosen = (cand_iou >= mean + std) & inside & real[..., None]
        if self.force_best:
            best = cand_iou.argmax(-1, keepdim=True)
            lonely = real & ~chosen.any(-1) & (cand_iou.gather(2, best).squeeze(-1) > 0)
            chosen.scatter_(2, best, chosen.gather(2, best) | lonely[..., None])
        positive = torch.zeros_like(iou, dtype=torch.bool).scatter_(2, cand, chosen)  # [B, N, A]
        pos_iou = torch.where(positive, iou, iou.new_tensor(-1.0))
        win_iou, win_gt = pos_iou.max(dim=1)  # [B, A]
        matches = torch.where(positive.any(1), win_gt, matches)
        if self.neg_iou is not None:
            near = torch.where(real[..., None], iou, iou.new_tensor(-1.0)).amax(dim=1) >= self.neg_iou
            matches[(matches == NEGATIVE) & near] = IGNORED
        return self._ignore(matches, iou, ignored)

    def _ignore(self, matches: Tensor, iou: Tensor, ignored: Tensor) -> Tensor:
        if ignored.any():
            ign_iou = torch.where(ignored[..., None], iou, iou.new_tensor(-1.0)).amax(dim=1)
            matches[(matches == NEGATIVE) & (ign_iou >= self.ignore_iou)] = IGNORED
        return matches


__all__ = ["ATSSMatcher", "IGNORED", "IoUMatcher", "NEGATIVE", "pad_boxes", "prior_groups"]
