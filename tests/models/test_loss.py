"""MultiBox loss: hard-negative mining counts, keypoint visibility mask, empty images, ignored anchors, weights;
focal loss."""
import math

import pytest
import torch
import torch.nn.functional as F

from blazekit.losses import FocalMultiBoxLoss, MultiBoxLoss, hard_negative_mask
from blazekit.matcher import IGNORED
from blazekit.registry import LOSSES

A, C = 40, 16


def _setup(num_pos=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, A, 1, generator=g)
    regs = torch.randn(1, A, C, generator=g)
    targets = torch.randn(1, A, C, generator=g)
    matches = torch.full((1, A), -1, dtype=torch.long)
    matches[0, :num_pos] = 0
    return logits, regs, targets, matches


def test_hard_negatives_are_three_times_positives_and_the_hardest():
    logits, regs, targets, matches = _setup(num_pos=2)
    bce = F.binary_cross_entropy_with_logits(logits[..., 0], (matches >= 0).float(), reduction="none")
    mask = hard_negative_mask(bce, matches >= 0, matches == -1, neg_pos_ratio=3, min_negatives=16)
    assert int(mask.sum()) == 6
    hardest = bce[0, 2:].topk(6).indices + 2
    assert set(mask[0].nonzero()[:, 0].tolist()) == set(hardest.tolist())
    out = MultiBoxLoss(neg_pos_ratio=3)(logits, regs, matches, targets)
    expected = (bce[0, :2].sum() + bce[0, hardest].sum()) / 2
    assert torch.allclose(out["loss_cls"], expected)
    assert int(out["num_pos"]) == 2


def test_box_loss_smooth_l1_over_positives_with_scale():
    logits, regs, targets, matches = _setup(num_pos=3)
    scale = torch.full((A, 1), 4.0)
    out = MultiBoxLoss(beta=1.0)(logits, regs, matches, targets, scale=scale)
    expected = F.smooth_l1_loss(regs[0, :3, :4] / 4, targets[0, :3, :4] / 4, reduction="sum") / 3
    assert torch.allclose(out["loss_box"], expected)
    expected_k = F.smooth_l1_loss(regs[0, :3, 4:] / 4, targets[0, :3, 4:] / 4, reduction="sum") / 3
    assert torch.allclose(out["loss_kpt"], expected_k)


def test_keypoint_mask_zeroes_invisible_points():
    logits, regs, targets, matches = _setup(num_pos=2)
    targets[..., 4:] = 1000.0  # huge keypoint errors...
    vis = torch.zeros(1, A, 6, dtype=torch.bool)
    out = MultiBoxLoss()(logits, regs, matches, targets, keypoints_visible=vis)
    assert out["loss_kpt"].item() == 0.0  # ...that do not count when invisible
    vis[0, 1, 2] = True  # nose of the second positive
    out = MultiBoxLoss()(logits, regs, matches, targets, keypoints_visible=vis)
    expected = F.smooth_l1_loss(regs[0, 1, 8:10], targets[0, 1, 8:10], reduction="sum") / 2
    assert torch.allclose(out["loss_kpt"], expected)
    # visibility on a negative anchor is irrelevant
    vis[0, 30] = True
    assert torch.allclose(MultiBoxLoss()(logits, regs, matches, targets, keypoints_visible=vis)["loss_kpt"], expected)


def test_empty_image_trains_min_negatives_only():
    logits, regs, targets, matches = _setup(num_pos=0)
    logits.requires_grad_(True)
    targets[:] = float("inf")  # padding targets must not leak into the loss
    out = MultiBoxLoss(min_negatives=16)(logits, regs, matches, targets)
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    assert out["loss_box"].item() == 0.0 and out["loss_kpt"].item() == 0.0 and int(out["num_pos"]) == 0
    bce = F.binary_cross_entropy_with_logits(logits[0, :, 0], torch.zeros(A), reduction="none")
    assert torch.allclose(out["loss_cls"], bce.topk(16).values.sum())
    out["loss"].backward()
    assert int((logits.grad != 0).sum()) == 16


def test_ignored_anchors_are_neither_positive_nor_negative():
    logits, regs, targets, matches = _setup(num_pos=2)
    base = MultiBoxLoss(neg_pos_ratio=100)(logits, regs, matches, targets)
    logits2 = logits.clone()
    logits2[0, 10] = 50.0  # would be the hardest negative by far
    matches2 = matches.clone()
    matches2[0, 10] = -2
    logits[0, 10] = 0.0
    matches[0, 10] = -2
    a = MultiBoxLoss(neg_pos_ratio=100)(logits, regs, matches, targets)
    b = MultiBoxLoss(neg_pos_ratio=100)(logits2, regs, matches2, targets)
    assert torch.allclose(a["loss"], b["loss"])
    assert a["loss"] < base["loss"] + 1e-6


def test_weights_and_total():
    logits, regs, targets, matches = _setup(num_pos=2)
    plain = MultiBoxLoss()(logits, regs, matches, targets)
    w = LOSSES.build({"type": "MultiBoxLoss", "cls_weight": 2.0, "box_weight": 0.5, "kpt_weight": 0.0})
    out = w(logits, regs, matches, targets)
    assert torch.allclose(out["loss_cls"], 2 * plain["loss_cls"])
    assert torch.allclose(out["loss_box"], 0.5 * plain["loss_box"])
    assert out["loss_kpt"].item() == 0.0
    assert torch.allclose(out["loss"], out["loss_cls"] + out["loss_box"] + out["loss_kpt"])
    assert set(out) == {"loss", "loss_cls", "loss_box", "loss_kpt", "num_pos"}


# ----------------------------------------------------------------------------------------- focal loss
def test_focal_loss_equals_hand_computed_value():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0]])
    matches = torch.tensor([[0, -1, IGNORED, -1]])  # one positive, two negatives, one ignored
    regs = torch.zeros(1, 4, 4)
    loss = FocalMultiBoxLoss(alpha=0.25, gamma=2.0)(logits, regs, matches, torch.zeros(1, 4, 4))

    def sig(x):
        return 1 / (1 + math.exp(-x))

    p = sig(2.0)
    want = 0.25 * (1 - p) ** 2 * -math.log(p)  # positive
    for x in (-1.0, 0.0):  # negatives: -(1 - alpha) p^gamma log(1 - p)
        want += 0.75 * sig(x) ** 2 * -math.log(1 - sig(x))
    assert loss["loss_cls"].item() == pytest.approx(want, rel=1e-6)
    assert loss["loss"].item() == pytest.approx(want, rel=1e-6)  # zero box error
    # gamma 0, alpha -1: plain BCE over every non-ignored anchor (no hard-negative selection)
    bce = FocalMultiBoxLoss(alpha=-1, gamma=0.0)(logits, regs, matches, torch.zeros(1, 4, 4))["loss_cls"]
    assert bce.item() == pytest.approx(-math.log(p) - math.log(1 - sig(-1.0)) - math.log(0.5), rel=1e-6)


def test_focal_loss_is_registered_and_keeps_box_terms():
    assert LOSSES.get("FocalMultiBoxLoss") is FocalMultiBoxLoss
    torch.manual_seed(0)
    logits, regs, tgt = torch.randn(2, 50, 1), torch.randn(2, 50, 16), torch.randn(2, 50, 16)
    matches = torch.randint(-2, 3, (2, 50))
    focal = FocalMultiBoxLoss()(logits, regs, matches, tgt)
    plain = MultiBoxLoss()(logits, regs, matches, tgt)
    assert torch.allclose(focal["loss_box"], plain["loss_box"]) and torch.allclose(focal["loss_kpt"], plain["loss_kpt"])
    with pytest.raises(ValueError, match="gamma"):
        FocalMultiBoxLoss(gamma=-1)
