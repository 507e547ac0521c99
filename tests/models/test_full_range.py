"""MediaPipe full range model: 2304 anchors, TF's depth_to_space, it finds faces and trains (its import from the
sparse tflite: tests/convert/test_full_range.py)."""
import math

import cv2
import numpy as np
import torch

import blazekit
from blazekit.models.full_range import depth_to_space
from blazekit.preprocess import letterbox, normalize

from tests.conftest import REPO

FULL = REPO / "configs" / "blazeface_full_range.yml"


def _mediapipe_anchors(size=192, strides=(4,), min_scale=0.1484375, max_scale=0.75, offset=0.5):
    """SsdAnchorsCalculator for num_layers 1, aspect ratio 1, interpolated_scale_aspect_ratio 0, fixed size:
    one anchor per cell, centre ((x + 0.5) / fw, (y + 0.5) / fh), row-major, w = h = 1."""
    out = []
    for stride in strides:
        fm = int(math.ceil(size / stride))
        for y in range(fm):
            for x in range(fm):
                out.append(((x + offset) / fm, (y + offset) / fm, 1.0, 1.0))
    return np.asarray(out, dtype=np.float32)


def test_anchors_are_mediapipes_2304():
    model = blazekit.build_detector(FULL)
    ref = _mediapipe_anchors()
    assert ref.shape == (2304, 4) and ref[0, 0] == ref[0, 1] == np.float32(0.5 / 48)
    np.testing.assert_allclose(model.anchors.numpy(), ref, rtol=0, atol=1e-7)
    assert model.anchor_generator.num_anchors_per_level() == [1]
    assert model.cfg["postprocess"]["score_thr"] == 0.6 and model.cfg["postprocess"]["iou_thr"] == 0.3


def test_depth_to_space_is_tf_dcr():
    """TF: out[h*2+i, w*2+j, c] = in[h, w, (i*2+j)*C + c] (NHWC); checked against that formula in numpy."""
    x = torch.arange(2 * 8 * 3 * 5, dtype=torch.float32).reshape(2, 8, 3, 5)  # C_out = 2
    y = depth_to_space(x, 2).numpy()
    xn = x.numpy()
    for h in range(3):
        for w in range(5):
            for i in range(2):
                for j in range(2):
                    for c in range(2):
                        assert (y[:, c, h * 2 + i, w * 2 + j] == xn[:, (i * 2 + j) * 2 + c, h, w]).all()


def test_full_range_trains_and_finds_faces(shared):
    model = blazekit.build_detector(FULL, weights="mediapipe_full_range")
    img = cv2.cvtColor(cv2.imread(str(shared("weights", "hollance", "3faces.png"))), cv2.COLOR_BGR2RGB)
    det = model.predict(img)[0]
    assert len(det["boxes"]) == 3 and det["scores"].min() > 0.6
    # the parts train: one loss step moves the weights of backbone, neck and head
    model.train()
    x = torch.from_numpy(normalize(letterbox(img, (192, 192))[0])[None])
    boxes = det["boxes"] * 1.5  # 128 -> 192 px (square image: letterbox is a plain scale)
    target = [{"boxes": torch.from_numpy(boxes), "keypoints": torch.from_numpy(det["keypoints"] * 1.5)}]
    loss = model(x, target)["loss"]
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    for name in ("backbone.stem.0.conv.weight", "neck.merges.2.0.convs.0.conv.weight", "head.reg_convs.0.dw.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name
