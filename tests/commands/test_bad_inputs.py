"""Issue #11's bad inputs as a user meets them: through the tools, each ends with exit code 2, one ``error:`` line
naming the file or key, no traceback, and nothing written that should not be.

Only the cases no other test runs end to end are here; the rest live beside their code (paths under tests/):
crafted pickles through every tool (test_checkpoint_safety), bad option values and ``trian:`` (test_options), the
poisoned-step divergence, strict ``model.init`` and ``--resume`` with a changed config (engine/test_robustness),
truncated JPEGs and boxes outside the image (data/test_bad_samples), the README dataset from the user's folder
(commands/test_user_module), pickles through convert (convert/test_convert), WIDER's equal scores
(evaluation/test_wider).
README "What happens when ..." lists them all.
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
QUICKSTART = REPO / "configs" / "quickstart.yml"
DEMO = REPO / "blazekit" / "data" / "demo"
SHORT_RUN = ["--set", "train.epochs=1", "--set", "train.val_before_train=false", "--set", "train.val_vis=0",
             "--set", "train.progress_bar=false", "--set", "train.tensorboard=false"]


def _one_error(capsys, rc, *names):
    """The run was refused: exit 2, exactly one ``error:`` line naming every one of ``names``, no traceback."""
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and all(n in errors[0] for n in names), err[-2000:]
    return errors[0]


def _checkpoints(work):
    return sorted(p.name for p in Path(work).glob("*.pt")) if Path(work).exists() else []


# ------------------------------------------------------------------------------------------- drawing
def test_drawing_blown_up_detections_never_raises_and_draws_nothing_off_image():
    """Diverged but finite weights give boxes at 1e20 px; cv2 raised on ints beyond its range before the clip."""
    from blazekit.inference import draw_detections

    img = np.zeros((64, 80, 3), np.uint8)
    near = {"boxes": np.array([[10.0, 12.0, 40.0, 44.0]]), "scores": np.array([0.9]),
            "keypoints": np.array([[[20.0, 20.0]] * 6])}
    base = draw_detections(img, near)
    far = [[1e20, 1e20, 2e20, 2e20], [3e9, -3e9, 4e9, 5e9], [1e5, 1e5, 2e5, 2e5]]
    det = {"boxes": np.array([*near["boxes"], *far]), "scores": np.array([0.9, 0.8, 0.7, 0.6]),
           "keypoints": np.array([near["keypoints"][0], *[[[1e20, -1e20]] * 6] * 3]),
           "labels": ["face"] * 4}
    out = draw_detections(img, det, draw_scores=False)
    labelled = draw_detections(img, {**near, "labels": ["face"]}, draw_scores=False)
    np.testing.assert_array_equal(out, labelled)  # the far detections add nothing to the image
    assert base.any()
    # a box from the image to 1e20 px: its visible edges are drawn where they are
    half = draw_detections(img, {"boxes": torch.tensor([[10.0, 12.0, 1e20, 1e20]])}, color=(0, 255, 0))
    assert half[12, 10:80, 1].all() and half[12:64, 10, 1].all() and not half[:11, :, 1].any()


# ------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("text, message", [
    ("# nothing yet\n", "the config file is empty"),
    ("train: {epochs: 1}\n", "the config has no 'model:' section"),
])
def test_train_tool_refuses_empty_config_and_config_without_model(tmp_path, capsys, text, message):
    import train

    cfg = tmp_path / "my.yml"
    cfg.write_text(text)
    rc = train.main([str(cfg), "--work-dir", str(tmp_path / "w")])
    _one_error(capsys, rc, str(cfg), message)
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("tool", [
    "eval", "export", "predict",
])
def test_weight_tools_refuse_a_config_without_model(tmp_path, capsys, monkeypatch, tool):
    mod = __import__(tool)
    cfg = tmp_path / "nomodel.yml"
    cfg.write_text(f"_base_: [{REPO / 'configs' / '_base_' / 'datasets' / 'demo.yml'}]\n")
    monkeypatch.chdir(tmp_path)  # the demo set is found inside the package from any folder
    extra = {"eval": [], "export": ["--out", str(tmp_path / "m.onnx")],
             "predict": [str(DEMO / "images" / "sample1.jpg"), "--out", str(tmp_path / "p")]}[tool]
    rc = mod.main([str(cfg), "--weights", "mediapipe_short_range", *extra])
    _one_error(capsys, rc, str(cfg), "no 'model:' section")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nomodel.yml"]


# ------------------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("tool", ["eval", "predict", "export"])
def test_hollance_pth_as_weights_says_convert_it(tmp_path, capsys, monkeypatch, tool):
    mod = __import__(tool)
    pth = tmp_path / "blazeface.pth"
    torch.save({"backbone1.0.weight": torch.zeros(24, 3, 5, 5), "backbone1.0.bias": torch.zeros(24),
                "classifier_8.weight": torch.zeros(2, 88, 1, 1), "regressor_16.bias": torch.zeros(96)}, pth)
    monkeypatch.chdir(REPO)
    extra = {"eval": [], "export": ["--out", str(tmp_path / "m.onnx")],
             "predict": [str(DEMO / "images" / "sample1.jpg"), "--out", str(tmp_path / "p")]}[tool]
    rc = mod.main([str(QUICKSTART), "--weights", str(pth), *extra])
    _one_error(capsys, rc, str(pth), "convert it first: python tools/convert.py")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blazeface.pth"]


def test_model_init_of_another_architecture_is_refused_by_the_train_tool(tmp_path, capsys):
    """The full-range checkpoint on the front model: refused naming what differs (it used to load 55/206 tensors)."""
    import train

    rc = train.main([str(QUICKSTART), "--work-dir", str(tmp_path / "w"), "--set", "model.init=mediapipe_full_range"])
    # the differences and the way out are on the one error line
    _one_error(capsys, rc, "model.init 'mediapipe_full_range'", "mediapipe_full_range.pt", "does not fit",
               "architecture model.backbone.type: checkpoint 'FullRangeBackbone' vs config 'BlazeFaceFrontBackbone'; "
               "architecture model.neck",
               "Use the matching config, or set train.init_strict: false")
    assert _checkpoints(tmp_path / "w") == []


# ------------------------------------------------------------------------------------------- training
def test_divergence_through_the_train_tool_keeps_finite_checkpoints(tmp_path, capsys, monkeypatch):
    """``lr=1e30``: exit 2 naming the lr and clipping; every checkpoint left behind holds finite weights."""
    import train

    monkeypatch.chdir(REPO)
    work = tmp_path / "w"
    rc = train.main([str(QUICKSTART), "--work-dir", str(work), *SHORT_RUN, "--set", "train.epochs=3",
                     "--set", "train.optimizer.lr=1e30", "--set", "train.val_interval=1"])
    line = _one_error(capsys, rc, "non-finite weights", "train.optimizer.lr (now 1e+30)", "train.clip_grad_norm")
    assert "keep the last finite state" in line
    assert _checkpoints(work) == ["best.pt", "last.pt"]  # written by the epochs before it blew up
    assert not [p for p in work.iterdir() if p.name.endswith(".tmp")]
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(work / name, weights_only=True)
        tensors = [*ckpt["state_dict"].values(), *ckpt["train_state"]["model"].values()]
        assert all(bool(torch.isfinite(v).all()) for v in tensors if v.is_floating_point()), name


@pytest.fixture
def bad_demo(tmp_path):
    """The demo set copied outside the checkout with one truncated train photo and one whose faces lie outside it."""
    data = tmp_path / "faces"
    shutil.copytree(DEMO, data)
    raw = (data / "images" / "sample1.jpg").read_bytes()
    (data / "images" / "sample1.jpg").write_bytes(raw[: len(raw) // 2])
    ann = json.loads((data / "annotations.json").read_text())
    astronaut = next(im for im in ann["images"] if im["file_name"].endswith("astronaut.jpg"))
    for a in ann["annotations"]:
        if a["image_id"] == astronaut["id"]:
            a["bbox"] = [astronaut["width"] + 50, astronaut["height"] + 50, 40, 40]
    (data / "annotations.json").write_text(json.dumps(ann))

    def config(extra=""):
        cfg = tmp_path / "bad.yml"
        cfg.write_text(f"_base_: [{QUICKSTART}]\ndata:\n  train:\n    dataset: {{_replace_: true, type: CocoFaces, "
                       f"ann_file: {data / 'annotations.json'}, split: train{extra}}}\n")
        return cfg

    return data, config


def test_truncated_jpeg_stops_the_train_tool_naming_the_file(bad_demo, tmp_path, capsys, monkeypatch):
    import train

    monkeypatch.chdir(REPO)  # the validation set stays the checkout's demo/val
    data, config = bad_demo
    rc = train.main([str(config()), "--work-dir", str(tmp_path / "w"), *SHORT_RUN])
    _one_error(capsys, rc, f"corrupt image {data / 'images' / 'sample1.jpg'}", "truncated")
    assert _checkpoints(tmp_path / "w") == []


def test_skipped_and_emptied_images_are_listed_on_the_console_and_in_train_log(bad_demo, tmp_path, capsys,
                                                                             monkeypatch, caplog):
    """``on_bad_sample: skip`` trains on, but the skipped file and the image that lost every face are named."""
    import train

    monkeypatch.chdir(REPO)
    data, config = bad_demo
    work = tmp_path / "w"
    assert train.main([str(config(", on_bad_sample: skip")), "--work-dir", str(work), *SHORT_RUN]) == 0
    out = capsys.readouterr()
    console = out.out + out.err
    log = (work / "train.log").read_text()
    for text in (console, log):
        assert "train set CocoFaces" in text and "6 images" in text  # 7 listed, 1 skipped
        assert "skipped 1 images" in text and str(data / "images" / "sample1.jpg") in text
        assert "1 images with every face dropped" in text
    # the dataset's warnings (stderr when run as a command) name the emptied photo
    assert str(data / "images" / "astronaut.jpg") in caplog.text and "every box was dropped" in caplog.text
