"""Post-processing against hand-computed clusters: MediaPipe weighted blending and hard NMS."""
import pytest
import torch

from blazekit.postprocess import NMS, WeightedBlending
from blazekit.registry import POSTPROCESSORS

# A and B overlap (IoU 81/119 = 0.68), C is alone, D overlaps A a little (IoU 25/175 = 0.143)
BOXES = torch.tensor([
    [0.0, 0.0, 10.0, 10.0],    # A 0.9
    [1.0, 1.0, 11.0, 11.0],    # B 0.6
    [50.0, 50.0, 60.0, 60.0],  # C 0.8
    [5.0, 5.0, 15.0, 15.0],    # D 0.7
    [80.0, 0.0, 90.0, 10.0],   # E 0.2 (below the score threshold)
])
SCORES = torch.tensor([0.9, 0.6, 0.8, 0.7, 0.2])
KPTS = torch.stack([BOXES[:, :2], BOXES[:, 2:]], dim=1)  # K=2: top-left and bottom-right corners


def test_weighted_blending_hand_computed_clusters():
    out = WeightedBlending(score_thr=0.5, iou_thr=0.3, max_det=100)(BOXES, SCORES, KPTS)
    # cluster 1: A (top) + B -> (0.9 * A + 0.6 * B) / 1.5, score of A; then C; then D (IoU with A < 0.3)
    assert torch.allclose(out["scores"], torch.tensor([0.9, 0.8, 0.7]))
    expected = torch.tensor([[0.4, 0.4, 10.4, 10.4], [50.0, 50.0, 60.0, 60.0], [5.0, 5.0, 15.0, 15.0]])
    assert torch.allclose(out["boxes"], expected, atol=1e-6)
    assert torch.allclose(out["keypoints"][0], torch.tensor([[0.4, 0.4], [10.4, 10.4]]), atol=1e-6)
    # with a lower threshold D joins A's cluster too (it is still in the remaining set)
    out = WeightedBlending(score_thr=0.5, iou_thr=0.1)(BOXES, SCORES, KPTS)
    total = 0.9 + 0.6 + 0.7
    x0 = (0.9 * 0 + 0.6 * 1 + 0.7 * 5) / total
    assert torch.allclose(out["boxes"][0], torch.tensor([x0, x0, x0 + 10, x0 + 10]), atol=1e-5)
    assert torch.allclose(out["scores"], torch.tensor([0.9, 0.8]))


def test_iou_threshold_is_strict_like_mediapipe():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])  # IoU exactly 0.5
    out = WeightedBlending(score_thr=0.0, iou_thr=0.5)(boxes, torch.tensor([0.9, 0.8]))
    assert len(out["scores"]) == 2
    assert out["keypoints"].shape == (2, 0, 2)


def test_score_threshold_and_max_det_overrides():
    pp = WeightedBlending(score_thr=0.5, iou_thr=0.3, max_det=100)
    out = pp(BOXES, SCORES, KPTS, score_thr=0.1, max_det=2)
    assert torch.allclose(out["scores"], torch.tensor([0.9, 0.8]))
    out = pp(BOXES, SCORES, KPTS, score_thr=0.1)
    assert torch.allclose(out["scores"], torch.tensor([0.9, 0.8, 0.7, 0.2]))


def test_nms_keeps_top_box_unchanged():
    out = NMS(score_thr=0.5, iou_thr=0.3)(BOXES, SCORES, KPTS)
    assert torch.allclose(out["scores"], torch.tensor([0.9, 0.8, 0.7]))
    assert torch.equal(out["boxes"], BOXES[[0, 2, 3]])
    assert torch.equal(out["keypoints"], KPTS[[0, 2, 3]])
    assert len(NMS(score_thr=0.5, iou_thr=0.3, max_det=1)(BOXES, SCORES, KPTS)["scores"]) == 1


@pytest.mark.parametrize("cls", [NMS, WeightedBlending])
def test_empty_input(cls):
    out = cls(score_thr=0.95)(BOXES, SCORES, KPTS)
    assert out["boxes"].shape == (0, 4) and out["scores"].shape == (0,) and out["keypoints"].shape == (0, 2, 2)


def test_sigmoid_clip_and_config():
    pp = POSTPROCESSORS.build({"type": "WeightedBlending", "score_thr": 0.5, "iou_thr": 0.3, "sigmoid_clip": 100.0})
    s = pp.scores(torch.tensor([1000.0, -1000.0, 0.0]))
    assert torch.allclose(s, torch.sigmoid(torch.tensor([100.0, -100.0, 0.0])))
    s = WeightedBlending(sigmoid_clip=5.0).scores(torch.tensor([-1000.0, 3.0]))
    assert torch.allclose(s, torch.sigmoid(torch.tensor([-5.0, 3.0])))
    assert WeightedBlending(sigmoid_clip=None).scores(torch.tensor([-1000.0]))[0] == 0
    with pytest.raises(ValueError, match="iou_thr"):
        NMS(iou_thr=1.5)


def _greedy_reference(boxes, scores, kpts, iou_thr, blending, limit=None):
    """MediaPipe's loop, written out: the oracle for the vectorised ``suppress``."""
    from blazekit.boxes import box_iou

    out_b, out_s, out_k, remaining = [], [], [], list(range(len(scores)))
    while remaining and (limit is None or len(out_s) < limit):
        top = remaining[0]
        iou = box_iou(boxes[top][None].double(), boxes[remaining].double())[0]
        cluster = [r for r, v in zip(remaining, iou) if v > iou_thr or r == top]
        w = scores[cluster].double()
        out_b.append((boxes[cluster].double() * w[:, None]).sum(0) / w.sum() if blending else boxes[top].double())
        out_k.append((kpts[cluster].double() * w[:, None, None]).sum(0) / w.sum() if blending else kpts[top].double())
        out_s.append(float(scores[top]))
        remaining = [r for r in remaining if r not in cluster]
    return torch.stack(out_b), torch.tensor(out_s), torch.stack(out_k)


@pytest.mark.parametrize("cls", [WeightedBlending, NMS])
@pytest.mark.parametrize("seed", range(4))
def test_vectorised_suppression_equals_the_greedy_loop(cls, seed):
    """Dozens of overlapping, partly empty/flipped candidates: same clusters, same blended values."""
    g = torch.Generator().manual_seed(seed)
    n = 80
    centres = torch.rand(6, 2, generator=g)[torch.randint(0, 6, (n,), generator=g)] * 100
    wh = torch.rand(n, 2, generator=g) * 20 + 2
    wh[:3] = -wh[:3]  # flipped: empty, each its own cluster
    boxes = torch.cat([centres - wh / 2, centres + wh / 2], dim=1) + torch.randn(n, 4, generator=g)
    kpts = boxes.reshape(n, 2, 2) + torch.randn(n, 2, 2, generator=g)
    scores = torch.rand(n, generator=g)
    for iou_thr, limit in ((0.3, None), (0.5, 4), (0.0, None)):
        out = cls(score_thr=0.2, iou_thr=iou_thr, max_det=limit)(boxes, scores, kpts)
        keep = scores >= 0.2
        order = scores[keep].argsort(descending=True, stable=True)
        ref_b, ref_s, ref_k = _greedy_reference(boxes[keep][order], scores[keep][order], kpts[keep][order], iou_thr,
                                                cls is WeightedBlending, limit)
        assert torch.equal(out["scores"], ref_s.float())
        assert torch.allclose(out["boxes"].double(), ref_b, atol=1e-4, rtol=0)
        assert torch.allclose(out["keypoints"].double(), ref_k, atol=1e-4, rtol=0)
