"""Keypoint self-distillation: faces without keypoint labels learn the frozen starting model's keypoints."""
import numpy as np
import torch

from blazekit import build_detector


def _targets(with_keypoints: bool):
    boxes = np.array([[30.0, 30.0, 90.0, 90.0]], np.float32)
    t = {"boxes": boxes, "labels": np.zeros(1, np.int64)}
    if with_keypoints:
        t["keypoints"] = np.tile(np.array([[45, 50], [75, 50], [60, 65], [60, 78], [35, 55], [85, 55]], np.float32),
                                 (1, 1, 1))
        t["keypoints_visible"] = np.ones((1, 6), bool)
    return [t]


def test_teacher_gives_targets_only_where_keypoints_are_unlabelled():
    torch.manual_seed(0)
    det = build_detector("configs/blazeface_front.yml", weights="mediapipe_short_range")
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    reg, logits = det.raw(x)
    size = (128, 128)
    # a teacher identical to the student: nothing to learn, the keypoint term vanishes for box-only faces
    same = det.compute_loss(reg, logits, _targets(False), size, teacher_regressors=reg)
    assert float(same["loss_kpt"]) == 0.0
    # without a teacher box-only faces have no keypoint term either
    assert float(det.compute_loss(reg, logits, _targets(False), size)["loss_kpt"]) == 0.0
    # a teacher whose keypoints sit 3 px away: a term that scales with teacher_weight
    shifted = reg.clone()
    shifted[..., 4:] += 3.0
    one = float(det.compute_loss(reg, logits, _targets(False), size, teacher_regressors=shifted)["loss_kpt"])
    ten = float(det.compute_loss(reg, logits, _targets(False), size, teacher_regressors=shifted,
                                 teacher_weight=10.0)["loss_kpt"])
    assert one > 0 and np.isclose(ten, 10 * one, rtol=1e-5)
    # labelled keypoints keep their labels: the teacher changes nothing there
    labelled = det.compute_loss(reg, logits, _targets(True), size)["loss_kpt"]
    taught = det.compute_loss(reg, logits, _targets(True), size, teacher_regressors=shifted)["loss_kpt"]
    assert float(labelled) > 0 and torch.equal(labelled, taught)
