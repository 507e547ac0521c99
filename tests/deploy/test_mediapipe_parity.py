"""Against MediaPipe itself: a .tflite in MediaPipe Tasks' FaceDetector gives ``detector.predict``'s faces.

Opt-in (marker ``mediapipe``): skipped unless the ``mediapipe`` package is installed (it is in no extra and not in
CI; see benchmarks/mediapipe_parity.py for the venv). Runs that script on the bundled demo photos with
MediaPipe's own .tflite files (../shared/weights/mediapipe), and checks that the stored Tasks detections
tests/models/test_mediapipe_preprocess.py uses are still what this mediapipe gives.
"""
import importlib.util
import json

import numpy as np
import pytest

pytestmark = pytest.mark.mediapipe
pytest.importorskip("mediapipe")

from tests.conftest import FIXTURES, REPO
MODELS = [("face_detection_short_range.tflite", "configs/blazeface_front.yml", "mediapipe_short_range"),
          ("face_detection_full_range_sparse.tflite", "configs/blazeface_full_range.yml", "mediapipe_full_range")]


def _demo_with_crops(folder):
    """The demo photos (copied) plus the two crops the fixtures hold, as lossless PNGs (see
    tests/models/test_mediapipe_preprocess.py)."""
    import shutil

    import cv2

    from tests.models.test_mediapipe_preprocess import DEMO as demo, demo_image

    for p in demo.glob("*.jpg"):
        shutil.copy(p, folder / p.name)
    for name in ["sample5_458x587.png", "sample6_497x629.png"]:
        cv2.imwrite(str(folder / name), cv2.cvtColor(demo_image(name), cv2.COLOR_RGB2BGR))
    return folder


def _script():
    spec = importlib.util.spec_from_file_location("mediapipe_parity", REPO / "benchmarks" / "mediapipe_parity.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("tflite,config,weights", MODELS)
def test_tasks_face_detector_gives_predicts_faces(tflite, config, weights, shared, tmp_path, capsys):
    args = ["--tflite", str(shared("weights", "mediapipe", tflite)), "--config", str(REPO / config),
            "--weights", weights, "--images", str(_demo_with_crops(tmp_path))]
    script = _script()
    assert script.main(args + ["--save", str(tmp_path / "tasks.json")]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "0 found by one side only" in out and out.rstrip().endswith("OK")
    # the letterbox mode is another pre-processing: the same check fails there
    assert script.main(args + ["--resize", "letterbox"]) == 1
    if importlib.util.find_spec("tflite") is not None:  # the weights read back from the file: the same faces
        assert script.main(args[:4] + args[6:] + ["--weights-from-tflite"]) == 0
        assert "read back from" in capsys.readouterr().out
    assert script.main(args[:4] + args[6:]) == 2  # neither --weights nor --weights-from-tflite
    capsys.readouterr()
    got = json.loads((tmp_path / "tasks.json").read_text())["images"]
    stored = json.loads((FIXTURES / "mediapipe_tasks" / f"{weights[10:]}.json").read_text())
    assert sorted(got) == sorted(stored["images"])
    for name, want in stored["images"].items():
        assert got[name]["boxes"] == want["boxes"], name
        np.testing.assert_allclose(got[name]["scores"], want["scores"], atol=1e-5, err_msg=name)
        np.testing.assert_allclose(np.asarray(got[name]["keypoints"]).reshape(-1),
                                   np.asarray(want["keypoints"]).reshape(-1), atol=1e-5, err_msg=name)
