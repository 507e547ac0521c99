"""Transform geometry: boxes, keypoints and visibility stay consistent with the pixels through every transform.

The synthetic sample paints every keypoint as a uniquely coloured dot and every face box as a filled rectangle
of its own grey level, so a transform is checked against what actually happened to the image.
"""
import pickle

import numpy as np
import pytest
import torch

from blazekit.data.transforms import (Compose, HorizontalFlip, Letterbox, Normalize, PhotometricJitter,
                                      RandomFaceCrop, Resize, build_transforms)
from blazekit.registry import BuildError

H, W = 160, 200


def painted_sample():
    img = np.zeros((H, W, 3), np.uint8)
    boxes = np.array([[20, 30, 80, 100], [120, 40, 180, 110]], np.float32)
    kpts = np.zeros((2, 6, 2), np.float32)
    for f, (x1, y1, x2, y2) in enumerate(boxes):
        img[int(y1):int(y2), int(x1):int(x2)] = 40 + 30 * f
        cx, cy, bw = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1
        # right eye (image left), left eye, nose, mouth, right ear, left ear
        kpts[f] = [[cx - bw / 5, cy - 10], [cx + bw / 5, cy - 10], [cx, cy + 2], [cx, cy + 18],
                   [x1 + 3, cy], [x2 - 3, cy]]
    colours = np.zeros((2, 6, 3), np.uint8)
    for f in range(2):
        for k in range(6):
            colours[f, k] = (255, 20 + 35 * k, 100 + 120 * f)
            x, y = kpts[f, k].round().astype(int)
            img[y - 2:y + 3, x - 2:x + 3] = colours[f, k]
    vis = np.ones((2, 6), bool)
    vis[1, 4] = False  # one ear not visible from the start
    sample = {"image": img, "boxes": boxes, "labels": np.zeros(2, np.int64), "keypoints": kpts,
              "keypoints_visible": vis, "ignore": np.array([False, True]), "image_id": 1, "path": "x.jpg",
              "orig_size": (H, W), "extras": {"blur": np.array([0, 2])}}
    return sample, colours


def colour_at(img, xy):
    x, y = np.asarray(xy).round().astype(int)
    return img[y, x]


def assert_keypoints_on_their_dots(sample, expected_colours):
    """Every visible keypoint sits on the dot of the colour it should carry."""
    img = sample["image"]
    n = 0
    for f in range(len(sample["boxes"])):
        for k in range(sample["keypoints"].shape[1]):
            if sample["keypoints_visible"][f, k]:
                got = colour_at(img, sample["keypoints"][f, k]).astype(int)
                assert np.abs(got - expected_colours[f, k].astype(int)).max() <= 25, (f, k, got, expected_colours[f, k])
                n += 1
    return n


def assert_boxes_on_their_rectangles(sample, grey_levels):
    for box, g in zip(sample["boxes"], grey_levels):
        cx, cy = (box[:2] + box[2:]) / 2
        x = box[0] + 0.25 * (box[2] - box[0])  # left of the centre: avoid the painted nose/mouth dots
        assert abs(int(colour_at(sample["image"], (x, cy))[0]) - g) <= 6, (box, g)
        inner = box + np.array([1.5, 1.5, -1.5, -1.5])
        assert colour_at(sample["image"], inner[:2])[1] >= g - 6


def test_painted_sample_is_consistent():
    s, colours = painted_sample()
    assert assert_keypoints_on_their_dots(s, colours) == 11
    assert_boxes_on_their_rectangles(s, [40, 70])


def test_horizontal_flip_swaps_left_right_identities():
    s, colours = painted_sample()
    out = HorizontalFlip(p=1.0)(s)
    perm = [1, 0, 2, 3, 5, 4]
    np.testing.assert_allclose(out["boxes"], [[W - 80, 30, W - 20, 100], [W - 180, 40, W - 120, 110]])
    # the keypoint now called "right eye" is the mirrored old "left eye" and sits on its dot
    np.testing.assert_allclose(out["keypoints"][:, 0, 0], W - s["keypoints"][:, 1, 0])
    assert out["keypoints_visible"][1].tolist() == [True, True, True, True, True, False]
    assert assert_keypoints_on_their_dots(out, colours[:, perm]) == 11
    assert_boxes_on_their_rectangles(out, [40, 70])
    # after the flip the subject's right eye is again on the image left of the left eye
    assert (out["keypoints"][:, 0, 0] < out["keypoints"][:, 1, 0]).all()
    twice = HorizontalFlip(p=1.0)(out)
    np.testing.assert_allclose(twice["keypoints"], s["keypoints"])
    assert np.array_equal(twice["image"], s["image"])


def test_flip_permutation_is_configurable_and_checked():
    s, colours = painted_sample()
    out = HorizontalFlip(p=1.0, flip_permutation=[0, 1, 2, 3, 4, 5])(s)
    np.testing.assert_allclose(out["keypoints"][:, 0, 0], W - s["keypoints"][:, 0, 0])
    with pytest.raises(ValueError, match="not a permutation"):
        HorizontalFlip(flip_permutation=[0, 0, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="no default flip_permutation for 7"):
        HorizontalFlip(num_keypoints=7)


def test_face_crop_keeps_faces_and_hides_keypoints_that_leave():
    s, colours = painted_sample()
    crop = RandomFaceCrop(scales=(0.5, 0.5))
    crop.rng = np.random.default_rng(3)
    seen_partial = False
    for seed in range(40):
        crop.rng = np.random.default_rng(seed)
        out = crop(s)
        h, w = out["image"].shape[:2]
        assert (h, w) == (80, 80)
        assert len(out["boxes"]) >= 1  # the non-ignored face (face 0) always survives
        assert (out["boxes"] >= 0).all() and (out["boxes"][:, 2] <= w).all() and (out["boxes"][:, 3] <= h).all()
        assert out["keypoints"].shape == (len(out["boxes"]), 6, 2)  # keypoints never dropped per face
        assert len(out["extras"]["blur"]) == len(out["boxes"]) == len(out["ignore"])
        k, v = out["keypoints"], out["keypoints_visible"]
        inside = (k[..., 0] >= 0) & (k[..., 0] < w) & (k[..., 1] >= 0) & (k[..., 1] < h)
        assert not (v & ~inside).any()
        seen_partial |= bool((~inside).any())
        kept = [0] if len(out["boxes"]) == 1 and out["ignore"].tolist() == [False] else list(range(len(out["boxes"])))
        assert_keypoints_on_their_dots(out, colours[kept])
    assert seen_partial  # some crops cut faces: their outside keypoints turned invisible


def test_face_crop_geometry_exact():
    from blazekit.data.transforms import crop_sample

    s, colours = painted_sample()
    out = crop_sample(s, 30, 35, 100, 90)
    np.testing.assert_allclose(out["boxes"], [[0, 0, 50, 65], [90, 5, 100, 75]])
    np.testing.assert_allclose(out["keypoints"], s["keypoints"] - [30, 35])
    assert out["keypoints_visible"][0, 4] == bool(s["keypoints"][0, 4, 0] >= 30)
    assert_keypoints_on_their_dots(out, colours)


def test_letterbox_maps_back_to_original():
    s, colours = painted_sample()
    out = Letterbox(input_size=(128, 128))(s)
    info = out["letterbox"]
    assert out["image"].shape == (128, 128, 3)
    assert info.scale == pytest.approx(128 / 200) and info.pad_x == 0 and info.pad_y == 13  # 160 * 0.64 = 102 rows, (128 - 102) / 2
    np.testing.assert_allclose(info.to_original(out["boxes"]), s["boxes"], atol=1e-4)
    np.testing.assert_allclose(info.to_original(out["keypoints"].reshape(2, -1)).reshape(2, 6, 2), s["keypoints"], atol=1e-4)
    assert_boxes_on_their_rectangles(out, [40, 70])
    # dots shrink to ~3px; check the mean colour in a small window instead of one pixel
    for f, k in [(0, 0), (1, 5)]:
        x, y = out["keypoints"][f, k].round().astype(int)
        assert out["image"][y - 1:y + 2, x - 1:x + 2, 0].mean() > 150


def test_resize_stretches_boxes():
    s, _ = painted_sample()
    out = Resize(input_size=(80, 100))(s)  # same aspect ratio: letterbox info is exact
    np.testing.assert_allclose(out["boxes"], s["boxes"] / 2)
    assert out["letterbox"].scale == 0.5
    assert Resize(input_size=(128, 128))(s)["letterbox"] is None


def test_normalize_matches_model_range():
    s, _ = painted_sample()
    out = Normalize()(Letterbox(input_size=(128, 128))(s))
    assert isinstance(out["image"], torch.Tensor) and out["image"].shape == (3, 128, 128)
    assert out["image"].dtype == torch.float32
    assert out["image"].min() == -1.0 and out["image"].max() == 1.0  # padding 0 -> -1, dot red 255 -> 1
    z = Normalize("zero_one")(s)["image"]
    assert z.max() == 1.0 and z.min() == 0.0
    with pytest.raises(ValueError, match="unknown normalization"):
        Normalize("imagenet")


def test_photometric_jitter_changes_pixels_not_geometry():
    s, _ = painted_sample()
    t = PhotometricJitter(p=1.0)
    t.rng = np.random.default_rng(0)
    out = t(s)
    assert out["image"].dtype == np.uint8 and out["image"].shape == s["image"].shape
    assert np.abs(out["image"].astype(int) - s["image"]).mean() > 3
    assert out["boxes"] is s["boxes"] and out["keypoints"] is s["keypoints"]


def test_build_from_yaml_with_albumentations_by_name():
    cfg = [{"type": "RandomFaceCrop", "scales": [0.6, 1.0]}, {"type": "HorizontalFlip", "p": 1.0},
           {"type": "Affine", "translate_px": {"x": 10, "y": -6}, "p": 1.0}, {"type": "ToGray", "p": 1.0},
           {"type": "Letterbox"}, {"type": "Normalize"}]
    t = build_transforms(cfg, input_size=[96, 128], normalize="minus_one_one", num_keypoints=6)
    names = [type(x).__name__ for x in t.transforms]
    assert names == ["RandomFaceCrop", "HorizontalFlip", "Albumentations", "Albumentations", "Letterbox", "Normalize"]
    assert t.transforms[1].flip_permutation == [1, 0, 2, 3, 5, 4]
    assert t.transforms[4].input_size == [96, 128]
    out = t(painted_sample()[0])
    assert out["image"].shape == (3, 96, 128)


def test_albumentations_geometric_keeps_keypoints_consistent():
    s, colours = painted_sample()
    t = build_transforms([{"type": "Affine", "translate_px": {"x": 15, "y": -10}, "p": 1.0}])
    out = t(s)
    np.testing.assert_allclose(out["boxes"], s["boxes"] + [15, -10, 15, -10], atol=0.5)
    np.testing.assert_allclose(out["keypoints"], s["keypoints"] + [15, -10], atol=0.5)
    assert assert_keypoints_on_their_dots(out, colours) == 11
    # pushed far right: face 1 leaves the image; face 0's keypoints are kept, the outside ones hidden
    far = build_transforms([{"type": "Affine", "translate_px": {"x": 130, "y": 0}, "p": 1.0}])(painted_sample()[0])
    assert len(far["boxes"]) == 1 and far["keypoints"].shape == (1, 6, 2)
    assert far["keypoints_visible"][0].tolist() == [True, True, True, True, True, False]
    assert far["extras"]["blur"].tolist() == [0]


def test_unknown_transform_names_registry_and_albumentations():
    from blazekit.registry import RegistryError

    with pytest.raises(RegistryError, match="HorizontalFlip"):
        build_transforms([{"type": "HorizontalFlipp"}])
    with pytest.raises(BuildError, match=r"transforms\[0\]: RandomFaceCrop does not accept 'scale'"):
        build_transforms([{"type": "RandomFaceCrop", "scale": [0.3, 1]}])


def test_pipeline_seeded_and_picklable():
    cfg = [{"type": "RandomFaceCrop"}, {"type": "HorizontalFlip"}, {"type": "PhotometricJitter"},
           {"type": "Rotate", "limit": 10}, {"type": "Letterbox"}, {"type": "Normalize"}]
    a = build_transforms(cfg)
    b = pickle.loads(pickle.dumps(a))
    a.reseed(7)
    b.reseed(7)
    for _ in range(5):
        oa, ob = a(painted_sample()[0]), b(painted_sample()[0])
        assert torch.equal(oa["image"], ob["image"])
        np.testing.assert_array_equal(oa["keypoints"], ob["keypoints"])
    a.reseed(8)
    outs = {a(painted_sample()[0])["image"].sum().item() for _ in range(4)}
    assert len(outs) > 1  # different draws per call
