"""``model.preprocess.resize: mediapipe``: MediaPipe's own pre-processing, and detections equal to MediaPipe Tasks'.

The reference detections in tests/fixtures/mediapipe_tasks/ were made by MediaPipe Tasks' FaceDetector on the
bundled demo photos (see tests/fixtures/README.md); no mediapipe is needed here.
"""
import json

import cv2
import numpy as np
import pytest

from blazekit.inference import load_image
from blazekit.models.build import build_detector
from blazekit.preprocess import letterbox, mediapipe_roi

from tests.conftest import FIXTURES, REPO

TASKS = FIXTURES / "mediapipe_tasks"
DEMO = REPO / "blazekit" / "data" / "demo" / "images"


def test_mediapipe_roi_is_padroi():
    assert mediapipe_roi(427, 640, (128, 128)) == (640.0, 640.0)  # landscape: grown vertically
    assert mediapipe_roi(600, 512, (192, 192)) == (600.0, 600.0)  # portrait: grown sideways
    assert mediapipe_roi(100, 100, (128, 256)) == (200.0, 100.0)  # wide input: the ROI takes its aspect ratio


def test_corner_mapping_samples_and_maps_back_known_values():
    """64x32 image into 128x128: ROI 64x64 around the image, so input pixel (u, v) samples the image at
    (u / 2, v / 2 - 16): corner-aligned (cv2.resize would sample u / 2 - 0.25), zero outside, and bilinear
    against the zero border on the rows either side of the image."""
    x, y = np.meshgrid(np.arange(64), np.arange(32))
    img = np.stack([3 * x, 5 * y, np.full_like(x, 200)], axis=-1).astype(np.uint8)
    out, info = letterbox(img, (128, 128), mode="mediapipe")
    assert (info.scale, info.pad_x, info.pad_y) == (2.0, 0.0, 32.0)
    u = np.arange(0, 126, 2)
    assert np.array_equal(out[40, u, 0], 3 * (u // 2))  # even u: exactly on image column u / 2
    assert np.array_equal(out[32 + 2 * np.arange(32), 10, 1], 5 * np.arange(32))  # even v: image row v / 2 - 16
    assert out[30, :, 2].max() == 0 and out[96, :, 2].max() == 0  # a whole pixel outside: the border
    assert np.array_equal(out[[31, 95], 10, 2], [100, 100])  # half a pixel outside: half border, half image
    assert np.array_equal(out[32:95:2, :126, 2], np.full((32, 126), 200))
    # detections come back through the same corner mapping: input centre = image centre, input corners = ROI's
    np.testing.assert_allclose(info.to_original(np.array([[64.0, 64.0, 0.0, 0.0, 128.0, 128.0]])),
                               [[32.0, 16.0, 0.0, -16.0, 64.0, 48.0]])


@pytest.mark.parametrize("h,w", [(427, 640), (601, 513), (37, 203), (113, 113)])
def test_mediapipe_warp_is_bilinear_without_antialiasing(h, w):
    """Against a plain float bilinear sampler (4 pixels, no area averaging) at the corner-mapped positions, within
    OpenCV's 1/32-pixel fixed point: what MediaPipe's warpPerspective computes."""
    img = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
    out, info = letterbox(img, (128, 128), mode="mediapipe")
    v, u = np.mgrid[0:128, 0:128].astype(np.float64)
    sx, sy = u / info.scale - info.pad_x / info.scale, v / info.scale - info.pad_y / info.scale
    pad = np.zeros((h + 2, w + 2, 3))
    pad[1:-1, 1:-1] = img
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]

    def at(yy, xx):
        return pad[np.clip(yy + 1, 0, h + 1), np.clip(xx + 1, 0, w + 1)]

    want = (at(y0, x0) * (1 - fx) * (1 - fy) + at(y0, x0 + 1) * fx * (1 - fy)
            + at(y0 + 1, x0) * (1 - fx) * fy + at(y0 + 1, x0 + 1) * fx * fy)
    diff = np.abs(out - want)
    # rounding, plus up to 1/64 pixel of position error along x and y (measured max 6.5, median <= 0.71)
    assert diff.max() <= 0.5 + 2 * 255 / 64 and np.median(diff) < 1.0
    if (h, w) == (427, 640):  # every position a multiple of 1/32 pixel: only the rounding remains
        assert diff.max() <= 0.5


def test_mediapipe_warp_equals_opencv_fixed_point_warp():
    """The fixed-point maps equal OpenCV's classic warpPerspective maps (as cv2.convertMaps builds them from the
    float coordinates), and cv2.remap on them gives the pixels MediaPipe's OpenCV gives."""
    from blazekit.preprocess import _fixed_point_maps

    h, w = 427, 640
    src = cv2.boxPoints(((w / 2, h / 2), (640.0, 640.0), 0.0)).astype(np.float32)
    dst = np.array([[0, 128], [0, 0], [128, 0], [128, 128]], np.float32)
    inv = cv2.invert(cv2.getPerspectiveTransform(src, dst), flags=cv2.DECOMP_LU)[1]
    xy, alpha = _fixed_point_maps(inv, 128, 128)
    v, u = np.mgrid[0:128, 0:128].astype(np.float32)
    ref_xy, ref_alpha = cv2.convertMaps(u * np.float32(5.0), v * np.float32(5.0) - np.float32(106.5), cv2.CV_16SC2)
    assert np.array_equal(xy, ref_xy) and np.array_equal(alpha, ref_alpha)


def test_config_option_reaches_predict_and_the_lean_preprocessor():
    from blazekit import config as C
    from blazekit.deploy.runtime import preprocessor_for
    from blazekit.preprocess import RESIZE_MODES, normalize

    assert set(RESIZE_MODES) == {"letterbox", "stretch", "mediapipe"}
    cfg = C.load(REPO / "configs" / "blazeface_front.yml",
                 overrides=["model.preprocess.resize=mediapipe"])
    det = build_detector(cfg)
    assert det.preprocess_cfg["resize"] == "mediapipe"
    img = load_image(DEMO / "sample1.jpg")
    x, infos = preprocessor_for(det)([img])
    boxed, info = letterbox(img, (128, 128), mode="mediapipe")
    assert np.array_equal(x[0], normalize(boxed)) and infos[0] == info
    assert (info.scale, info.pad_x, info.pad_y) == (0.2, 0.0, pytest.approx((640 - 427) / 2 * 0.2))


def _tasks_style(xyxy, h, w):
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    return np.clip(xywh, 0, [w, h, w, h])


def demo_image(name):
    """A bundled demo photo, or a crop of one named ``<photo>_<H>x<W>.png`` (sizes where OpenCV's per-block
    evaluation of the warp rounds differently from one evaluation per row: the fixtures hold both)."""
    if name.endswith(".png"):
        stem, size = name[:-4].rsplit("_", 1)
        h, w = (int(v) for v in size.split("x"))
        return load_image(DEMO / f"{stem}.jpg")[:h, :w]
    return load_image(DEMO / name)


@pytest.mark.parametrize("config,weights", [("configs/blazeface_front.yml", "mediapipe_short_range"),
                                            ("configs/blazeface_full_range.yml", "mediapipe_full_range")])
def test_predict_equals_mediapipe_tasks_on_demo_photos(config, weights):
    """Same faces as MediaPipe Tasks' FaceDetector on full-size photos: its integer boxes are blazekit's boxes
    truncated, keypoints within 1e-4 of the image size, scores within 1e-4 (measured: 0 px, 2.4e-7, 3.6e-7).
    With the letterbox mode the same photos differ by up to 0.15 in score and 7% of the image in keypoints."""
    ref = json.loads((TASKS / f"{weights[len('mediapipe_'):]}.json").read_text())
    det = build_detector(REPO / config, weights=weights)
    thr = ref["_meta"]["min_detection_confidence"]
    assert thr == det.postprocess.score_thr
    names = sorted(ref["images"])
    assert len(names) == len(list(DEMO.glob("*.jpg"))) + 2 == 12
    images = [demo_image(n) for n in names]
    worst_letterbox = 0.0
    for mode in ("mediapipe", "letterbox"):
        det.preprocess_cfg["resize"] = mode
        for name, img, got in zip(names, images, det.predict(images, score_thr=thr)):
            want = ref["images"][name]
            h, w = img.shape[:2]
            if mode == "letterbox":
                if len(got["scores"]) == len(want["scores"]) and len(got["scores"]):
                    kp = np.abs(got["keypoints"] / [w, h] - np.asarray(want["keypoints"])).max()
                    worst_letterbox = max(worst_letterbox, float(kp))
                continue
            assert len(got["scores"]) == len(want["scores"]), name
            if not len(got["scores"]):
                continue
            np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-4, err_msg=name)
            box = _tasks_style(got["boxes"], h, w) - np.asarray(want["boxes"])
            assert box.min() > -1e-3 and box.max() < 1 + 1e-3, f"{name}: {box}"
            np.testing.assert_allclose(got["keypoints"] / [w, h], want["keypoints"], atol=1e-4, err_msg=name)
    assert worst_letterbox > 0.01  # the letterbox mode is measurably another pre-processing
