"""MultiBox loss: BCE on positives + hard-mined negatives, Smooth L1 on boxes and visible keypoints
(``FocalMultiBoxLoss``: a focal classification term over all anchors instead of hard negative mining).

The detector does matching and encoding; this module only scores already-aligned tensors, so a
custom matcher or coder needs no change here.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import LOSSES


def hard_negative_mask(cls_loss: Tensor, positive: Tensor, negative: Tensor, neg_pos_ratio: float,
                       min_negatives: int) -> Tensor:
    """[B, A] mask of the highest-loss negatives: ``neg_pos_ratio`` x positives per image.

    An image without positives still contributes ``min_negatives`` (so background-only batches
    keep teaching the classifier what is *not* a face). Capped at the negatives available.
    """
    num_pos = positive.sum(dim=1, keepdim=True)
    num_neg = torch.where(num_pos > 0, (num_pos * neg_pos_ratio).floor().long(),
                          torch.full_like(num_pos, int(min_negatives)))
    num_neg = torch.minimum(num_neg, negative.sum(dim=1, keepdim=True))
    ranked = torch.where(negative, cls_loss.detach(), cls_loss.new_tensor(-float("inf")))
    order = ranked.argsort(dim=1, descending=True)
    rank = order.argsort(dim=1)
    return (rank < num_neg) & negative


@LOSSES.register()
class MultiBoxLoss(nn.Module):
    """SSD MultiBox loss for one foreground class (face) with optional keypoints.

    All terms are sums divided by the number of positives in the batch (clamped >= 1); returned terms
    are already multiplied by their weights, so ``loss == loss_cls + loss_box + loss_kpt``.
    """

    def __init__(self, neg_pos_ratio: float = 3.0, cls_weight: float = 1.0, box_weight: float = 1.0,
                 kpt_weight: float = 1.0, beta: float = 1.0, min_negatives: int = 16) -> None:
        super().__init__()
        if neg_pos_ratio < 0 or min_negatives < 0:
            raise ValueError(f"MultiBoxLoss: neg_pos_ratio and min_negatives must be >= 0, "
                             f"got {neg_pos_ratio}, {min_negatives}")
        self.neg_pos_ratio = float(neg_pos_ratio)
        self.cls_weight = float(cls_weight)
        self.box_weight = float(box_weight)
        self.kpt_weight = float(kpt_weight)
        self.beta = float(beta)
        self.min_negatives = int(min_negatives)

    def extra_repr(self) -> str:
        return (f"neg_pos_ratio={self.neg_pos_ratio}, cls_weight={self.cls_weight}, box_weight={self.box_weight}, "
                f"kpt_weight={self.kpt_weight}, beta={self.beta}, min_negatives={self.min_negatives}")

    def classification_loss(self, logits: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        """Summed BCE over the positives and the hard-mined negatives (ignored anchors never count)."""
        bce = F.binary_cross_entropy_with_logits(logits, positive.to(logits.dtype), reduction="none")
        hard_neg = hard_negative_mask(bce, positive, negative, self.neg_pos_ratio, self.min_negatives)
        return (bce * (positive | hard_neg)).sum()

    def forward(self, logits: Tensor, regressors: Tensor, matches: Tensor, targets: Tensor,
                keypoints_visible: Optional[Tensor] = None, scale: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """
        Args:
            logits: [B, A, 1] (or [B, A]) raw classification outputs.
            regressors: [B, A, 4+2K] raw head outputs.
            matches: [B, A] long from the matcher (>=0 positive, -1 negative, -2 ignored).
            targets: [B, A, 4+2K] encoded ground truth of each anchor's matched face (any value elsewhere).
            keypoints_visible: [B, A, K] bool, which target keypoints exist (None: all do), or float weights
                per keypoint (0 = no target; the detector weights keypoints distilled from a teacher this way).
            scale: divisor broadcastable to [B, A, 4+2K] (the coder's ``loss_scale``), None = 1.
        """
        logits = logits.reshape(matches.shape)
        positive = matches >= 0
        negative = matches == -1
        num_pos = positive.sum()
        denom = num_pos.clamp_min(1).to(logits.dtype)

        loss_cls = self.classification_loss(logits, positive, negative) / denom

        # non-matched anchors' targets are padding (possibly inf after a log); keep backward NaN-free
        targets = torch.nan_to_num(targets.detach(), nan=0.0, posinf=0.0, neginf=0.0)
        if scale is not None:
            regressors = regressors / scale
            targets = targets / scale
        diff = F.smooth_l1_loss(regressors, targets, reduction="none", beta=self.beta)  # [B, A, 4+2K]
        zero = diff.new_zeros(())
        loss_box = torch.where(positive[..., None], diff[..., :4], zero).sum() / denom
        k = (diff.shape[-1] - 4) // 2
        if k > 0:
            kdiff = diff[..., 4:].reshape(*diff.shape[:-1], k, 2).sum(-1)  # [B, A, K]
            mask = positive[..., None].expand_as(kdiff)
            weight = (keypoints_visible.reshape(mask.shape).to(kdiff.dtype) if keypoints_visible is not None
                      else torch.ones_like(kdiff))
            loss_kpt = torch.where(mask, kdiff * weight, zero).sum() / denom
        else:
            loss_kpt = diff.new_zeros(())
        terms = {"loss_cls": self.cls_weight * loss_cls, "loss_box": self.box_weight * loss_box,
                 "loss_kpt": self.kpt_weight * loss_kpt}
        return {"loss": terms["loss_cls"] + terms["loss_box"] + terms["loss_kpt"], **terms,
                "num_pos": num_pos.detach()}


def sigmoid_focal_loss(logits: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise focal loss (Lin et al. 2017): ``-a_t (1 - p_t)^gamma log(p_t)``; ``alpha < 0`` disables
    the class weighting (``a_t = 1``)."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss


@LOSSES.register()
class FocalMultiBoxLoss(MultiBoxLoss):
    """MultiBox loss with a sigmoid focal classification term over *all* positive and negative anchors.

    Instead of picking ``neg_pos_ratio`` hard negatives, every negative counts, down-weighted by how easy it
    already is (``gamma``); ``alpha`` weights positives (negatives get ``1 - alpha``). Like RetinaNet the sum
    is divided by the number of positives; box and keypoint terms are MultiBoxLoss's. Pair it with a head
    whose classification bias starts near ``-log((1 - 0.01) / 0.01)`` when training from scratch.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, cls_weight: float = 1.0, box_weight: float = 1.0,
                 kpt_weight: float = 1.0, beta: float = 1.0) -> None:
        super().__init__(cls_weight=cls_weight, box_weight=box_weight, kpt_weight=kpt_weight, beta=beta)
        if gamma < 0 or alpha > 1:
            raise ValueError(f"FocalMultiBoxLoss: need gamma >= 0 and alpha <= 1 (alpha < 0: no weighting), "
                             f"got alpha={alpha}, gamma={gamma}")
        self.alpha, self.gamma = float(alpha), float(gamma)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, gamma={self.gamma}, cls_weight={self.cls_weight}, box_weight={self.box_weight}, "
                f"kpt_weight={self.kpt_weight}, beta={self.beta}")

    def classification_loss(self, logits: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        focal = sigmoid_focal_loss(logits, positive.to(logits.dtype), self.alpha, self.gamma)
        return (focal * (positive | negative)).sum()


__all__ = ["FocalMultiBoxLoss", "MultiBoxLoss", "hard_negative_mask", "sigmoid_focal_loss"]
