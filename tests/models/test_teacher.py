"""Keypoint self-distillation, the teacher's side: the targets a frozen starting model gives faces without keypoint
labels, its positives, ignored faces and score targets (a short training run: tests/engine/test_distill.py)."""
import numpy as np
import torch

from blazekit import build_detector
from blazekit.boxes import box_iou
from blazekit.models.teacher import TeacherOutputs as Teacher, taught_face_keypoints, teacher_detections

from tests.conftest import REPO


def _targets(with_keypoints: bool):
    boxes = np.array([[30.0, 30.0, 90.0, 90.0]], np.float32)
    t = {"boxes": boxes, "labels": np.zeros(1, np.int64)}
    if with_keypoints:
        t["keypoints"] = np.tile(np.array([[45, 50], [75, 50], [60, 65], [60, 78], [35, 55], [85, 55]], np.float32),
                                 (1, 1, 1))
        t["keypoints_visible"] = np.ones((1, 6), bool)
    return [t]


def test_anchor_targets_copy_the_teacher_only_where_keypoints_are_unlabelled():
    torch.manual_seed(0)
    det = build_detector("configs/blazeface_front.yml", weights="mediapipe_short_range")
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    reg, logits = det.raw(x)
    size = (128, 128)

    def teacher(r, weight=1.0):
        return Teacher(r, logits, weight=weight, targets="anchor")

    # a teacher identical to the student: nothing to learn, the keypoint term vanishes for box-only faces
    same = det.compute_loss(reg, logits, _targets(False), size, teacher=teacher(reg))
    assert float(same["loss_kpt"].detach()) == 0.0
    # without a teacher box-only faces have no keypoint term either
    assert float(det.compute_loss(reg, logits, _targets(False), size)["loss_kpt"].detach()) == 0.0
    # a teacher whose keypoints sit 3 px away: a term that scales with the weight
    shifted = reg.clone()
    shifted[..., 4:] += 3.0
    one = float(det.compute_loss(reg, logits, _targets(False), size, teacher=teacher(shifted))["loss_kpt"].detach())
    ten = float(det.compute_loss(reg, logits, _targets(False), size,
                                 teacher=teacher(shifted, 10.0))["loss_kpt"].detach())
    assert one > 0 and np.isclose(ten, 10 * one, rtol=1e-5)
    # labelled keypoints keep their labels: the teacher changes nothing there
    labelled = det.compute_loss(reg, logits, _targets(True), size)["loss_kpt"]
    taught = det.compute_loss(reg, logits, _targets(True), size, teacher=teacher(shifted))["loss_kpt"]
    assert float(labelled.detach()) > 0 and torch.equal(labelled, taught)


def _demo_face():
    """Raw MediaPipe outputs on the first demo photo letterboxed to 128, and the face MediaPipe reports there."""
    from blazekit.inference import load_image
    from blazekit.preprocess import letterbox, normalize

    det = build_detector(str(REPO / "configs/blazeface_front.yml"), weights="mediapipe_short_range")
    image = load_image(sorted((REPO / "blazekit/data/demo/images").glob("*.jpg"))[0])
    x = torch.from_numpy(normalize(letterbox(image, (128, 128))[0], "minus_one_one"))[None].float()
    with torch.no_grad():
        reg, logits = det.raw(x)
        boxes, kpts, scores = det.decode(reg, logits)
        reported = det.postprocess(boxes[0], scores[0], kpts[0])  # MediaPipe's weighted blending
    return det, reg, logits, reported


def test_face_targets_are_the_keypoints_mediapipe_reports_for_that_face_used_like_labels():
    det, reg, logits, reported = _demo_face()
    size = (128, 128)
    assert len(reported["boxes"]) == 1 and float(reported["scores"][0]) > 0.9
    box = reported["boxes"][:1]
    teacher = Teacher(reg, logits, weight=1.0)
    gt = det.prepare_targets([{"boxes": box}], size, torch.float32, torch.device("cpu"))  # no keypoint labels
    t_boxes, t_kpts, t_score = teacher_detections(teacher, det.decode, size, torch.float32)
    kp, weights = taught_face_keypoints(teacher, gt.keypoints, gt.keypoint_weights, box_iou(gt.padded_boxes, t_boxes),
                                        t_kpts, t_score)
    # with the reported box as the face, the taught keypoints are the ones the post-processor reports
    assert torch.allclose(kp[0, 0] * 128, reported["keypoints"][0], atol=1e-3), (kp[0, 0] * 128, reported)
    assert torch.equal(weights, torch.ones(1, 1, 6))
    face = {"boxes": box.numpy(), "labels": np.zeros(1, np.int64)}
    # the student equal to the teacher: its matched anchors already predict nearly those keypoints, so the
    # taught term is small next to a teacher shifted by 3 px, and it scales with the weight
    same = float(det.compute_loss(reg, logits, [face], size, teacher=teacher)["loss_kpt"])
    moved = reg.clone()
    moved[..., 4:] += 3.0
    shifted = float(det.compute_loss(reg, logits, [face], size, teacher=Teacher(moved, logits))["loss_kpt"])
    ten = float(det.compute_loss(reg, logits, [face], size, teacher=Teacher(moved, logits, weight=10.0))["loss_kpt"])
    assert shifted > 3 * same and np.isclose(ten, 10 * shifted, rtol=1e-5)
    # a box where the teacher sees no face: no keypoint term at all (nothing trustworthy to learn)
    blank = {"boxes": np.array([[2.0, 2.0, 20.0, 20.0]], np.float32), "labels": np.zeros(1, np.int64)}
    assert float(det.compute_loss(reg, logits, [blank], size, teacher=teacher)["loss_kpt"]) == 0.0
    # labelled keypoints keep their labels
    labelled = det.compute_loss(reg, logits, _targets(True), size)["loss_kpt"]
    assert torch.equal(labelled, det.compute_loss(reg, logits, _targets(True), size, teacher=Teacher(moved, logits))
                       ["loss_kpt"])


def _loss_matches(det, reg, logits, targets, teacher):
    """The matches the detector hands its loss (-1 negative, -2 ignored, >= 0 positive)."""
    seen = {}
    hook = det.loss.register_forward_pre_hook(lambda module, args: seen.update(matches=args[2]))
    try:
        out = det.compute_loss(reg, logits, targets, (128, 128), teacher=teacher)
    finally:
        hook.remove()
    return seen["matches"][0], out


def test_ignore_score_keeps_faces_the_labels_miss_out_of_the_negatives():
    """The demo face left unlabelled (only a box elsewhere is labelled): with ignore_score the anchors MediaPipe
    scores >= 0.5 on that face become ignored (-2), never hard negatives; everything else is unchanged."""
    det, reg, logits, reported = _demo_face()
    other = {"boxes": np.array([[2.0, 2.0, 20.0, 20.0]], np.float32), "labels": np.zeros(1, np.int64)}
    plain, _ = _loss_matches(det, reg, logits, [other], Teacher(reg, logits))
    kept, _ = _loss_matches(det, reg, logits, [other], Teacher(reg, logits, ignore_score=0.5))
    _, _, score = det.decode(reg, logits)
    fired = score[0] >= 0.5
    assert int(fired.sum()) >= 3 and bool((plain[fired] == -1).all())
    assert bool((kept[fired] == -2).all())
    assert torch.equal(kept[~fired], plain[~fired])
    # those anchors still learn the teacher's score (they are background to the labels, a face to the teacher)
    low = logits.clone()
    low[0, fired] -= 3.0
    both = det.compute_loss(reg, low, [other], (128, 128), teacher=Teacher(reg, logits, ignore_score=0.5,
                                                                             score_weight=1.0))
    assert float(both["loss_score"]) > 0.1
    # the cls loss drops: the face's anchors were the hardest negatives
    with_face = float(det.compute_loss(reg, logits, [other], (128, 128), teacher=Teacher(reg, logits))["loss_cls"])
    without = float(det.compute_loss(reg, logits, [other], (128, 128),
                                     teacher=Teacher(reg, logits, ignore_score=0.5))["loss_cls"])
    assert without < with_face


def test_score_distillation_is_a_kl_on_the_anchors_the_labels_call_background():
    from blazekit.matcher import IoUMatcher

    det, reg, logits, reported = _demo_face()
    det.matcher = IoUMatcher(pos_iou=0.5, neg_iou=0.3)  # anchors of IoU 0.3-0.5 with the face: the ignore band
    face = {"boxes": reported["boxes"][:1].numpy(), "labels": np.zeros(1, np.int64)}
    matches, same = _loss_matches(det, reg, logits, [face], Teacher(reg, logits, score_weight=1.0))
    assert abs(float(same["loss_score"])) < 1e-5  # the student is the teacher: KL 0 (float rounding only)
    assert float(same["loss"]) == float(same["loss_cls"] + same["loss_box"] + same["loss_kpt"] + same["loss_score"])
    assert "loss_score" not in det.compute_loss(reg, logits, [face], (128, 128), teacher=Teacher(reg, logits))
    positive = matches >= 0
    assert int(positive.sum()) > 0
    # a teacher that differs only near the labelled face (positives and the matcher's ignore band): nothing to
    # learn, the labels decide there
    near = matches != -1
    assert int((matches == -2).sum()) > 0  # the band exists: KL there would keep the teacher's own peaks
    on_face = logits.clone()
    on_face[0, near] += 5.0
    assert abs(float(det.compute_loss(reg, logits, [face], (128, 128),
                                      teacher=Teacher(reg, on_face, score_weight=1.0))["loss_score"])) < 1e-5
    # a teacher more sure of a background anchor: KL > 0, scaled by the weight, pulls the student's logit up
    j = int((~positive & (matches == -1)).nonzero()[0, 0])
    up = logits.clone()
    up[0, j] += 4.0
    student = logits.detach().clone().requires_grad_(True)
    one = det.compute_loss(reg, student, [face], (128, 128), teacher=Teacher(reg, up, score_weight=1.0))["loss_score"]
    one.backward()
    p, q = torch.sigmoid(logits[0, j, 0]), torch.sigmoid(up[0, j, 0])
    kl = q * torch.log(q / p) + (1 - q) * torch.log((1 - q) / (1 - p))
    assert np.isclose(float(one.detach()), float(kl) / int(positive.sum()), rtol=1e-4)
    assert float(student.grad[0, j, 0]) < 0 and int((student.grad != 0).sum()) == 1
    three = det.compute_loss(reg, logits, [face], (128, 128), teacher=Teacher(reg, up, score_weight=3.0))
    assert np.isclose(float(three["loss_score"]), 3 * float(one.detach()), rtol=1e-5)


def test_teacher_positives_make_the_anchors_the_teacher_fires_on_positives():
    """positive_iou: anchors MediaPipe scores >= 0.5 whose decoded box has IoU >= 0.5 with a labelled face become
    that face's positives; 'add' keeps the matcher's, 'replace' ignores the matcher's others for faces the teacher
    finds; a face it misses keeps the matcher's positives, an ignored face gets none."""
    from blazekit.matcher import IoUMatcher

    det, reg, logits, reported = _demo_face()
    det.matcher = IoUMatcher(pos_iou=0.6, neg_iou=0.4)  # strict: the teacher fires beyond the matcher's positives
    face = reported["boxes"][:1].numpy()
    missed = np.array([[2.0, 100.0, 26.0, 124.0]], np.float32)  # an empty corner MediaPipe finds nothing in
    targets = [{"boxes": np.concatenate([face, missed]), "labels": np.zeros(2, np.int64)}]
    plain, _ = _loss_matches(det, reg, logits, targets, Teacher(reg, logits))
    boxes, _, score = det.decode(reg, logits)
    fired = (score[0] >= 0.5) & (box_iou(torch.as_tensor(face), boxes[0])[0] >= 0.5)
    assert int(fired.sum()) >= 3
    assert int((fired & (plain != 0)).sum()) > 0  # the teacher fires on anchors the matcher does not give the face
    add, _ = _loss_matches(det, reg, logits, targets, Teacher(reg, logits, positive_iou=0.5))
    assert bool((add[fired] == 0).all())
    assert torch.equal(add[~fired], plain[~fired])
    rep, _ = _loss_matches(det, reg, logits, targets, Teacher(reg, logits, positive_iou=0.5, positive_mode="replace"))
    assert torch.equal(rep == 0, fired)
    assert bool((rep[(plain == 0) & ~fired] == -2).all())
    assert int((plain == 1).sum()) > 0 and torch.equal(rep == 1, plain == 1)  # the face the teacher misses
    assert torch.equal(rep[(plain < 0) & ~fired], plain[(plain < 0) & ~fired])
    ignored = [{**targets[0], "ignore": np.array([True, False])}]
    none, _ = _loss_matches(det, reg, logits, ignored, Teacher(reg, logits, positive_iou=0.5))
    assert not bool((none[fired] == 0).any())
