"""Image I/O, drawing and results JSON as the bottom of the app: one reader and one drawer for training, evaluation,
the dataset browser and prediction, and data/ never reaching up into the app layer."""
import ast
import json
import shutil

import numpy as np
import pytest

from blazekit.io.images import SourceError, read_image, save_image

from tests.conftest import REPO

DEMO = REPO / "blazekit" / "data" / "demo" / "images"
#: what runs a model or a tool; the data and I/O layers below it never import these
APP = ("blazekit.inference", "blazekit.predict_runner", "blazekit.commands", "blazekit.engine", "blazekit.cli",
       "blazekit.deploy", "blazekit.models")


def _imports(path, package):
    """Every module ``path`` imports (also inside functions), relative imports made absolute."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            found |= {mod} | {f"{mod}.{a.name}" for a in node.names}
    return found


def _package_of(path):
    return ".".join(path.relative_to(REPO).parts[:-1])  # a module's package; an __init__'s is its own folder


@pytest.mark.parametrize("layer", ["data", "io", "drawing.py", "results.py"])
def test_data_and_io_import_nothing_from_the_app_layer(layer):
    files = [REPO / "blazekit" / layer] if layer.endswith(".py") else sorted((REPO / "blazekit" / layer).rglob("*.py"))
    assert files and all(f.exists() for f in files)
    for f in files:
        up = sorted(m for m in _imports(f, _package_of(f)) if m.startswith(APP))
        assert not up, f"{f.relative_to(REPO)} imports the app layer: {up}"
    if layer != "data":  # I/O, drawing and results know no datasets either
        for f in files:
            assert not [m for m in _imports(f, _package_of(f)) if m.startswith("blazekit.data")], f


def test_the_import_walk_sees_relative_imports():
    """The walk above would pass vacuously if it misread relative imports."""
    f = REPO / "blazekit" / "data" / "datasets" / "folder.py"
    found = _imports(f, _package_of(f))
    assert "blazekit.io.images.IMAGE_EXTS" in found and "blazekit.registry" in found


def test_inference_keeps_its_public_names():
    import blazekit.inference as inf
    from blazekit import drawing, predict_runner, results
    from blazekit.io import images, sources, videos

    assert inf.load_image is inf.read_image is images.read_image
    assert inf.draw_detections is drawing.draw_detections and inf.save_image is images.save_image
    assert inf.predict_sources is predict_runner.predict_sources and inf.expand_sources is sources.expand_sources
    assert inf.detections_to_json is results.detections_to_json and inf.open_video is videos.open_video
    assert inf.SourceError is images.SourceError and ".jpg" in inf.IMAGE_EXTS and ".mp4" in inf.VIDEO_EXTS
    for name in inf.__all__:
        assert getattr(inf, name) is not None


def _cut_jpeg(path):
    data = (DEMO / "grace_hopper.jpg").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_one_reader_non_ascii_paths_and_truncated_files(tmp_path):
    from blazekit.data import DataError
    from blazekit.data import read_image as data_read_image

    folder = tmp_path / "fotos_çé_照片"
    folder.mkdir()
    named = folder / "café_顔.jpg"
    shutil.copy(DEMO / "astronaut.jpg", named)
    img = read_image(named)
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(data_read_image(named), img)  # training reads the same pixels
    save_image(folder / "out_ü.png", img)
    np.testing.assert_array_equal(read_image(folder / "out_ü.png"), img)

    cut = _cut_jpeg(folder / "abgeschnitten.jpg")
    with pytest.raises(SourceError, match=r"corrupt image .*abgeschnitten\.jpg: image file is truncated"):
        read_image(cut)
    with pytest.raises(DataError, match=r"corrupt image .*abgeschnitten\.jpg: image file is truncated"):
        data_read_image(cut)
    with pytest.raises(SourceError, match=r"image file not found: .*nope\.jpg"):
        read_image(folder / "nope.jpg")


def test_prediction_refuses_a_truncated_jpeg_and_writes_the_rest(tmp_path):
    from blazekit.io.sources import expand_sources
    from blazekit.predict_runner import predict_sources

    class Stub:
        def predict(self, images):
            return [{"boxes": np.array([[10.0, 20.0, 50.0, 80.0]]), "scores": np.array([0.9])} for _ in images]

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(DEMO / "astronaut.jpg", src / "ok.jpg")
    _cut_jpeg(src / "cut.jpg")
    sources, _ = expand_sources([src])
    summary = predict_sources(Stub(), sources, tmp_path / "out", progress=False)
    assert summary.images == 1 and summary.detections == 1
    assert [(f.split("/")[-1], "corrupt image" in why and "truncated" in why) for f, why in summary.failed] == \
        [("cut.jpg", True)]
    record = json.loads((tmp_path / "out" / "ok.json").read_text())
    assert record["detections"] == [{"box": [10.0, 20.0, 50.0, 80.0], "score": 0.9}]
    assert record["width"] == 512 and record["keypoint_names"] == []
    assert not (tmp_path / "out" / "cut.jpg").exists()


def test_dataset_browser_draws_with_draw_detections():
    """The browser's picture is draw_detections' (green faces, orange ignored ones, visible keypoints only)."""
    from blazekit.data.visualize import draw_sample
    from blazekit.drawing import draw_detections

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    sample = {"image": image.copy(), "boxes": np.array([[5, 6, 30, 40], [40, 10, 70, 50]], np.float32),
              "keypoints": np.array([[[10, 12], [20, 22]], [[50, 20], [60, 30]]], np.float32),
              "keypoints_visible": np.array([[True, False], [True, True]]), "ignore": np.array([False, True])}
    got = draw_sample(sample, zoom=2.0)
    big = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
    want = draw_detections(big, {"boxes": sample["boxes"][:1] * 2, "keypoints": sample["keypoints"][:1] * 2,
                                 "keypoints_visible": sample["keypoints_visible"][:1]}, color=(0, 255, 0))
    want = draw_detections(want, {"boxes": sample["boxes"][1:] * 2, "keypoints": sample["keypoints"][1:] * 2,
                                  "keypoints_visible": sample["keypoints_visible"][1:]}, color=(255, 150, 0))
    np.testing.assert_array_equal(got, want)
    g, o = got[12, 30].astype(int), got[20, 110].astype(int)  # on the two boxes' top edges (anti-aliased)
    assert g[1] > 200 and g[0] < 40 and g[2] < 40 and o[0] > 200 and o[2] < 40
    assert tuple(got[44, 40]) == tuple(big[44, 40])  # the invisible keypoint is not drawn
