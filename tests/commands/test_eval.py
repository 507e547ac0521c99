"""End to end: tools/eval.py on WIDER FACE mini from the shipped MediaPipe checkpoint, and tools/wider_eval.py."""
import json
import sys

import numpy as np
import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "tools"))


def _config(tmp_path, shared_root):
    cfg = tmp_path / "mini_eval.yml"
    cfg.write_text("_base_: [_base_/models/blazeface_front.yml, _base_/datasets/widerface_mini_eval.yml]\n")
    return cfg


def test_eval_tool_on_widerface_mini_subset(shared, tmp_path, monkeypatch):
    root = shared("data", "widerface_mini")
    monkeypatch.setenv("BLAZEKIT_SHARED", str(root.parent.parent))
    import eval as eval_tool  # tools/eval.py
    from blazekit.engine.evaluator import subset_ground_truth
    from blazekit.evaluation.wider import evaluate_wider, load_wider_gt, read_predictions

    out = tmp_path / "results.json"
    preds_dir = tmp_path / "preds"
    rc = eval_tool.main([str(_config(tmp_path, root)), "--weights", "mediapipe_short_range", "--max-images", "6",
                         "--quiet", "--out", str(out), "--save-preds", str(preds_dir),
                         "--set", "eval.test_scale=[512, 512]"])
    assert rc == 0
    res = json.loads(out.read_text())
    for key in ("coco/AP", "coco/AP50", "coco/AR", "wider/easy", "wider/medium", "wider/hard"):
        assert 0.0 <= res[key] <= 1.0, key
    assert res["settings/score_thr"] == 0.02 and res["settings/test_scale"] == "512x512"
    assert res["wider/easy"] > 0.3  # MediaPipe short-range finds the large faces at 512 px
    assert res["wider/easy"] >= res["wider/medium"] >= res["wider/hard"]
    assert (tmp_path / "results_wider_pr.png").stat().st_size > 1000
    # the official files written by --save-preds give the same numbers through the file reader
    files = sorted(preds_dir.glob("*/*.txt"))
    assert len(files) == 6
    gt = load_wider_gt(root / "eval_tools" / "ground_truth")
    gt = subset_ground_truth(gt, [(f.parent.name, f.stem) for f in files])
    again = evaluate_wider(read_predictions(preds_dir, gt), gt).ap
    assert again == pytest.approx({s: res[f"wider/{s}"] for s in again}, abs=1e-12)


def test_wider_eval_tool_writes_json_and_plot(shared, tmp_path, capsys):
    import wider_eval

    from blazekit.evaluation.wider import load_wider_gt, write_predictions

    gt_dir = shared("data", "widerface_mini", "eval_tools", "ground_truth")
    gt = load_wider_gt(gt_dir)
    rng = np.random.default_rng(0)
    preds = {k: np.concatenate([b + rng.normal(0, 1, b.shape), rng.random((len(b), 1))], 1)
             for k, b in list(zip(gt.keys, gt.boxes))[:-1]}  # last image missing -> warning, counted as misses
    write_predictions(preds, tmp_path / "pred")
    with pytest.warns(UserWarning, match="1 of 153 prediction files missing"):
        assert wider_eval.main(["--pred", str(tmp_path / "pred"), "--gt", str(gt_dir),
                                "--out", str(tmp_path / "r.json")]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert set(r) == {"easy", "medium", "hard"} and all(0.5 < v < 1.0 for v in r.values())
    assert (tmp_path / "wider_pr.png").stat().st_size > 1000
    assert "Easy    AP" in capsys.readouterr().out


def test_evaluate_reports_nme_on_landmarks_mini(shared, tmp_path, monkeypatch):
    ann = shared("data", "landmarks_mini", "annotations.json")
    import blazekit
    from blazekit import config as cfglib
    from blazekit.engine.evaluator import evaluate

    cfg_path = tmp_path / "lm.yml"
    cfg_path.write_text("_base_: [_base_/models/blazeface_front.yml]\n"
                        f"data: {{val: {{dataset: {{type: CocoFaces, ann_file: '{ann}'}}}}}}\n"
                        "eval: {score_thr: 0.02}\n")
    cfg = cfglib.load(cfg_path)
    det = blazekit.build_detector(cfg, weights="mediapipe_short_range")
    det.train()
    res = evaluate(det, cfg, progress=False)
    assert det.training  # mode restored for the trainer
    assert res["nme/faces"] == 46 and 5 <= res["nme/faces_matched"] <= 46
    assert 0.0 < res["nme"] < 0.5
    assert 0.0 < res["coco/AP50"] <= 1.0 and "wider/easy" not in res


def test_eval_tool_on_demo_prints_settings_draws_and_saves_preds(tmp_path, monkeypatch, capsys):
    """Any dataset (not only WIDER): settings printed, official prediction files, drawn PNGs."""
    import eval as eval_tool

    from blazekit.evaluation.wider import read_prediction_file
    from blazekit.inference import load_image

    monkeypatch.chdir(REPO)
    rc = eval_tool.main(["configs/quickstart.yml", "--weights", "mediapipe_short_range", "--quiet",
                         "--save-preds", str(tmp_path / "preds"), "--vis", str(tmp_path / "vis"), "--num-vis", "2",
                         "--set", "eval.test_scale=[256, 256]"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "score_thr 0.02, test scale 256x256" in out and "2 drawn image(s)" in out
    files = sorted((tmp_path / "preds" / "images").glob("*.txt"))
    assert [f.stem for f in files] == ["grace_hopper", "sample4", "sample6"]  # the 3 val photos
    lines = files[0].read_text().splitlines()
    assert lines[0] == "grace_hopper" and int(lines[1]) == len(lines) - 2 >= 1
    rows = read_prediction_file(files[0])
    assert rows[:, 4].max() > 0.8 and (rows[:, 4] >= 0.02).all()  # x y w h score, kept down to eval.score_thr
    x, y, w, h = rows[rows[:, 4].argmax(), :4]
    assert 140 < x + w / 2 < 400 and 120 < y + h / 2 < 380  # Grace Hopper's face (gt 166,143 200x200)
    pngs = sorted((tmp_path / "vis").glob("*.png"))
    assert len(pngs) == 2 and pngs[0].name == "000_grace_hopper.png"
    img = load_image(pngs[0])
    green = (img == (0, 220, 0)).all(-1)  # ground truth (x 166..366, y 143..343)
    red = (img == (255, 40, 40)).all(-1)  # detections above vis_score_thr
    ys, xs = np.nonzero(green)
    assert green.sum() > 100 and 160 <= xs.min() and xs.max() <= 372 and 137 <= ys.min() and ys.max() <= 349
    assert red.sum() > 100 and 100 < np.nonzero(red)[1].mean() < 430


def test_tools_report_user_errors_in_one_line(tmp_path, monkeypatch, capsys):
    """Missing dataset / ground truth: exit code 2 and a message saying where and what, no traceback."""
    import eval as eval_tool
    import wider_eval

    monkeypatch.chdir(tmp_path)  # no data/widerface here
    assert eval_tool.main([str(REPO / "configs" / "blazeface_front.yml"), "--weights", "mediapipe_short_range"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data.val.dataset.root: WIDER FACE not found at") and "wider_face" in err
    assert "Traceback" not in err
    assert wider_eval.main(["--pred", str(tmp_path), "--gt", str(tmp_path / "gt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: WIDER ground truth incomplete") and "wider_face_val.mat" in err
    assert eval_tool.main([str(REPO / "configs" / "quickstart.yml"), "--split", "test"]) == 2
    assert "no data.test section" in capsys.readouterr().err


class _OwnPredictOnly:
    """A detector seen only through its ``predict`` (how any non-BlazeFace detector is evaluated)."""

    def __init__(self, det):
        self.predict, self.postprocess = det.predict, det.postprocess


@pytest.mark.parametrize("source", ["demo", "fddb"])
def test_fast_backends_give_the_metrics_of_detector_predict(source, shared, tmp_path, monkeypatch):
    """torch (BN folded, numpy post) and onnxruntime backends == detector.predict's metrics within 1e-4."""
    import blazekit
    from blazekit import config as cfglib
    from blazekit.engine.evaluator import Evaluator

    if source == "demo":
        monkeypatch.chdir(REPO)
        cfg = cfglib.load(REPO / "configs" / "quickstart.yml", overrides=["eval.test_scale=[256,256]"])
        max_images = None
    else:
        ann = shared("data", "fddb", "annotations.json")
        cfg_path = tmp_path / "fddb.yml"
        cfg_path.write_text("_base_: [_base_/models/blazeface_front.yml]\n"
                            f"data: {{val: {{dataset: {{type: CocoFaces, ann_file: '{ann}', "
                            "image_filter: {fold: [4]}}}}\n"
                            "eval: {score_thr: 0.02, max_det: 1000, test_scale: [320, 320], batch_size: 8}\n")
        cfg = cfglib.load(cfg_path)
        max_images = 24
    det = blazekit.build_detector(cfg, weights="mediapipe_short_range")
    ref_ev = Evaluator(_OwnPredictOnly(det), cfg, progress=False, max_images=max_images)
    ref = ref_ev.run()
    backends = ["torch"]
    try:
        import onnxruntime  # noqa: F401
        backends.append("onnxruntime")
    except ImportError:
        pass
    assert ref["coco/AP50"] > 0.5
    for backend in backends:
        ev = Evaluator(det, cfg, progress=False, max_images=max_images, backend=backend)
        got = ev.run()
        assert ev.settings["settings/backend"] == backend
        assert set(got) == set(ref)
        for k, v in ref.items():
            assert got[k] == pytest.approx(v, abs=1e-4), (backend, k)
    assert Evaluator(det, cfg, backend="auto").backend == backends[-1]  # onnxruntime when installed
    with pytest.raises(ValueError, match="backend must be one of"):
        Evaluator(det, cfg, backend="tensorrt")


def test_keypoint_agreement_with_a_reference_model(monkeypatch):
    """eval.kpt_reference: the median keypoint distance (inter-eye units) to the reference model's confident faces;
    0 against itself, and the exact shift when only the keypoint outputs move (boxes and scores unchanged)."""
    import torch

    from blazekit import build_detector, config
    from blazekit.engine.evaluator import REFERENCE_SCORE, evaluate

    monkeypatch.chdir(REPO)
    cfg = config.load("configs/quickstart.yml", overrides=["eval.kpt_reference=mediapipe_short_range"])
    mp = build_detector(cfg, weights="mediapipe_short_range")
    same = evaluate(mp, cfg, progress=False)
    assert same["kpt_agreement"] == 0.0 and same["kpt_agreement/faces"] == 9
    # the demo faces have keypoint labels: NME of both models on the faces both find (here the same model)
    assert same["nme/common_faces"] == same["nme/faces_matched"] > 0
    assert same["nme/common"] == same["nme/common_reference"] == pytest.approx(same["nme"])
    shifted = build_detector(cfg, weights="mediapipe_short_range")
    with torch.no_grad():
        for conv in shifted.head.reg_convs:
            bias = conv.bias.view(-1, 16)  # per anchor: box 4, then 6 keypoints (x, y)
            bias[:, 4::2] += 1.5           # every keypoint 1.5 px (at 128x128) to the right
    got = evaluate(shifted, cfg, progress=False)
    from blazekit.data import build_dataset

    val = build_dataset(cfg["data"]["val"]["dataset"])
    images = [val[i]["image"] for i in range(len(val))]
    kw = {"score_thr": cfg["eval"]["score_thr"], "max_det": cfg["eval"]["max_det"], "input_size": (256, 256)}
    dists = []
    for a, b in zip(shifted.predict(images, **kw), mp.predict(images, **kw)):
        for j in np.flatnonzero(b["scores"] >= REFERENCE_SCORE):
            iod = np.linalg.norm(b["keypoints"][j][0] - b["keypoints"][j][1])
            dists.append(np.linalg.norm(a["keypoints"][j] - b["keypoints"][j], axis=1).mean() / iod)
    assert got["kpt_agreement"] > 0.05
    assert got["nme/common_reference"] == pytest.approx(same["nme"]) and got["nme/common"] != got["nme/common_reference"]
    assert got["kpt_agreement"] == pytest.approx(float(np.median(dists)), rel=1e-4)
