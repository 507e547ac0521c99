"""WIDER protocol: hand-computed APs, the official MATLAB quirks, file format, and the mini set."""
import importlib.util
import warnings

import numpy as np
import pytest

from blazekit.evaluation.wider import (WiderFormatError, WiderGroundTruth, evaluate_wider, load_wider_gt,
                                       normalize_scores, read_prediction_file, read_predictions, voc_ap,
                                       write_predictions)

from tests.conftest import REPO


def _gt(boxes, keep):
    """One-image ground truth with the same gt_list for every setting."""
    return WiderGroundTruth(keys=[("0--Ev", "img")], boxes=[np.asarray(boxes, np.int32)],
                            keep={s: [np.asarray(keep, np.int64)] for s in ("easy", "medium", "hard")})


FACES = [[10, 10, 40, 40], [100, 10, 40, 40], [200, 10, 40, 40], [300, 10, 40, 40]]


def _row(face, score, dx=0.0):
    return [face[0] + dx, face[1], face[2], face[3], score]


def test_perfect_detector_ap_is_one():
    gt = _gt(FACES, [0, 1, 2, 3])
    preds = {("0--Ev", "img"): np.array([_row(f, s) for f, s in zip(FACES, [0.9, 0.8, 0.7, 0.6])])}
    res = evaluate_wider(preds, gt)
    assert res.ap == {"easy": 1.0, "medium": 1.0, "hard": 1.0}
    assert res.count_face["easy"] == 4


def test_known_partial_case():
    # sorted: TP (1.0), FP (0.5), TP (0.0) on 4 listed faces -> points (R .25, P 1), (R .5, P 2/3)
    gt = _gt(FACES, [0, 1, 2, 3])
    preds = {("0--Ev", "img"): np.array([_row(FACES[0], 1.0), [500, 500, 30, 30, 0.5], _row(FACES[1], 0.0)])}
    res = evaluate_wider(preds, gt)
    assert res.ap["easy"] == pytest.approx(0.25 * 1 + 0.25 * 2 / 3, abs=1e-12)
    prec, rec = res.pr_curves["easy"][:, 0], res.pr_curves["easy"][:, 1]
    assert rec[0] == 0.25 and prec[0] == 1.0  # threshold 0.999
    assert rec[-1] == 0.5 and prec[-1] == pytest.approx(2 / 3)  # threshold 0.0


def test_unsorted_rows_give_the_same_ap(tmp_path):
    gt = _gt(FACES, [0, 1, 2, 3])
    rows = np.array([_row(FACES[0], 0.9), [500, 500, 30, 30, 0.8], _row(FACES[1], 0.3), _row(FACES[2], 0.6),
                     _row(FACES[0], 0.5, dx=3)])
    ap_sorted = evaluate_wider({("0--Ev", "img"): rows[np.argsort(-rows[:, 4])]}, gt).ap
    ap_shuffled = evaluate_wider({("0--Ev", "img"): rows[[2, 4, 0, 3, 1]]}, gt).ap
    assert ap_sorted == ap_shuffled
    write_predictions({("0--Ev", "img"): rows[[2, 4, 0, 3, 1]]}, tmp_path)  # unsorted file on disk
    assert evaluate_wider(read_predictions(tmp_path, gt), gt).ap == ap_sorted


def test_match_to_unlisted_face_is_neither_tp_nor_fp():
    gt = _gt(FACES[:2], [0])  # face 1 is not in this setting's gt_list
    preds = {("0--Ev", "img"): np.array([_row(FACES[1], 1.0), _row(FACES[0], 0.0)])}
    res = evaluate_wider(preds, gt)
    assert res.ap["easy"] == 1.0  # would be 0.5 if the ignored match counted as a false positive
    assert np.isnan(res.pr_curves["easy"][0, 0])  # 0 proposals at the top threshold: 0/0, skipped by VOCap


def test_duplicate_on_a_recalled_face_is_a_false_positive():
    gt = _gt(FACES[:1], [0])
    preds = {("0--Ev", "img"): np.array([_row(FACES[0], 1.0), _row(FACES[0], 0.0, dx=1)])}
    prec = evaluate_wider(preds, gt).pr_curves["easy"][:, 0]
    assert prec[0] == 1.0 and prec[-1] == 0.5


def test_all_equal_scores_do_not_divide_by_zero_and_say_the_official_code_gives_0():
    with pytest.warns(UserWarning, match=r"all 3 prediction scores are equal \(0.7\); the official wider_eval.m "
                                         r"divides 0 by 0 .* reports AP 0"):
        assert np.array_equal(normalize_scores(np.array([0.7, 0.7, 0.7])), [1.0, 1.0, 1.0])
    gt = _gt(FACES, [0, 1, 2, 3])
    preds = {("0--Ev", "img"): np.array([_row(f, 0.7) for f in FACES[:2]])}
    with pytest.warns(UserWarning, match="reports AP 0"):
        res = evaluate_wider(preds, gt)
    assert res.ap["easy"] == 0.5
    with warnings.catch_warnings():  # distinct scores: no warning
        warnings.simplefilter("error")
        evaluate_wider({("0--Ev", "img"): np.array([_row(FACES[0], 0.7), _row(FACES[1], 0.6)])}, gt)


def test_normalization_is_global_single_precision_and_keeps_scores_above_one():
    n = normalize_scores(np.array([2.0, 4.0, 3.0]))
    assert np.array_equal(n, [0.0, 1.0, 0.5])  # the Python port's min=1 start would give 1/3, 1, 2/3
    n = normalize_scores(np.array([0.0, 0.3, 1.0]))
    assert n[1] == float(np.float32(0.3)) and n[1] != 0.3  # MATLAB single arithmetic


def test_matlab_int32_overlap_picks_first_face_over_half():
    # two faces both overlapping the prediction by >= 0.5: MATLAB's integer IoU (0/1) picks the first,
    # float IoU picks the better second one.
    gt = WiderGroundTruth(keys=[("e", "i")], boxes=[np.array([[0, 0, 99, 99], [10, 0, 99, 99]], np.int32)],
                          keep={"easy": [np.array([1])]})
    preds = {("e", "i"): np.array([[10.0, 0.0, 99.0, 99.0, 1.0]])}
    with pytest.warns(UserWarning, match="a single prediction score"):  # one prediction: the 0/0 of wider_eval.m
        assert evaluate_wider(preds, gt, iou_mode="matlab").ap["easy"] == 0.0  # matched face 0, not listed
    with pytest.warns(UserWarning, match="a single prediction score"):
        assert evaluate_wider(preds, gt, iou_mode="float").ap["easy"] == 1.0


def test_voc_ap_matches_hand_value():
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 0.5])) == pytest.approx(0.75)


def test_prediction_file_errors_and_missing_files(tmp_path):
    gt = WiderGroundTruth(keys=[("ev", "a"), ("ev", "b")], boxes=[np.array([[0, 0, 10, 10]], np.int32)] * 2,
                          keep={"easy": [np.array([0])] * 2})
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "a.txt").write_text("a\n2\n0 0 10 10 0.9\n1 1 10 oops 0.5\n")
    with pytest.raises(WiderFormatError, match=r"a\.txt:4: expected 'x y w h score'"):
        read_prediction_file(tmp_path / "ev" / "a.txt")
    (tmp_path / "ev" / "a.txt").write_text("a\n3\n0 0 10 10 0.9\n")
    with pytest.raises(WiderFormatError, match="header says 3 boxes"):
        read_prediction_file(tmp_path / "ev" / "a.txt")
    (tmp_path / "ev" / "a.txt").write_text("a\n1\n0 0 10 10 0.9\n")
    with pytest.warns(UserWarning, match=r"1 of 2 prediction files missing.*ev/b\.txt"):
        preds = read_predictions(tmp_path, gt)
    assert preds[("ev", "b")].shape == (0, 5)
    with pytest.warns(UserWarning, match="a single prediction score"):
        assert evaluate_wider(preds, gt).ap["easy"] == 0.5  # the missing image's face is a miss


def test_vectorized_equals_plain_loop_reference_on_random_sets():
    spec = importlib.util.spec_from_file_location("wider_eval_speed", REPO / "benchmarks" / "wider_eval_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(1)
    keys, boxes, keep = [], [], {"easy": [], "medium": [], "hard": []}
    for i in range(30):
        n = int(rng.integers(0, 12))
        xy = rng.integers(0, 300, size=(n, 2))
        wh = rng.integers(4, 60, size=(n, 2))
        boxes.append(np.concatenate([xy, wh], 1).astype(np.int32))
        keys.append((f"{i % 3}--Ev", f"img_{i}"))
        for j, s in enumerate(keep):
            keep[s].append(np.flatnonzero(rng.random(n) < 0.4 + 0.3 * j))
    gt = WiderGroundTruth(keys=keys, boxes=boxes, keep=keep)
    for seed in range(3):
        preds = bench.make_synthetic_predictions(gt, seed)
        preds[keys[0]] = np.zeros((0, 5))
        fast = evaluate_wider(preds, gt)
        ref = bench.reference_wider_eval(preds, gt)
        for s in keep:
            assert fast.ap[s] == pytest.approx(ref[s], abs=1e-12)


def test_mini_ground_truth_perfect_and_files_roundtrip(shared, tmp_path):
    gt = load_wider_gt(shared("data", "widerface_mini", "eval_tools", "ground_truth"))
    assert len(gt.keys) == 153 and gt.num_faces() == 4034
    assert gt.keys[0] == ("0--Parade", "0_Parade_Parade_0_194")
    rng = np.random.default_rng(0)
    preds = {k: np.concatenate([b.astype(float), rng.random((len(b), 1))], 1) for k, b in zip(gt.keys, gt.boxes)}
    res = evaluate_wider(preds, gt)
    # Ground truth as predictions: float IoU recalls every face; MATLAB's integer IoU sends a box in a
    # crowd to the *first* face it overlaps by >= 0.5, so even a perfect detector stays below 1.
    assert evaluate_wider(preds, gt, iou_mode="float").ap == pytest.approx({"easy": 1, "medium": 1, "hard": 1}, abs=1e-12)
    assert res.ap == pytest.approx({"easy": 0.9973466981132075, "medium": 0.9988460223537147,
                                    "hard": 0.9996385991433611}, abs=1e-12)
    assert write_predictions(preds, tmp_path) == 153
    assert evaluate_wider(read_predictions(tmp_path, gt), gt).ap == res.ap


def test_missing_gt_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="wider_face_val.mat"):
        load_wider_gt(tmp_path)
