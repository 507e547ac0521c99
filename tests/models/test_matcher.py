"""IoU matcher on hand-made boxes: thresholds, forced best anchors, conflicts, ignored faces, empty images;
the ATSS matcher on the front model's anchors."""
import pytest
import torch

from blazekit.anchors import SSDAnchorGenerator
from blazekit.boxes import batched_box_iou
from blazekit.matcher import IGNORED, NEGATIVE, ATSSMatcher, IoUMatcher
from blazekit.registry import MATCHERS

# four quadrant priors (cx, cy, w, h) and one small centre prior
PRIORS = torch.tensor([
    [0.25, 0.25, 0.5, 0.5],
    [0.75, 0.25, 0.5, 0.5],
    [0.25, 0.75, 0.5, 0.5],
    [0.75, 0.75, 0.5, 0.5],
    [0.50, 0.50, 0.1, 0.1],
])


def test_batched_iou_values():
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.25]]])
    iou = batched_box_iou(boxes, torch.tensor([[0.0, 0.0, 0.5, 0.5]]))
    assert iou.shape == (1, 2, 1)
    assert torch.allclose(iou[0, :, 0], torch.tensor([1.0, 0.5]))


def test_thresholds_positive_negative_ignored():
    m = IoUMatcher(pos_iou=0.5, neg_iou=0.3, force_best=False)
    gt = [torch.tensor([
        [0.0, 0.0, 0.5, 0.5],     # = prior 0 (IoU 1) -> positive
        [0.5, 0.0, 1.0, 0.2],     # IoU 0.4 with prior 1 -> ignored band
    ])]
    matches = m(PRIORS, gt)
    assert matches.tolist() == [[0, IGNORED, NEGATIVE, NEGATIVE, NEGATIVE]]


def test_force_best_below_threshold_and_switch():
    gt = [torch.tensor([[0.6, 0.6, 0.7, 0.7]])]  # 0.1x0.1 face: IoU 0.04 with prior 3, 0 elsewhere
    assert IoUMatcher(0.35, 0.35, force_best=True)(PRIORS, gt).tolist() == [[-1, -1, -1, 0, -1]]
    assert IoUMatcher(0.35, 0.35, force_best=False)(PRIORS, gt).tolist() == [[-1, -1, -1, -1, -1]]


def test_forced_conflict_goes_to_higher_iou_then_lower_index():
    # both faces have prior 3 as best anchor; face 1 overlaps it more (0.09 vs 0.04) and wins it
    gt = [torch.tensor([[0.6, 0.6, 0.7, 0.7], [0.6, 0.6, 0.75, 0.75]])]
    assert IoUMatcher(0.35, 0.35)(PRIORS, gt).tolist() == [[-1, -1, -1, 1, -1]]
    # identical faces: deterministic, the lower index wins
    gt = [torch.tensor([[0.6, 0.6, 0.7, 0.7], [0.6, 0.6, 0.7, 0.7]])]
    for _ in range(3):
        assert IoUMatcher(0.35, 0.35)(PRIORS, gt).tolist() == [[-1, -1, -1, 0, -1]]


def test_empty_images_batched_and_device():
    gt = [torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 0.5, 0.5]]), torch.zeros(0, 4)]
    matches = IoUMatcher()(PRIORS, gt)
    assert matches.dtype == torch.long and matches.shape == (3, 5)
    assert (matches[0] == -1).all() and (matches[2] == -1).all()
    assert matches[1].tolist() == [0, -1, -1, -1, -1]
    assert IoUMatcher()(PRIORS, [torch.zeros(0, 4)]).tolist() == [[-1] * 5]


def test_ignored_faces_never_positive_and_not_background():
    gt = [torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])]
    matches = IoUMatcher(0.35, 0.35)(PRIORS, gt, gt_ignore=[torch.tensor([False, True])])
    assert matches.tolist() == [[0, -1, -1, IGNORED, -1]]
    # an image with only an ignored face: no positive at all, the overlapped prior ignored
    matches = IoUMatcher(0.35, 0.35)(PRIORS, [gt[0][1:]], gt_ignore=[torch.tensor([True])])
    assert matches.tolist() == [[-1, -1, -1, IGNORED, -1]]
    with pytest.raises(ValueError, match="gt_ignore"):
        IoUMatcher()(PRIORS, gt, gt_ignore=[torch.tensor([True])])


def test_degenerate_box_is_not_forced():
    gt = [torch.tensor([[0.3, 0.3, 0.3, 0.3]])]  # zero area: IoU 0 everywhere
    assert IoUMatcher()(PRIORS, gt).tolist() == [[-1] * 5]


def test_config_and_validation():
    m = MATCHERS.build({"type": "IoUMatcher", "pos_iou": 0.5, "neg_iou": 0.4})
    assert (m.pos_iou, m.neg_iou, m.force_best) == (0.5, 0.4, True)
    with pytest.raises(ValueError, match="neg_iou"):
        IoUMatcher(pos_iou=0.3, neg_iou=0.5)


# ----------------------------------------------------------------------------------------- ATSS matcher
def front_priors():
    g = SSDAnchorGenerator(strides=[8, 16, 16, 16], min_scale=0.1484375, max_scale=0.75, aspect_ratios=[1.0],
                           interpolated_scale_aspect_ratio=1.0, fixed_anchor_size=True)
    return g.priors((128, 128))


def test_atss_gives_a_small_face_positives_that_iou_matching_misses():
    priors = front_priors()
    face = torch.tensor([[59.0, 59.0, 69.0, 69.0]]) / 128  # 10 px: IoU <= 0.28 with the smallest (19 px) prior
    assert (IoUMatcher(force_best=False)(priors, [face]) >= 0).sum() == 0
    assert (IoUMatcher()(priors, [face]) >= 0).sum() == 1  # only the forced best anchor
    m = ATSSMatcher()(priors, [face])
    pos = (m[0] >= 0).nonzero().squeeze(1)
    assert len(pos) >= 4
    c = priors[pos, :2] * 128
    assert ((c > 59) & (c < 69)).all()  # every positive's centre lies inside the face


def test_atss_ignores_resolves_overlaps_and_handles_empty_images():
    priors = front_priors()
    faces = torch.tensor([[40.0, 40.0, 80.0, 80.0], [44.0, 44.0, 84.0, 84.0], [0.0, 0.0, 30.0, 30.0]]) / 128
    m = ATSSMatcher()(priors, [faces, torch.zeros(0, 4)], [torch.tensor([False, False, True]), None])
    assert m.shape == (2, 896) and (m[1] == -1).all()
    assert set(m[0][m[0] >= 0].tolist()) == {0, 1}  # the ignored face is never a positive
    from blazekit.boxes import box_iou, cxcywh_to_xyxy
    iou = box_iou(faces, cxcywh_to_xyxy(priors))
    for a in (m[0] >= 0).nonzero().squeeze(1):  # an anchor claimed by both goes to the higher IoU
        assert iou[m[0, a], a] >= iou[:2, a].max() - 1e-6
    assert ((iou[2] >= 0.35) & (m[0] == -1)).sum() == 0 and (m[0] == IGNORED).any()
    softer = ATSSMatcher(neg_iou=0.2)(priors, [faces])
    assert (softer == IGNORED).sum() > (m[0] == IGNORED).sum()
    assert MATCHERS.get("ATSSMatcher") is ATSSMatcher
