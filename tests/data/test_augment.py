"""Issue #10 "better boxes from the same data": zoom-out, data-anchor-sampling, mosaic, multi-scale batches,
and the detector trained on them with focal loss and the ATSS matcher (whose own tests are beside the loss's and
the matcher's, in tests/models/).

Geometry is checked against known structure: every face is a filled rectangle of its own colour and its 6
keypoints sit at fixed fractions of its box, so after any transform an unclipped face must still have its
colour under its box centre and its keypoints at the same fractions of the moved box (within 1 px).
"""
import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from blazekit.data import build_dataset, collate
from blazekit.data.mosaic import Mosaic
from blazekit.data.multiscale import MultiScaleCollate, build_collate
from blazekit.data.transforms import (Compose, DataAnchorSampling, Expand, HorizontalFlip, Letterbox, Normalize,
                                      build_transforms, place_sample)
from blazekit.losses import FocalMultiBoxLoss
from blazekit.matcher import ATSSMatcher
from blazekit.registry import DATASETS

#: where each keypoint sits inside its box (fractions of width, height); left/right pairs mirror each other
REL = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.5, 0.75], [0.1, 0.5], [0.9, 0.5]], np.float32)
SIZES = [(160, 200), (120, 90), (200, 200), (90, 160), (150, 150)]


def face_colour(image_index, face):
    return np.array([40 + 40 * image_index, 60 + 90 * face, 200], np.uint8)


def make_sample(index=0):
    """Image ``index`` of the synthetic set: 2 coloured faces at known places, keypoints at REL of the box."""
    h, w = SIZES[index % len(SIZES)]
    img = np.full((h, w, 3), 10, np.uint8)
    boxes = np.array([[0.1 * w, 0.15 * h, 0.45 * w, 0.6 * h], [0.55 * w, 0.3 * h, 0.9 * w, 0.85 * h]], np.float32)
    for f, (x1, y1, x2, y2) in enumerate(boxes.round().astype(int)):
        img[y1:y2, x1:x2] = face_colour(index, f)
    boxes = boxes.round()
    kpts = boxes[:, None, :2] + REL[None] * (boxes[:, None, 2:] - boxes[:, None, :2])
    return {"image": img, "boxes": boxes, "labels": np.zeros(2, np.int64), "keypoints": kpts.astype(np.float32),
            "keypoints_visible": np.ones((2, 6), bool), "ignore": np.zeros(2, bool), "image_id": index,
            "path": f"synthetic/{index}.png", "orig_size": (h, w),
            "extras": {"source": np.array([index, index]), "face": np.array([0, 1]),
                       "size": (boxes[:, 2:] - boxes[:, :2]).astype(np.float32)}}


class Synthetic(Dataset):
    num_keypoints = 6

    def __init__(self, n=len(SIZES), transforms=None):
        self.n, self.transforms = n, transforms

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        s = make_sample(i)
        return self.transforms(s) if self.transforms is not None else s


def unclipped(sample):
    """[N] True for faces scaled the same in x and y (their box was not cut by an edge)."""
    wh = sample["boxes"][:, 2:] - sample["boxes"][:, :2]
    ratio = wh / sample["extras"]["size"]
    return np.abs(ratio[:, 0] - ratio[:, 1]) < 0.02 * ratio.max(1)


def check_faces(sample, min_checked=1):
    """Unclipped faces: keypoints at REL of their box (1 px), visible, and their own colour under the box."""
    img = sample["image"]
    ok = unclipped(sample)
    assert ok.sum() >= min_checked, (sample["boxes"], sample["extras"])
    for f in np.flatnonzero(ok):
        b = sample["boxes"][f]
        want = b[:2] + REL * (b[2:] - b[:2])
        np.testing.assert_allclose(sample["keypoints"][f], want, atol=1.0)
        assert sample["keypoints_visible"][f].all()
        if (b[2:] - b[:2]).min() >= 4:
            cx, cy = ((b[:2] + b[2:]) / 2).astype(int)
            colour = face_colour(int(sample["extras"]["source"][f]), int(sample["extras"]["face"][f]))
            assert np.abs(img[cy, cx].astype(int) - colour.astype(int)).max() <= 3, (f, img[cy, cx], colour)
    h, w = img.shape[:2]
    assert (sample["boxes"][:, [0, 1]] >= 0).all() and (sample["boxes"][:, 2] <= w).all() \
        and (sample["boxes"][:, 3] <= h).all()
    assert len(sample["boxes"]) == len(sample["keypoints"]) == len(sample["extras"]["source"])
    return int(ok.sum())


def seeded(t, seed):
    return Compose([t], seed=seed)


def test_structure_check_catches_moved_keypoints_and_flip_keeps_it():
    """The check itself: it fails on a keypoint moved by 2 px; a horizontal flip (which swaps left/right
    identities, see test_transforms) keeps every keypoint at its fraction of the mirrored box."""
    s = make_sample(0)
    check_faces(s, min_checked=2)
    bad = dict(s, keypoints=s["keypoints"].copy())
    bad["keypoints"][0, 2, 0] += 2
    with pytest.raises(AssertionError):
        check_faces(bad)
    assert check_faces(seeded(HorizontalFlip(p=1.0), 0)(s)) == 2


@pytest.mark.parametrize("make", [lambda: Expand(ratio=(1.5, 3.0), p=0.7),
                                  lambda: DataAnchorSampling(p=0.7, input_size=(128, 128))])
def test_new_transforms_are_deterministic_per_seed(make):
    def run(seed):
        pipe = Compose([make()], seed=seed)
        return [pipe(make_sample(i)) for i in range(len(SIZES))]

    a, b, c = run(0), run(0), run(1)
    assert all(np.array_equal(x["image"], y["image"]) and np.array_equal(x["boxes"], y["boxes"]) for x, y in zip(a, b))
    assert any(x["image"].shape != z["image"].shape or not np.array_equal(x["image"], z["image"]) for x, z in zip(a, c))


# ----------------------------------------------------------------------------------------- zoom-out
def test_expand_moves_faces_and_keypoints_with_the_image():
    for seed in range(5):
        s = make_sample(0)
        out = seeded(Expand(ratio=(2.0, 3.0), p=1.0, fill=[1, 2, 3]), seed)(s)
        h, w = out["image"].shape[:2]
        assert 2 * 160 - 1 <= h <= 3 * 160 + 1 and 2 * 200 - 1 <= w <= 3 * 200 + 1
        assert check_faces(out) == 2  # nothing is cut: both faces kept whole, every keypoint still visible
        # the box moved by a whole-pixel offset and kept its size
        np.testing.assert_allclose(out["boxes"][:, 2:] - out["boxes"][:, :2], s["boxes"][:, 2:] - s["boxes"][:, :2])
        off = (out["boxes"][0, :2] - s["boxes"][0, :2]).astype(int)
        assert np.array_equal(out["image"][off[1]:off[1] + 160, off[0]:off[0] + 200], s["image"])
        outside = np.ones((h, w), bool)
        outside[off[1]:off[1] + 160, off[0]:off[0] + 200] = False
        assert (out["image"][outside] == [1, 2, 3]).all()


def test_expand_fill_mean_pad_value_and_probability():
    s = make_sample(1)
    mean = s["image"].reshape(-1, 3).mean(0).round()
    out = seeded(Expand(ratio=(4.0, 4.0), p=1.0, fill="mean"), 0)(s)
    assert np.abs(out["image"][0, 0].astype(int) - mean).max() <= 1 or np.abs(out["image"][-1, -1] - mean).max() <= 1
    out = seeded(Expand(ratio=(4.0, 4.0), p=1.0, pad_value=7), 0)(s)  # fill null: the model's pad value
    assert out["image"].shape[:2] == (480, 360)
    assert (out["image"] == 7).all(-1).mean() > 0.9
    assert seeded(Expand(p=0.0), 0)(s) is s
    with pytest.raises(ValueError, match="ratio"):
        Expand(ratio=(0.5, 2))
    with pytest.raises(ValueError, match="fill"):
        Expand(fill="median")
    t = build_transforms([{"type": "Expand", "ratio": [1, 2]}], pad_value=9)  # pad_value injected
    assert t.transforms[0].pad_value == 9


# ----------------------------------------------------------------------------------------- data-anchor-sampling
def test_data_anchor_sampling_gives_a_face_an_anchor_size():
    """One anchor size: the chosen face ends up between a/2 and 2a px in a window of exactly input_size."""
    sizes = []
    for seed in range(12):
        s = make_sample(2)
        s["ignore"] = np.array([True, False])  # only face 1 may be chosen
        out = seeded(DataAnchorSampling(anchor_sizes=[24], p=1.0, input_size=(96, 128)), seed)(s)
        assert out["image"].shape == (96, 128, 3)
        chosen = np.flatnonzero(out["extras"]["face"] == 1)
        assert len(chosen) == 1
        b = out["boxes"][chosen[0]]
        assert b[0] >= 0 and b[1] >= 0 and b[2] <= 128 and b[3] <= 96  # the face fits: it is inside the window
        size = float(np.sqrt(np.prod(b[2:] - b[:2])))
        assert 12 - 0.6 <= size <= 48 + 0.6, size
        sizes.append(size)
        check_faces(out)
    assert max(sizes) - min(sizes) > 8  # the target size is drawn, not fixed


def test_data_anchor_sampling_enlarges_by_at_most_one_anchor_step():
    """A 70 px face (nearest anchor 64) may become 16..256 px targets; never an anchor two steps above."""
    for seed in range(20):
        s = make_sample(2)  # 200x200: faces 70x90 and 70x110
        out = seeded(DataAnchorSampling(anchor_sizes=[16, 32, 64, 128, 256], p=1.0, input_size=(512, 512)), seed)(s)
        scale = (out["boxes"][:, 2] - out["boxes"][:, 0]).max() / 70
        assert scale <= 256 * 2 / np.sqrt(70 * 90) + 1e-3
        assert out["image"].shape == (512, 512, 3)
        check_faces(out)


def test_data_anchor_sampling_window_for_a_face_on_the_image_edge():
    """float32 face edges a hair past the float64 image edge (facemask image 5 in training): numpy compares a
    float32 scalar with a Python float at float32 precision, which once gave ``uniform`` an empty range."""
    t = seeded(DataAnchorSampling(p=1.0), 0).transforms[0]
    for f1, f2, extent in [(308.93134, 339.485, 339.48498453204195), (721.62476, 738.23505, 738.2350372915777)]:
        x0 = t._window_start(np.float32(f1), np.float32(f2), extent, 128)
        assert x0 <= f1 and x0 + 128 >= float(np.float32(f2)) - 1  # the window holds the face


def test_data_anchor_sampling_without_faces_is_a_no_op():
    s = make_sample(0)
    s["ignore"] = np.array([True, True])
    assert seeded(DataAnchorSampling(p=1.0), 0)(s) is s
    with pytest.raises(ValueError, match="anchor_sizes"):
        DataAnchorSampling(anchor_sizes=[])


def test_place_sample_clips_cut_faces_and_hides_their_keypoints():
    s = make_sample(0)  # face 0 spans x 20..90 of a 200 px image
    out = place_sample(s, 1.0, -40, 0, 100, 160, (0, 0, 0))  # window x 40..140: face 0's centre (55) inside
    assert out["boxes"][0].tolist() == [0, 24, 50, 96]
    # keypoint x 41, 69, 55, 55, 27, 83 -> 1, 29, 15, 15, -13, 43: only the right ear left the window
    assert out["keypoints_visible"][0].tolist() == [True, True, True, True, False, True]
    np.testing.assert_allclose(out["keypoints"][0, 4], [-13, 0.5 * 72 + 24])  # coordinates are kept
    out = place_sample(s, 1.0, -60, 0, 100, 160, (0, 0, 0))  # face 0's centre (55) outside: removed
    assert out["extras"]["face"].tolist() == [1]


# ----------------------------------------------------------------------------------------- mosaic
def mosaic_pipeline(seed=0):
    return Compose([Letterbox(input_size=(256, 256))], seed=seed)


def test_mosaic_tiles_four_samples_with_consistent_faces():
    m = Mosaic(Synthetic(), p=1.0, size=200, crop=False, transforms=Compose([], seed=0))
    checked = 0
    for i in range(len(m)):
        out = m[i]
        assert out["image"].shape == (400, 400, 3) and out["image_id"] == i
        checked += check_faces(out, min_checked=0)
        sources = set(out["extras"]["source"].tolist())
        assert len(sources) >= 3 and i in sources  # faces of (nearly) all four tiles, the indexed one among them
    assert checked >= 2 * len(m)  # whole faces were checked, not only clipped ones


def test_mosaic_crop_is_the_centre_of_the_canvas():
    full = Mosaic(Synthetic(), p=1.0, size=200, crop=False, transforms=Compose([], seed=0))
    cropped = Mosaic(Synthetic(), p=1.0, size=200, crop=True, transforms=Compose([], seed=0))
    for i in range(len(full)):
        a, b = full[i], cropped[i]  # the same draws: the crop adds none
        assert np.array_equal(b["image"], a["image"][100:300, 100:300])
        centre = (a["boxes"][:, :2] + a["boxes"][:, 2:]) / 2
        inside = ((centre > 100) & (centre < 300)).all(1)
        np.testing.assert_allclose(b["boxes"], (a["boxes"][inside] - 100).clip(0, 200))
        np.testing.assert_allclose(b["keypoints"], a["keypoints"][inside] - 100)
        check_faces(b, min_checked=0)


def test_mosaic_deterministic_per_seed_and_via_trainer_seeding():
    from blazekit.data.sampler import SeededDataset

    def run(seed):
        pipe = mosaic_pipeline(seed)
        m = Mosaic(Synthetic(), p=1.0, size=128, transforms=pipe)
        return [m[i] for i in range(len(m))]

    a, b, c = run(3), run(3), run(4)
    for x, y in zip(a, b):
        assert np.array_equal(x["image"], y["image"]) and np.array_equal(x["boxes"], y["boxes"])
    assert any(not np.array_equal(x["image"], z["image"]) for x, z in zip(a, c))

    pipe = mosaic_pipeline(0)
    m = Mosaic(Synthetic(), p=0.5, size=128, transforms=pipe)
    sd = SeededDataset(m, seed=5, transforms=pipe)
    first = [sd[(0, i)] for i in range(len(m))]
    again = [sd[(0, i)] for i in reversed(range(len(m)))][::-1]  # other order: same samples
    for x, y in zip(first, again):
        assert np.array_equal(x["image"], y["image"]) and np.array_equal(x["extras"]["source"], y["extras"]["source"])
    later = [sd[(1, i)] for i in range(len(m))]
    assert any(not np.array_equal(x["image"], y["image"]) for x, y in zip(first, later))


def test_mosaic_probability_and_checks():
    m = Mosaic(Synthetic(), p=0.0, transforms=mosaic_pipeline())
    out = m[2]
    assert out["extras"]["source"].tolist() == [2, 2] and out["image"].shape == (256, 256, 3)
    with pytest.raises(ValueError, match="raw samples"):
        Mosaic(Synthetic(transforms=Compose([])))
    with pytest.raises(ValueError, match="p must be"):
        Mosaic(Synthetic(), p=2)


def test_mosaic_from_config_on_the_demo_set():
    from blazekit.data import DEMO_ANNOTATIONS

    assert "Mosaic" in DATASETS
    pipe = build_transforms([{"type": "HorizontalFlip"}, {"type": "Letterbox"}, {"type": "Normalize"}],
                            input_size=(128, 128))
    ds = build_dataset({"type": "Mosaic", "p": 1.0, "size": 320,
                        "dataset": {"type": "CocoFaces", "ann_file": str(DEMO_ANNOTATIONS), "split": "train"}},
                       transforms=pipe)
    assert ds.num_keypoints == 6 and len(ds) == 7 and ds.summary.images == 7
    pipe.reseed(0)
    images, targets = collate([ds[i] for i in range(3)])
    assert images.shape == (3, 3, 128, 128)
    assert sum(len(t["boxes"]) for t in targets) > 3


# ----------------------------------------------------------------------------------------- multi-scale
def batch_of(n=4, size=128):
    pipe = Compose([Letterbox(input_size=(size, size)), Normalize()])
    return [pipe(make_sample(i)) for i in range(n)]


def test_multi_scale_batches_take_sizes_from_the_list():
    batch = batch_of()
    ref_images, ref_targets = collate(batch)
    coll = MultiScaleCollate(sizes=[64, 96, [128, 96], 128])
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        images, targets = coll(batch)
        h, w = images.shape[-2:]
        seen.add((h, w))
        assert images.shape[:2] == (4, 3)
        for t, r in zip(targets, ref_targets):
            np.testing.assert_allclose(t["boxes"], r["boxes"] * torch.tensor([w / 128, h / 128] * 2), rtol=1e-6)
            np.testing.assert_allclose(t["keypoints"], r["keypoints"] * torch.tensor([w / 128, h / 128]), rtol=1e-6)
            if h == w:  # letterbox info still maps back to the original image
                orig = t["letterbox"].to_original(t["boxes"].numpy())
                np.testing.assert_allclose(orig, make_sample(t["image_id"])["boxes"], atol=1e-3)
            else:
                assert t["letterbox"] is None
    assert seen == {(64, 64), (96, 96), (128, 96), (128, 128)}
    # the pixels were resized too: a face's colour is still under its box centre
    images, targets = MultiScaleCollate(sizes=[64])(batch)
    cx, cy = ((targets[0]["boxes"][1, :2] + targets[0]["boxes"][1, 2:]) / 2).long().tolist()
    rgb = ((images[0, :, cy, cx] + 1) * 127.5).round()
    assert torch.allclose(rgb, torch.tensor(face_colour(0, 1), dtype=torch.float32), atol=3)


def test_multi_scale_is_deterministic_and_checks_sizes():
    batch = batch_of(2)
    coll = build_collate({"sizes": [64, 96, 128]})
    torch.manual_seed(1)
    a = [coll(batch)[0].shape[-1] for _ in range(10)]
    torch.manual_seed(1)
    assert [coll(batch)[0].shape[-1] for _ in range(10)] == a
    assert build_collate(None) is collate
    with pytest.raises(ValueError, match="divisible by 16"):
        MultiScaleCollate(sizes=[100])
    from blazekit.config import ConfigError

    with pytest.raises(ConfigError, match="data.train.multi_scale: needs 'sizes'"):
        build_collate({"size": [128]})
    with pytest.raises(ConfigError, match="data.train.multi_scale: .*divisible by 8"):
        build_collate({"sizes": [100], "stride": 8})


def test_multi_scale_batches_train_the_detector():
    """The detector's loss runs at every size of the list (anchors are made for the batch's size)."""
    from blazekit import config
    from blazekit.models.build import build_detector

    cfg = config.load("configs/_base_/models/blazeface_front.yml")
    model = build_detector(cfg)
    batch = batch_of(2)
    for size in (64, 96, 128):
        images, targets = MultiScaleCollate(sizes=[size])(batch)
        losses = model(images, targets)
        assert torch.isfinite(losses["loss"]) and losses["num_pos"] > 0


# ----------------------------------------------------------------------------------------- focal loss and ATSS matcher
def test_atss_and_focal_train_the_detector_from_config():
    from blazekit import config
    from blazekit.models.build import build_detector

    cfg = config.load("configs/_base_/models/blazeface_front.yml")
    cfg["model"]["matcher"] = {"type": "ATSSMatcher", "topk": 9}
    cfg["model"]["loss"] = {"type": "FocalMultiBoxLoss", "alpha": 0.25, "gamma": 2.0}
    model = build_detector(cfg)
    assert isinstance(model.matcher, ATSSMatcher) and isinstance(model.loss, FocalMultiBoxLoss)
    images, targets = collate(batch_of(2))
    losses = model(images, targets)
    assert torch.isfinite(losses["loss"]) and losses["num_pos"] > 0
    losses["loss"].backward()
