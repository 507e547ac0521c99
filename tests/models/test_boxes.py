"""blazekit.boxes: the one IoU / conversion / NMS, on hand-made boxes (empty, flipped, batched, grouped)."""
import torch

from blazekit.boxes import batched_box_iou, box_iou, clip_flipped, cxcywh_to_xyxy, nms_keep, xyxy_to_cxcywh


def test_iou_values_and_empty_boxes():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [3.0, 3.0, 3.0, 3.0], [10.0, 10.0, 0.0, 0.0]])
    iou = box_iou(a, a)
    assert torch.allclose(iou[0, :2], torch.tensor([1.0, 0.5]))
    # a point box and a flipped box are empty: IoU 0 with everything, themselves included (no NaN)
    assert torch.equal(iou[2:], torch.zeros(2, 4)) and torch.equal(iou[:, 2:], torch.zeros(4, 2))
    assert torch.equal(clip_flipped(a[3:]), torch.tensor([[10.0, 10.0, 10.0, 10.0]]))


def test_batched_iou_broadcasts_over_images():
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5]], [[0.5, 0.5, 1.0, 1.0]]])  # [B=2, N=1, 4]
    priors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75]])
    iou = batched_box_iou(boxes, priors)
    assert iou.shape == (2, 1, 2)
    assert torch.allclose(iou[:, 0], torch.tensor([[1.0, 1 / 7], [0.0, 1 / 7]]))


def test_conversions_are_inverse():
    cxcywh = torch.tensor([[[5.0, 6.0, 4.0, 2.0]]])
    xyxy = cxcywh_to_xyxy(cxcywh)
    assert torch.equal(xyxy, torch.tensor([[[3.0, 5.0, 7.0, 7.0]]]))
    assert torch.equal(xyxy_to_cxcywh(xyxy), cxcywh)


def test_nms_keep_is_strict_and_groups_stay_apart():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 9.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms_keep(boxes, scores, 0.5).tolist() == [0, 1]  # IoU 0.5 does not suppress, 0.9 does
    assert nms_keep(boxes, scores, 0.5, groups=torch.tensor([0, 0, 1])).tolist() == [0, 1, 2]  # by score
