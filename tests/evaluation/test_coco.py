"""COCO AP through pycocotools: same numbers as a direct call, crowd-sized maxDets, ignored faces."""
import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from blazekit.evaluation.coco import CocoDetections, CocoImage, evaluate_coco


def _random_set(seed=0, n_images=6):
    rng = np.random.default_rng(seed)
    images, dets = [], {}
    for i in range(n_images):
        n = int(rng.integers(1, 8))
        xy = rng.uniform(0, 400, (n, 2))
        wh = rng.uniform(8, 150, (n, 2))
        gt = np.concatenate([xy, xy + wh], 1)
        images.append(CocoImage(image_id=f"img{i}", width=640, height=480, boxes=gt))
        det = gt + rng.normal(0, 4, gt.shape)
        fp = np.concatenate([rng.uniform(0, 400, (2, 2)), rng.uniform(0, 400, (2, 2)) + 30], 1)
        boxes = np.concatenate([det, fp])
        dets[f"img{i}"] = CocoDetections(boxes=boxes, scores=rng.random(len(boxes)))
    return images, dets


def _direct_pycocotools(images, dets):
    """The textbook pycocotools call (default maxDets [1, 10, 100]) on the same data."""
    ids = {im.image_id: i + 1 for i, im in enumerate(images)}
    anns = []
    for im in images:
        for b in im.boxes:
            anns.append({"id": len(anns) + 1, "image_id": ids[im.image_id], "category_id": 1, "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
    res = [{"image_id": ids[k], "category_id": 1, "score": float(s), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
           for k, d in dets.items() for b, s in zip(d.boxes, d.scores)]
    gt = COCO()
    gt.dataset = {"images": [{"id": i} for i in ids.values()], "annotations": anns,
                  "categories": [{"id": 1, "name": "face"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(res), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_matches_direct_pycocotools_call():
    images, dets = _random_set()
    ours = evaluate_coco(images, dets, max_dets=(1, 10, 100))
    stats = _direct_pycocotools(images, dets)
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR", "ARs", "ARm", "ARl"]
    for name, ref in zip(names, stats):
        assert ours[name] == pytest.approx(ref, abs=1e-12), name
    assert 0.2 < ours["AP"] < 1.0


def test_default_max_dets_does_not_cap_crowds():
    xy = np.stack(np.meshgrid(np.arange(15) * 40.0, np.arange(10) * 40.0), -1).reshape(-1, 2)
    gt = np.concatenate([xy, xy + 30], 1)  # 150 faces
    images = [CocoImage("crowd", 640, 480, gt)]
    dets = {"crowd": CocoDetections(gt.copy(), np.linspace(1, 0.5, len(gt)))}
    assert evaluate_coco(images, dets)["AP"] == pytest.approx(1.0)
    capped = evaluate_coco(images, dets, max_dets=(1, 10, 100))
    assert capped["AR"] == pytest.approx(100 / 150)
    assert capped["AP"] < 0.7


def test_ignored_face_is_neither_tp_nor_fp():
    faces = np.array([[10, 10, 60, 60], [100, 10, 150, 60]], float)
    dets = {"a": CocoDetections(faces.copy(), np.array([0.5, 0.9]))}  # best score on face 1
    with_ignore = evaluate_coco([CocoImage("a", 200, 100, faces, ignore=np.array([False, True]))], dets)
    assert with_ignore["AP"] == pytest.approx(1.0)  # the detection on the ignored face is no FP
    without = evaluate_coco([CocoImage("a", 200, 100, faces[:1])], dets)
    assert without["AP"] < 0.6  # as an unlisted face it is a higher-scored false positive


def test_no_detections_and_bad_input():
    images = [CocoImage("a", 100, 100, np.array([[0, 0, 10, 10.0]]))]
    assert evaluate_coco(images, {})["AP"] == 0.0
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_coco(images, {"b": CocoDetections(np.zeros((1, 4)), np.ones(1))})
    with pytest.raises(ValueError, match="max_dets must hold three"):
        evaluate_coco(images, {}, max_dets=(1, 100))
