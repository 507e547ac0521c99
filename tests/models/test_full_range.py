"""MediaPipe full range: sparse tflite import, live LiteRT parity (full and short range), 2304 anchors, configs."""
import importlib.util
import math

import cv2
import numpy as np
import pytest
import torch

import blazekit
from blazekit import config, convert
from blazekit.checkpoint import load_checkpoint
from blazekit.models.full_range import depth_to_space
from blazekit.preprocess import letterbox, normalize
from blazekit.weights import NAMED_WEIGHTS, resolve_weights

from tests.conftest import REPO

FULL = REPO / "configs" / "blazeface_full_range.yml"
FRONT = REPO / "configs" / "_base_" / "models" / "blazeface_front.yml"
TFLITE_FULL = ("weights", "mediapipe", "face_detection_full_range_sparse.tflite")
TFLITE_SHORT = ("weights", "mediapipe", "face_detection_short_range.tflite")


def _photos(shared):
    """The hollance test photos (128x128) and the bundled demo photos (various sizes), RGB uint8."""
    paths = sorted(shared("weights", "hollance").glob("*.png")) + sorted((REPO / "blazekit/data/demo/images").glob("*"))
    assert len(paths) >= 13
    return [(p.name, cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)) for p in paths]


def _litert(path):
    interp = pytest.importorskip("ai_edge_litert.interpreter",
                                 reason="ai-edge-litert not installed (pip install 'blazekit[dev]')").Interpreter
    it = interp(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    return it


def _run_litert(it, x_nhwc):
    it.set_tensor(it.get_input_details()[0]["index"], x_nhwc)
    it.invoke()
    outs = sorted((it.get_tensor(d["index"]) for d in it.get_output_details()), key=lambda a: a.shape[-1])
    return outs[1], outs[0]  # (regressors [1, A, 16], classificators [1, A, 1])


def _violation(out, ref):
    """max of |out - ref| - (1e-3 + 1e-5 |ref|); <= 0 means every element is within tolerance."""
    assert out.shape == ref.shape
    return float((np.abs(out - ref) - (1e-3 + 1e-5 * np.abs(ref))).max())


@pytest.mark.parametrize("tflite, cfg, weights, size", [
    (TFLITE_FULL, FULL, "mediapipe_full_range", 192),
    (TFLITE_SHORT, FRONT, "mediapipe_short_range", 128),
])
def test_shipped_weights_match_live_litert(shared, tflite, cfg, weights, size):
    it = _litert(shared(*tflite))
    model = blazekit.build_detector(cfg, weights=weights)
    n_anchors = 2304 if size == 192 else 896
    for name, img in _photos(shared):
        x = normalize(letterbox(img, (size, size))[0])[None]  # [1, 3, H, W] in [-1, 1]
        ref_reg, ref_cls = _run_litert(it, np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
        with torch.no_grad():
            reg, logits = model.raw(torch.from_numpy(x))
        assert reg.shape == (1, n_anchors, 16) and logits.shape == (1, n_anchors, 1)
        assert _violation(reg.numpy(), ref_reg) <= 0, name
        assert _violation(logits.numpy(), ref_cls) <= 0, name
        assert np.abs(ref_reg).max() > 10  # real outputs, not a degenerate all-zero comparison


def _mediapipe_anchors(size=192, strides=(4,), min_scale=0.1484375, max_scale=0.75, offset=0.5):
    """SsdAnchorsCalculator for num_layers 1, aspect ratio 1, interpolated_scale_aspect_ratio 0, fixed size:
    one anchor per cell, centre ((x + 0.5) / fw, (y + 0.5) / fh), row-major, w = h = 1."""
    out = []
    for stride in strides:
        fm = int(math.ceil(size / stride))
        for y in range(fm):
            for x in range(fm):
                out.append(((x + offset) / fm, (y + offset) / fm, 1.0, 1.0))
    return np.asarray(out, dtype=np.float32)


def test_anchors_are_mediapipes_2304():
    model = blazekit.build_detector(FULL)
    ref = _mediapipe_anchors()
    assert ref.shape == (2304, 4) and ref[0, 0] == ref[0, 1] == np.float32(0.5 / 48)
    np.testing.assert_allclose(model.anchors.numpy(), ref, rtol=0, atol=1e-7)
    assert model.anchor_generator.num_anchors_per_level() == [1]
    assert model.cfg["postprocess"]["score_thr"] == 0.6 and model.cfg["postprocess"]["iou_thr"] == 0.3


def test_shipped_checkpoint_is_the_sparse_tflite_conversion(shared):
    src = shared(*TFLITE_FULL)
    assert convert.guess_variant(src) == "full_range"
    fresh = convert.convert_checkpoint(src)
    shipped = load_checkpoint(resolve_weights("mediapipe_full_range"))
    assert shipped["meta"]["md5"] == "61be71c968b83f3bd2e04805c49219d4" == fresh["meta"]["md5"]
    assert shipped["model_cfg"] == fresh["model_cfg"]
    assert shipped["model_cfg"]["backbone"]["type"] == "FullRangeBackbone"
    assert shipped["state_dict"].keys() == fresh["state_dict"].keys()
    assert all(torch.equal(shipped["state_dict"][k], v) and shipped["state_dict"][k].dtype == v.dtype
               for k, v in fresh["state_dict"].items())
    # stored packed (bit mask + non-zero values), so the bundled file stays under 1 MB
    raw = torch.load(resolve_weights("mediapipe_full_range"), map_location="cpu", weights_only=True)
    assert len(raw["packed"]) > 50 and resolve_weights("mediapipe_full_range").stat().st_size < 1_000_000
    # sparse (DENSIFY) 1x1 weights came out dense with their zeros: MediaPipe pruned ~70 % of them
    w = shipped["state_dict"]["backbone.stem.2.convs.1.conv.weight"]
    assert w.shape == (8, 32, 1, 1) and 0.5 < float((w == 0).float().mean()) < 0.9
    text = (NAMED_WEIGHTS["mediapipe_full_range"].parent / "ATTRIBUTION.md").read_text()
    assert "61be71c968b83f3bd2e04805c49219d4" in text and "mediapipe_full_range.pt" in text


def test_sparse_source_structure(shared):
    src = convert.read_tflite(shared(*TFLITE_FULL))
    assert src.input_hw == (192, 192) and len(src.backbone) == 87 and len(src.head) == 1
    stem = src.backbone[0]
    assert stem.weight.shape == (32, 3, 3, 3) and stem.stride == 2 and stem.pads == (1, 1, 1, 1)
    head = src.head[0]
    assert set(head) == {"cls", "reg", "cls_post", "reg_post"}
    assert head["reg"].weight.shape == (64, 48, 1, 1) and head["reg_post"].weight.shape == (64, 1, 3, 3)
    assert head["cls_post"].depthwise and head["cls_post"].stride == 2


def test_wrong_config_for_full_range_is_named(shared, monkeypatch):
    src = shared(*TFLITE_FULL)
    with pytest.raises(convert.ConversionError, match=r"87 backbone convs .* 33 conv units"):
        convert.convert_tflite(src, config.load(FRONT)["model"])
    # Keras pads stride-2 convs top/left; TF-SAME (blazekit's default) pads bottom/right: a one-pixel shift, refused
    import blazekit.models.full_range as full_range

    monkeypatch.setattr(full_range, "symmetric_padding", lambda module: None)
    with pytest.raises(convert.ConversionError,
                       match=r"pads \(left, right, top, bottom\) = \(1, 1, 1, 1\), target backbone\.stem\.0 pads "
                             r"\(0, 1, 0, 1\)"):
        convert.convert_tflite(src, config.load(FULL)["model"])


def test_depth_to_space_is_tf_dcr():
    """TF: out[h*2+i, w*2+j, c] = in[h, w, (i*2+j)*C + c] (NHWC); checked against that formula in numpy."""
    x = torch.arange(2 * 8 * 3 * 5, dtype=torch.float32).reshape(2, 8, 3, 5)  # C_out = 2
    y = depth_to_space(x, 2).numpy()
    xn = x.numpy()
    for h in range(3):
        for w in range(5):
            for i in range(2):
                for j in range(2):
                    for c in range(2):
                        assert (y[:, c, h * 2 + i, w * 2 + j] == xn[:, (i * 2 + j) * 2 + c, h, w]).all()


def test_full_range_trains_and_finds_faces(shared):
    model = blazekit.build_detector(FULL, weights="mediapipe_full_range")
    img = cv2.cvtColor(cv2.imread(str(shared("weights", "hollance", "3faces.png"))), cv2.COLOR_BGR2RGB)
    det = model.predict(img)[0]
    assert len(det["boxes"]) == 3 and det["scores"].min() > 0.6
    # the parts train: one loss step moves the weights of backbone, neck and head
    model.train()
    x = torch.from_numpy(normalize(letterbox(img, (192, 192))[0])[None])
    boxes = det["boxes"] * 1.5  # 128 -> 192 px (square image: letterbox is a plain scale)
    target = [{"boxes": torch.from_numpy(boxes), "keypoints": torch.from_numpy(det["keypoints"] * 1.5)}]
    loss = model(x, target)["loss"]
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    for name in ("backbone.stem.0.conv.weight", "neck.merges.2.0.convs.0.conv.weight", "head.reg_convs.0.dw.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name


def _one_step(cfg_path, tmp_path, overrides=()):
    """Build the trainer of a shipped fine-tune config (init weights loaded) and run one step on 2 images."""
    from blazekit.engine.trainer import Trainer

    trainer = Trainer(str(cfg_path), work_dir=tmp_path / "wd", device="cpu",
                      overrides=["data.train.batch_size=2", "data.train.num_workers=0", *overrides])
    report = trainer.init_report
    assert report["loaded"] and not (report["missing"] or report["unexpected"] or report["shape_mismatch"])
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    images, targets = next(iter(trainer.train_loader))
    assert images.shape[0] == 2 and tuple(images.shape[-2:]) == tuple(trainer.cfg["model"]["input_size"])
    losses = trainer.train_step(images, targets)
    assert losses is not None and math.isfinite(losses["loss"])
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))
    return trainer


def test_finetune_shared_full_range_config(shared, tmp_path):
    shared("data", "fddb")
    cfg_path = REPO / "configs" / "finetune_shared_full_range.yml"
    cfg = config.load(cfg_path)
    assert cfg["model"]["init"] == "mediapipe_full_range" and cfg["model"]["input_size"] == [192, 192]
    model = blazekit.build_detector(cfg)  # loads model.init strictly
    shipped = load_checkpoint(resolve_weights("mediapipe_full_range"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in shipped["state_dict"].items())
    distill = cfg["train"]["distill"]  # RESULTS.md: the teacher picks the positives, guards the scores
    assert (distill["positive_mode"], distill["positive_iou"], distill["ignore_score"]) == ("replace", 0.5, 0.5)
    trainer = _one_step(cfg_path, tmp_path)
    assert trainer.tcfg["norm_eval"]  # folded BN statistics stay frozen while fine-tuning
    assert trainer.teacher.settings["positive_mode"] == "replace"


def test_finetune_shared_config(shared, tmp_path):
    """The recommended front recipe: MediaPipe short range, ATSS, keypoint distillation with teacher positives and
    data-anchor-sampling down to 8 px faces, 30 epochs (RESULTS.md, 3 seeds each); it loads strictly and trains a
    step on the shared data."""
    shared("data", "fddb")
    cfg_path = REPO / "configs" / "finetune_shared.yml"
    cfg = config.load(cfg_path)
    assert cfg["model"]["init"] == "mediapipe_short_range" and cfg["model"]["matcher"]["type"] == "ATSSMatcher"
    distill = cfg["train"]["distill"]
    assert (distill["weight"], distill["positive_mode"], distill["positive_iou"]) == (100, "replace", 0.5)
    das = cfg["data"]["train"]["transforms"][0]
    assert das["type"] == "DataAnchorSampling" and das["anchor_sizes"] == [8, 16, 32, 64, 128]
    assert cfg["train"]["epochs"] == 30  # 3 seeds against 20 (RESULTS.md "Smaller faces and a longer schedule")
    trainer = _one_step(cfg_path, tmp_path)
    assert trainer.teacher.settings["positive_mode"] == "replace"


def test_finetune_shared_back_config(shared, tmp_path):
    shared("data", "fddb")
    cfg_path = REPO / "configs" / "finetune_shared_back.yml"
    assert config.load(cfg_path)["model"]["init"] == "work_dirs/hollance_back.pt"
    assert config.load(cfg_path)["train"]["freeze"] == ["backbone"]  # RESULTS.md: keeps WIDER and the keypoints
    converted = tmp_path / "hollance_back.pt"
    spec = importlib.util.spec_from_file_location("bk_tools_convert_fr", REPO / "tools" / "convert.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([str(shared("weights", "hollance", "blazefaceback.pth")), str(converted)]) == 0
    cfg = config.load(cfg_path, [f"model.init={converted}"])
    model = blazekit.build_detector(cfg)  # the converted hollance weights load strictly into the 256x256 model
    assert model.input_size == (256, 256) and model.anchors.shape == (896, 4)
    hol = torch.load(shared("weights", "hollance", "blazefaceback.pth"), map_location="cpu", weights_only=True)
    assert torch.equal(model.state_dict()["head.reg_convs.1.weight"], hol["regressor_16.weight"])
    _one_step(cfg_path, tmp_path, [f"model.init={converted}"])
