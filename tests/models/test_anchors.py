"""SSDAnchorGenerator: bit-exact MediaPipe anchors, real-scale priors, non-square inputs, explicit sizes."""
import math

import numpy as np
import pytest
import torch

from blazekit import config
from blazekit.anchors import SSDAnchorGenerator
from blazekit.registry import ANCHOR_GENERATORS

from tests.conftest import REPO

FRONT = dict(num_layers=4, strides=[8, 16, 16, 16], min_scale=0.1484375, max_scale=0.75, anchor_offset_x=0.5,
             anchor_offset_y=0.5, aspect_ratios=[1.0], interpolated_scale_aspect_ratio=1.0, fixed_anchor_size=True)
CONFIGS = REPO / "configs" / "_base_" / "models"
BACK = dict(FRONT, strides=[16, 32, 32, 32], min_scale=0.15625)


def _scales(min_s, max_s, n=4):
    return [min_s + (max_s - min_s) * i / (n - 1) for i in range(n)]


def test_front_anchors_equal_mediapipe_exactly(shared):
    ref = np.load(shared("weights", "hollance", "anchors.npy")).astype(np.float32)
    gen = SSDAnchorGenerator(**FRONT)
    a = gen.anchors((128, 128))
    assert a.dtype == torch.float32 and a.shape == (896, 4)
    assert np.array_equal(a.numpy(), ref)
    assert gen.num_anchors_per_level((128, 128)) == [2, 6]
    assert gen.grid_sizes((128, 128)) == [(16, 16), (8, 8)]
    assert gen.strides_per_level() == [8, 16]


def test_back_anchors_equal_mediapipe_exactly(shared):
    ref = np.load(shared("weights", "hollance", "anchorsback.npy")).astype(np.float32)
    gen = SSDAnchorGenerator(**BACK)
    assert np.array_equal(gen.anchors((256, 256)).numpy(), ref)
    assert gen.grid_sizes((256, 256)) == [(16, 16), (8, 8)]


def test_shipped_config_builds_the_same_anchors(shared):
    cfg = config.load(CONFIGS / "blazeface_front.yml")
    gen = ANCHOR_GENERATORS.build(cfg["model"]["anchors"], where="model.anchors")
    ref = np.load(shared("weights", "hollance", "anchors.npy")).astype(np.float32)
    assert np.array_equal(gen.anchors((128, 128)).numpy(), ref)


def test_priors_have_mediapipe_scales():
    gen = SSDAnchorGenerator(**FRONT)
    p = gen.priors((128, 128))
    a = gen.anchors((128, 128))
    assert torch.equal(p[:, :2], a[:, :2])  # same centres
    assert torch.all(a[:, 2:] == 1.0)  # fixed_anchor_size
    s = _scales(0.1484375, 0.75) + [1.0]
    level0 = [s[0], math.sqrt(s[0] * s[1])]
    level1 = [s[1], math.sqrt(s[1] * s[2]), s[2], math.sqrt(s[2] * s[3]), s[3], math.sqrt(s[3] * 1.0)]
    np.testing.assert_allclose(p[:2, 2].numpy(), level0, rtol=1e-6)
    np.testing.assert_allclose(p[512:518, 2].numpy(), level1, rtol=1e-6)
    assert torch.equal(p[:, 2], p[:, 3])  # aspect ratio 1
    # every location repeats the same per-level sizes
    assert torch.equal(p[0:2, 2:], p[510:512, 2:]) and torch.equal(p[512:518, 2:], p[890:896, 2:])
    # not fixed: anchors carry the real sizes too
    assert torch.equal(SSDAnchorGenerator(**dict(FRONT, fixed_anchor_size=False)).anchors((128, 128)), p)


@pytest.mark.parametrize("hw", [(128, 160), (160, 128)])
def test_non_square_inputs(hw):
    """x is normalized by the width grid, y by the height grid (torchvision once had them swapped)."""
    H, W = hw
    gen = SSDAnchorGenerator(**FRONT)
    grids = gen.grid_sizes(hw)
    assert grids == [(H // 8, W // 8), (H // 16, W // 16)]
    a = gen.anchors(hw)
    n0 = grids[0][0] * grids[0][1] * 2
    assert a.shape[0] == n0 + grids[1][0] * grids[1][1] * 6
    fh, fw = grids[0]
    # first anchor, and anchor 1 of cell (y=3, x=7) of level 0
    np.testing.assert_allclose(a[0, :2].numpy(), [0.5 / fw, 0.5 / fh], rtol=1e-7)
    idx = (3 * fw + 7) * 2 + 1
    np.testing.assert_allclose(a[idx, :2].numpy(), [7.5 / fw, 3.5 / fh], rtol=1e-7)
    # first anchor of level 1, and the last anchor overall
    gh, gw = grids[1]
    np.testing.assert_allclose(a[n0, :2].numpy(), [0.5 / gw, 0.5 / gh], rtol=1e-7)
    np.testing.assert_allclose(a[-1, :2].numpy(), [(gw - 0.5) / gw, (gh - 0.5) / gh], rtol=1e-7)
    # centres in pixels sit at (x + 0.5) * stride for inputs divisible by the stride
    np.testing.assert_allclose((a[:n0, 0] * W).unique().numpy(), np.arange(fw) * 8 + 4, rtol=1e-6)
    np.testing.assert_allclose((a[:n0, 1] * H).unique().numpy(), np.arange(fh) * 8 + 4, rtol=1e-6)


def test_grid_rounds_up_like_mediapipe():
    gen = SSDAnchorGenerator(**FRONT)
    assert gen.grid_sizes((100, 130)) == [(13, 17), (7, 9)]
    fixed = SSDAnchorGenerator(**dict(FRONT, feature_map_height=[4, 2, 2, 2], feature_map_width=[5, 3, 3, 3]))
    assert fixed.grid_sizes((128, 128)) == [(4, 5), (2, 3)]
    assert fixed.anchors((128, 128)).shape == (4 * 5 * 2 + 2 * 3 * 6, 4)


def test_reduce_boxes_in_lowest_layer_and_aspect_ratios():
    gen = SSDAnchorGenerator(strides=[8, 16], min_scale=0.2, max_scale=0.8, aspect_ratios=[1.0, 2.0],
                             interpolated_scale_aspect_ratio=0.0, reduce_boxes_in_lowest_layer=True)
    assert gen.num_anchors_per_level() == [3, 2]
    p = gen.priors((64, 64))
    r2 = math.sqrt(2.0)
    np.testing.assert_allclose(p[:3, 2:].numpy(), [[0.1, 0.1], [0.2 * r2, 0.2 / r2], [0.2 / r2, 0.2 * r2]], rtol=1e-6)
    n0 = 8 * 8 * 3
    np.testing.assert_allclose(p[n0:n0 + 2, 2:].numpy(), [[0.8, 0.8], [0.8 * r2, 0.8 / r2]], rtol=1e-6)


def test_single_layer_uses_mean_scale():
    p = SSDAnchorGenerator(strides=[16], min_scale=0.2, max_scale=0.6, interpolated_scale_aspect_ratio=0).priors(64)
    np.testing.assert_allclose(p[0, 2:].numpy(), [0.4, 0.4], rtol=1e-6)


def test_explicit_sizes_in_pixels_stay_square_on_non_square_inputs():
    gen = SSDAnchorGenerator(strides=[8, 16, 16, 16], sizes=[[16, 24], [32, [48, 64], 96]], fixed_anchor_size=True)
    assert gen.num_anchors_per_level() == [2, 3]
    p = gen.priors((128, 160))
    np.testing.assert_allclose(p[:2, 2:].numpy(), [[16 / 160, 16 / 128], [24 / 160, 24 / 128]], rtol=1e-6)
    n0 = 16 * 20 * 2
    np.testing.assert_allclose(p[n0:n0 + 3, 2:].numpy(), [[32 / 160, 32 / 128], [48 / 160, 64 / 128],
                                                          [96 / 160, 96 / 128]], rtol=1e-6)
    assert torch.all(gen.anchors((128, 160))[:, 2:] == 1.0)


def test_default_input_size_option():
    gen = SSDAnchorGenerator(**dict(FRONT, input_size_height=128, input_size_width=128))
    assert torch.equal(gen.anchors(), gen.anchors((128, 128)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(strides=[8, 16], min_scale=0.1), "min_scale and max_scale"),
    (dict(FRONT, num_layers=3), "num_layers=3"),
    (dict(strides=[8, 16, 16], sizes=[[16]]), "2 feature levels"),
    (dict(strides=[8], sizes=[[[1, 2, 3]]]), r"sizes\[0\]"),
    (dict(strides=[], min_scale=0.1, max_scale=0.2), "strides"),
])
def test_bad_options_are_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SSDAnchorGenerator(**kwargs)


def test_missing_input_size_is_explained():
    with pytest.raises(ValueError, match="input_size"):
        SSDAnchorGenerator(**FRONT).anchors()
