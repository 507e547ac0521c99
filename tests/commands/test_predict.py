"""Predict on photos, folders, globs and a video the test writes itself; bad inputs are skipped and reported."""
import json
import sys

import cv2
import numpy as np
import pytest

from blazekit.inference import (SourceError, draw_detections, expand_sources, load_image, open_video,
                                predict_sources)
from blazekit.models.build import build_detector

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "tools"))

FRONT = "_base_/models/blazeface_front.yml"
DEMO = REPO / "blazekit" / "data" / "demo" / "images"


@pytest.fixture(scope="module")
def detector():
    return build_detector(FRONT, weights="mediapipe_short_range")


def _write_video(path, frames, fps=10):
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()


def test_expand_sources_files_folders_globs_and_missing(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("x.jpg", "y.PNG", "notes.txt"):
        (tmp_path / "a" / name).write_bytes(b"")
    (tmp_path / "b.mp4").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    srcs, missing = expand_sources([tmp_path / "a", str(tmp_path / "*.mp4"), tmp_path / "a" / "x.jpg",
                                    tmp_path / "nope.jpg", str(tmp_path / "*.webp"), tmp_path / "empty"])
    assert [(s.path.name, s.kind) for s in srcs] == [("x.jpg", "image"), ("y.PNG", "image"), ("b.mp4", "video")]
    assert [m[0] for m in missing] == [str(tmp_path / "nope.jpg"), str(tmp_path / "*.webp"), str(tmp_path / "empty")]
    assert "no such file" in missing[0][1] and "glob matched no" in missing[1][1]


def test_load_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(SourceError, match="broken.jpg.*not a decodable image"):
        load_image(bad)
    with pytest.raises(SourceError, match="empty"):
        (tmp_path / "e.png").write_bytes(b"")
        load_image(tmp_path / "e.png")
    img = load_image(DEMO / "astronaut.jpg")
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8


def test_draw_detections_draws_boxes_scores_and_keypoints():
    img = np.zeros((200, 300, 3), np.uint8)
    det = {"boxes": np.array([[50, 60, 150, 170], [0, 0, 10, 10]], np.float32), "scores": np.array([0.9, 0.2]),
           "keypoints": np.array([[[80, 100]] * 6, [[5, 5]] * 6], np.float32)}
    out = draw_detections(img, det, score_thr=0.5, color=(0, 255, 0), keypoint_colors=[(255, 0, 0)], thickness=3)
    assert img.max() == 0, "input must not be modified"
    assert out[120, 49:52, 1].max() == 255 and out[120, 49:52, [0, 2]].max() == 0  # left edge of the box, green
    assert tuple(out[100, 80]) == (255, 0, 0)  # keypoint
    assert out[5, 5].max() == 0  # below score_thr: not drawn
    assert out[62:75, 52:90].any()  # score label inside the top of the box
    gt = draw_detections(img, {"boxes": det["boxes"][:1]}, color=(255, 255, 0), thickness=3)  # ground truth: boxes only
    assert gt[120, 149:152, 0].max() == 255 and gt[120, 149:152, 2].max() == 0
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        draw_detections(img[..., 0], det)


def test_predict_sources_images_video_and_broken_file(detector, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        (src / name).write_bytes((DEMO / name).read_bytes())
    (src / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    face = load_image(DEMO / "astronaut.jpg")
    frames = [np.roll(face, 8 * i, axis=1) for i in range(5)]
    _write_video(src / "clip.mp4", frames)
    sources, missing = expand_sources([src])
    assert not missing and len(sources) == 4
    out = tmp_path / "out"
    summary = predict_sources(detector, sources, out, batch_size=2, progress=False)
    assert summary.images == 2 and summary.videos == 1 and summary.frames == 5
    assert [f[0] for f in summary.failed] == [str(src / "broken.jpg")]
    rec = json.loads((out / "astronaut.json").read_text())
    assert rec["width"] == 512 and rec["keypoint_names"][0] == "right_eye"
    expected = detector.predict([face])[0]
    assert len(rec["detections"]) == len(expected["boxes"]) >= 1
    np.testing.assert_allclose(rec["detections"][0]["box"], expected["boxes"][0], atol=0.01)
    np.testing.assert_allclose(rec["detections"][0]["keypoints"], expected["keypoints"][0], atol=0.01)
    assert load_image(out / "astronaut.jpg").shape == face.shape
    cap, info = open_video(out / "clip.mp4")
    cap.release()
    assert (info.width, info.height, info.num_frames) == (512, 512, 5)
    vid = json.loads((out / "clip.json").read_text())
    assert [f["frame"] for f in vid["frames"]] == list(range(5))
    assert all(len(f["detections"]) >= 1 for f in vid["frames"])  # the face is found in every frame
    x0 = [f["detections"][0]["box"][0] for f in vid["frames"]]
    assert np.all(np.diff(x0) > 3)  # and follows the 8 px/frame shift


def _run_predict(capsys, *args, config=FRONT):
    """tools/predict.py in this process (a subprocess per call would spend seconds importing torch)."""
    import predict as predict_tool  # tools/predict.py

    rc = predict_tool.main([config, "--weights", "mediapipe_short_range", "--quiet", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_predict_cli_demo_photos_and_exit_codes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "demo"
    rc, _, err = _run_predict(capsys, DEMO, "--out", out, "--score-thr", "0.6", "--max-det", "3", "--batch-size", "4")
    assert rc == 0, err
    jsons = sorted(out.glob("*.json"))
    assert len(jsons) == len(list(DEMO.glob("*.jpg"))) >= 5
    dets = [d for j in jsons for d in json.loads(j.read_text())["detections"]]
    assert len(dets) >= 5 and all(d["score"] >= 0.6 for d in dets)
    assert max(len(json.loads(j.read_text())["detections"]) for j in jsons) <= 3
    (tmp_path / "bad.png").write_bytes(b"junk")
    rc, _, err = _run_predict(capsys, DEMO / "astronaut.jpg", tmp_path / "bad.png", tmp_path / "missing.jpg",
                              "--out", tmp_path / "o2")
    assert rc == 1
    assert "bad.png" in err and "missing.jpg" in err and "2 input(s) failed" in err
    assert (tmp_path / "o2" / "astronaut.json").is_file()
    rc, _, err = _run_predict(capsys, tmp_path / "missing.jpg", "--out", tmp_path / "o3")
    assert rc == 2 and "no such file" in err
    # weights of another architecture: refused in one line naming the differing keys, exit code 2
    rc, _, err = _run_predict(capsys, DEMO / "astronaut.jpg", "--out", tmp_path / "o4",
                              config="_base_/models/blazeface_back.yml")
    assert rc == 2 and err.startswith("error: ") and "model.input_size" in err and "Traceback" not in err
    assert not (tmp_path / "o4").exists()


def test_predict_cli_onnxruntime_backend_matches_torch(tmp_path, capsys, monkeypatch):
    """--backend onnxruntime (aligned ONNX export + lean numpy pre/post) writes the torch backend's detections."""
    pytest.importorskip("onnxruntime")
    monkeypatch.chdir(REPO)
    results = {}
    for backend in ("torch", "onnxruntime"):
        rc, _, err = _run_predict(capsys, DEMO, "--out", tmp_path / backend, "--backend", backend, "--threads", "1",
                                  "--no-images")
        assert rc == 0, err
        results[backend] = {j.name: json.loads(j.read_text())["detections"] for j in (tmp_path / backend).glob("*.json")}
    assert results["torch"].keys() == results["onnxruntime"].keys() and len(results["torch"]) >= 5
    total = 0
    for name, want in results["torch"].items():
        got = results["onnxruntime"][name]
        assert len(got) == len(want), name
        for g, w in zip(got, want):
            np.testing.assert_allclose(g["box"], w["box"], atol=0.05)
            np.testing.assert_allclose(g["score"], w["score"], atol=1e-4)
            np.testing.assert_allclose(g["keypoints"], w["keypoints"], atol=0.05)
        total += len(want)
    assert total >= 15  # 19 faces at the default threshold (the photos hold 31 labelled ones, some tiny)
    with pytest.raises(SystemExit) as exc:  # an argparse error: usage line + message, exit code 2
        _run_predict(capsys, DEMO, "--out", tmp_path / "x", "--backend", "onnxruntime", "--device", "cuda")
    assert exc.value.code == 2 and "runs on the CPU" in capsys.readouterr().err


@pytest.mark.parametrize("cfg", ["_base_/models/blazeface_back.yml", "_base_/models/blazeface_paper.yml"])
def test_back_and_paper_models_run_through_predict(cfg, tmp_path, shared):
    """Back model with hollance's converted weights finds the astronaut; the paper variant (no weights) runs."""
    from blazekit.convert import save_converted
    from blazekit.deploy.fuse import fuse_bn

    weights = None
    if "back" in cfg:
        weights = tmp_path / "back.pt"
        save_converted(shared("weights", "hollance", "blazefaceback.pth"), weights)
    det = fuse_bn(build_detector(cfg, weights=weights).eval())
    sources, _ = expand_sources([DEMO / "astronaut.jpg"])
    summary = predict_sources(det, sources, tmp_path / "out", progress=False)
    assert summary.images == 1 and not summary.failed
    rec = json.loads((tmp_path / "out" / "astronaut.json").read_text())
    if weights is not None:
        assert len(rec["detections"]) >= 1
        x1, y1, x2, y2 = rec["detections"][0]["box"]
        assert 150 < (x1 + x2) / 2 < 280 and 60 < (y1 + y2) / 2 < 200  # the astronaut's face, original pixels
