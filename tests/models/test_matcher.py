"""IoU matcher on hand-made boxes: thresholds, forced best anchors, conflicts, ignored faces, empty images."""
import pytest
import torch

from blazekit.boxes import batched_box_iou
from blazekit.matcher import IGNORED, NEGATIVE, IoUMatcher
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
