"""Box/keypoint coders: exact inverses, MediaPipe's decoding formula on real LiteRT outputs, loss scales."""
import numpy as np
import pytest
import torch

from blazekit.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from blazekit.coder import MediaPipeCoder, SSDCoder
from blazekit.registry import BOX_CODERS


def _random_gt(n, k=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    cxcy = torch.rand(n, 2, generator=g) * 0.8 + 0.1
    wh = torch.rand(n, 2, generator=g) * 0.3 + 0.02
    boxes = cxcywh_to_xyxy(torch.cat([cxcy, wh], 1))
    kpts = cxcy[:, None] + (torch.rand(n, k, 2, generator=g) - 0.5) * wh[:, None]
    return boxes, kpts


def _anchors(n, fixed, seed=1):
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(n, 2, generator=g)
    s = torch.ones(n, 2) if fixed else torch.rand(n, 2, generator=g) * 0.5 + 0.05
    return torch.cat([c, s], 1)


@pytest.mark.parametrize("fixed", [True, False])
def test_mediapipe_round_trip_non_square(fixed):
    boxes, kpts = _random_gt(50)
    anchors = _anchors(50, fixed)
    coder = MediaPipeCoder()
    raw = coder.encode(boxes, kpts, anchors, input_size=(128, 256))
    assert raw.shape == (50, 16)
    b2, k2 = coder.decode(raw[None], anchors, input_size=(128, 256))
    assert torch.allclose(b2[0], boxes, atol=1e-5) and torch.allclose(k2[0], kpts, atol=1e-5)


def test_mediapipe_raw_values_are_input_pixels():
    # a 32x16 px box centred 8 px right of a fixed-size anchor at the centre of a 128x256 (HxW) input
    anchors = torch.tensor([[0.5, 0.5, 1.0, 1.0]])
    box = torch.tensor([[(128 + 8 - 16) / 256, (64 - 8) / 128, (128 + 8 + 16) / 256, (64 + 8) / 128]])
    kp = torch.tensor([[[0.5 + 4 / 256, 0.5 - 2 / 128]]])
    raw = MediaPipeCoder().encode(box, kp, anchors, input_size=(128, 256))
    assert torch.allclose(raw, torch.tensor([[8.0, 0.0, 32.0, 16.0, 4.0, -2.0]]), atol=1e-4)
    # an explicit scale overrides the input size (MediaPipe's x_scale/y_scale/w_scale/h_scale options)
    raw_fixed = MediaPipeCoder(scale=128).encode(box, kp, anchors, input_size=(128, 256))
    assert torch.allclose(raw_fixed[0, :4], torch.tensor([4.0, 0.0, 16.0, 16.0]), atol=1e-4)


def test_ssd_round_trip_and_log_space():
    boxes, kpts = _random_gt(40, seed=3)
    priors = _anchors(40, fixed=False, seed=4)
    coder = SSDCoder(variances=(0.1, 0.2))
    raw = coder.encode(boxes, kpts, priors)
    b2, k2 = coder.decode(raw, priors)
    assert torch.allclose(b2, boxes, atol=1e-5) and torch.allclose(k2, kpts, atol=1e-5)
    # a box twice the prior's width, same centre -> t_w = log(2) / 0.2
    p = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    t = coder.encode(torch.tensor([[0.3, 0.4, 0.7, 0.6]]), None, p)
    assert torch.allclose(t, torch.tensor([[0.0, 0.0, float(np.log(2) / 0.2), 0.0]]), atol=1e-5)


def test_loss_scale():
    anchors = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0]])
    priors = torch.tensor([[0.5, 0.5, 0.1484375, 0.1484375], [0.5, 0.5, 0.25, 0.5]])
    s = MediaPipeCoder().loss_scale(anchors, priors, input_size=(128, 128))
    assert s.shape == (2, 1)
    assert torch.allclose(s[:, 0], torch.tensor([19.0, (32.0 * 64.0) ** 0.5]))
    assert torch.equal(SSDCoder().loss_scale(anchors, priors), torch.ones(2, 1))


def test_litert_reference_decoding_matches_hollance_formula(shared):
    ref = shared("weights", "reference")
    reg = np.load(ref / "1face_regressors.npy")[0]
    logits = np.load(ref / "1face_classificators.npy")[0, :, 0]
    anchors = np.load(shared("weights", "hollance", "anchors.npy"))
    i = int(logits.argmax())
    assert i == 173
    boxes, kpts = MediaPipeCoder().decode(torch.from_numpy(reg)[None], torch.from_numpy(anchors), input_size=128)
    # hollance's _decode_boxes, written out: x = raw/128 * anchor_w + anchor_cx, w = raw/128 * anchor_w
    a = anchors
    x = reg[:, 0] / 128 * a[:, 2] + a[:, 0]
    y = reg[:, 1] / 128 * a[:, 3] + a[:, 1]
    w = reg[:, 2] / 128 * a[:, 2]
    h = reg[:, 3] / 128 * a[:, 3]
    expected = np.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], 1)
    np.testing.assert_allclose(boxes[0].numpy(), expected, atol=1e-6)
    kx = reg[:, 4::2] / 128 * a[:, 2:3] + a[:, 0:1]
    ky = reg[:, 5::2] / 128 * a[:, 3:4] + a[:, 1:2]
    np.testing.assert_allclose(kpts[0].numpy(), np.stack([kx, ky], -1), atol=1e-6)
    # the face in 1face.png (anchor 173, score 0.965), values computed once by hand from the formula
    np.testing.assert_allclose(boxes[0, i].numpy(), [0.3182122, 0.2789315, 0.4850771, 0.4457956], atol=1e-6)
    np.testing.assert_allclose(kpts[0, i, 0].numpy(), [0.3823677, 0.3151784], atol=1e-6)  # right eye
    np.testing.assert_allclose(kpts[0, i, 1].numpy(), [0.4528942, 0.3215769], atol=1e-6)  # left eye


def test_helpers_and_errors():
    b = torch.tensor([[0.1, 0.2, 0.5, 0.8]])
    assert torch.allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b)
    with pytest.raises(ValueError, match="input_size"):
        MediaPipeCoder().decode(torch.zeros(1, 3, 16), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="4 \\+ 2K"):
        MediaPipeCoder().decode(torch.zeros(1, 3, 7), torch.zeros(3, 4), input_size=128)
    with pytest.raises(ValueError, match="scale"):
        MediaPipeCoder(scale=[1, 2])
    assert isinstance(BOX_CODERS.build({"type": "SSDCoder", "variances": [0.1, 0.2]}), SSDCoder)
    assert MediaPipeCoder.uses_priors is False and SSDCoder.uses_priors is True
