"""Keypoint NME by inter-ocular distance over visible keypoints."""
import json

import numpy as np
import pytest

from blazekit.evaluation.keypoints import NMEAccumulator, common_nme, face_nme

GT = np.array([[30.0, 40.0], [70.0, 40.0], [50.0, 60.0], [50.0, 80.0], [0, 0], [0, 0]])  # eyes 40 px apart
VIS = np.array([True, True, True, True, False, False])


def test_face_nme_hand_value_and_invisible_points_ignored():
    pred = GT.copy()
    pred[2] += [4.0, 0.0]  # nose 4 px off -> mean error 1 px over 4 visible points
    pred[4:] = 1000.0  # invisible ears do not count
    assert face_nme(pred, GT, VIS) == pytest.approx(1.0 / 40.0)
    assert face_nme(pred, GT, np.array([False, True, True, True, False, False])) is None  # no inter-ocular distance


def test_accumulator_matches_by_iou_and_counts_faces():
    acc = NMEAccumulator()
    gt_boxes = np.array([[20, 20, 80, 90], [200, 20, 260, 90]], float)
    gt_k = np.stack([GT, GT + [180, 0]])
    vis = np.stack([VIS, VIS])
    pred_k = gt_k.copy()
    pred_k[0, 0] += [0, 8.0]  # 8 px on one of 4 points -> 2/40
    acc.add(gt_boxes, gt_k, vis, gt_boxes[:1] + 1, np.array([0.9]), pred_k[:1])
    r = acc.result()
    assert r["nme"] == pytest.approx(2.0 / 40.0)
    assert r["nme/faces_matched"] == 1 and r["nme/faces"] == 2


def test_common_nme_compares_two_models_on_the_faces_both_find():
    gt_boxes = np.array([[20, 20, 80, 90], [200, 20, 260, 90]], float)
    gt_k = np.stack([GT, GT + [180, 0]])
    vis = np.stack([VIS, VIS])
    finds_both, finds_first = NMEAccumulator(), NMEAccumulator()
    worse = gt_k.copy()
    worse[:, 0] += [0, 8.0]  # 2/40 on each face
    finds_both.add(gt_boxes, gt_k, vis, gt_boxes, np.array([0.9, 0.8]), worse)
    finds_first.add(gt_boxes, gt_k, vis, gt_boxes[:1], np.array([0.9]), gt_k[:1])
    finds_both.add(gt_boxes[:0], gt_k[:0], vis[:0], gt_boxes[:0], np.zeros(0), gt_k[:0])  # an image without faces
    r = common_nme(finds_both, finds_first)
    assert r == {"nme/common": pytest.approx(2.0 / 40.0), "nme/common_reference": 0.0, "nme/common_faces": 1.0}
    assert np.isnan(common_nme(finds_both, NMEAccumulator())["nme/common"])


def test_landmarks_mini_ground_truth_scores_zero(shared):
    ann = json.loads(shared("data", "landmarks_mini", "annotations.json").read_text())
    acc = NMEAccumulator()
    by_image = {}
    for a in ann["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for anns in by_image.values():
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns])
        k = np.array([np.reshape(a["keypoints"], (-1, 3)) for a in anns])
        acc.add(boxes, k[..., :2], k[..., 2] > 0, boxes, np.ones(len(boxes)), k[..., :2] + [1.0, 0.0])
    r = acc.result()
    assert r["nme/faces"] == 46 and r["nme/faces_matched"] == 46
    iod = [np.linalg.norm(np.subtract(np.reshape(a["keypoints"], (-1, 3))[0, :2], np.reshape(a["keypoints"], (-1, 3))[1, :2]))
           for anns in by_image.values() for a in anns]
    assert r["nme"] == pytest.approx(np.mean([1.0 / d for d in iod]))  # 1 px shift on every visible point
