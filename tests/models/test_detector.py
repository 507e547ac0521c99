"""BlazeFace detector: building, training signal, run-time input size, predict geometry, checkpoints."""
import os

import cv2
import numpy as np
import pytest
import torch

from blazekit import anchors, coder, config, losses, matcher, postprocess  # noqa: F401  (registers parts)
from blazekit.checkpoint import (CheckpointError, load_checkpoint, load_model_weights, model_checkpoint,
                                        save_checkpoint)
from blazekit.models import backbones, heads  # noqa: F401
from blazekit.models.build import build_detector
from blazekit.models.detector import BlazeFace
from blazekit.preprocess import normalize

from tests.conftest import REPO

FRONT = "configs/_base_/models/blazeface_front.yml"
BACK = "configs/_base_/models/blazeface_back.yml"


def _cfg(name=FRONT, **model_overrides):
    cfg = config.load(os.path.join(REPO, name))
    cfg["model"].update(model_overrides)
    return cfg


def synthetic_faces(seed, size):
    """A textured background with 1-2 drawn faces (skin ellipse, eyes, mouth) + boxes + 6 keypoints."""
    rng = np.random.default_rng(seed)
    img = (rng.integers(0, 60, (size, size, 3)) + 40).astype(np.uint8)
    boxes, kpts = [], []
    for _ in range(1 + seed % 2):
        w = int(rng.integers(size // 6, size // 3))
        h = int(w * 1.2)
        cx, cy = int(rng.integers(w, size - w)), int(rng.integers(h, size - h))
        if boxes and abs(cx - (boxes[0][0] + boxes[0][2]) / 2) < w:
            cx = (cx + size // 2) % (size - w) + w // 2
        cv2.ellipse(img, (cx, cy), (w // 2, h // 2), 0, 0, 360, (220, 180, 150), -1)
        eyes = [(cx - w // 5, cy - h // 8), (cx + w // 5, cy - h // 8)]
        for p in eyes:
            cv2.circle(img, p, max(1, w // 12), (30, 30, 30), -1)
        mouth_y = cy + h // 4
        cv2.line(img, (cx - w // 6, mouth_y), (cx + w // 6, mouth_y), (120, 30, 30), max(1, w // 16))
        boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        kpts.append([eyes[0], eyes[1], (cx, cy + h // 12), (cx, mouth_y), (cx - w // 2, cy), (cx + w // 2, cy)])
    return img, np.float32(boxes), np.float32(kpts)


def _batch(size, n=4):
    data = [synthetic_faces(s, size) for s in range(n)]
    x = torch.from_numpy(np.stack([normalize(d[0]) for d in data]))
    targets = [{"boxes": torch.from_numpy(b), "keypoints": torch.from_numpy(k),
                "keypoints_visible": torch.ones(len(b), 6, dtype=torch.bool)} for _, b, k in data]
    return data, x, targets


def _iou(a, b):
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = np.prod(np.clip(rb - lt, 0, None))
    return inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter)


def test_build_front_structure_and_entry_points():
    m = build_detector(FRONT)
    assert isinstance(m, BlazeFace) and m.training
    assert m.anchors.shape == (896, 4) and m.priors.shape == (896, 4)
    assert torch.all(m.anchors[:, 2:] == 1.0)  # MediaPipe fixed-size anchors
    assert torch.allclose(m.priors[0], torch.tensor([0.5 / 16, 0.5 / 16, 0.1484375, 0.1484375]))
    assert m.head.in_channels == [88, 96] and m.head.num_anchors == [2, 6]  # injected, not configured
    sd = m.state_dict()
    assert "anchors" not in sd and "priors" not in sd  # non-persistent buffers
    full = build_detector(_cfg())
    section = build_detector(_cfg()["model"])
    assert list(full.state_dict()) == list(sd) == list(section.state_dict())
    assert m.cfg["backbone"]["type"] == "BlazeFaceFrontBackbone" and m.cfg["input_size"] == [128, 128]


def test_back_and_paper_configs_build():
    back = build_detector(BACK)
    assert back.input_size == (256, 256) and back.anchors.shape == (896, 4)
    assert torch.allclose(back.priors[0, 2:], torch.tensor([0.15625, 0.15625]))
    paper = build_detector("configs/_base_/models/blazeface_paper.yml")
    reg, logits = paper.raw(torch.zeros(1, 3, 128, 128))
    assert reg.shape == (1, 896, 16) and logits.shape == (1, 896, 1)


def test_level_mismatch_is_a_clear_error():
    cfg = _cfg()
    cfg["model"]["anchors"].update(num_layers=5, strides=[8, 16, 16, 16, 32])
    with pytest.raises(ValueError, match="2 feature levels.*3"):
        build_detector(cfg)


def test_training_step_gives_finite_gradients_everywhere():
    m = build_detector(FRONT)
    _, x, targets = _batch(128, n=2)
    targets[0]["keypoints_visible"][0, 4:] = False  # ears missing
    targets[1] = {"boxes": torch.zeros(0, 4), "keypoints": torch.zeros(0, 6, 2),
                  "keypoints_visible": torch.zeros(0, 6, dtype=torch.bool)}  # background-only image
    out = m(x, targets)
    assert set(out) >= {"loss", "loss_cls", "loss_box", "loss_kpt", "num_pos"}
    assert torch.isfinite(out["loss"]) and int(out["num_pos"]) > 0
    out["loss"].backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, f"{name} has no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    # targets without keypoints (box-only datasets) and with ignored faces also work
    m.zero_grad()
    out = m(x, [{"boxes": targets[0]["boxes"], "ignore": torch.tensor([True] * len(targets[0]["boxes"]))},
                {"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]])}])
    assert torch.isfinite(out["loss"]) and out["loss_kpt"].item() == 0.0


def test_bad_targets_are_named():
    m = build_detector(FRONT)
    x = torch.zeros(1, 3, 128, 128)
    with pytest.raises(ValueError, match=r"targets\[0\]\['keypoints'\].*num_keypoints=6"):
        m(x, [{"boxes": torch.tensor([[0.0, 0.0, 9.0, 9.0]]), "keypoints": torch.zeros(1, 5, 2)}])
    with pytest.raises(ValueError, match="1 images but 2 targets"):
        m(x, [{"boxes": torch.zeros(0, 4)}] * 2)
    with pytest.raises(ValueError, match="divisible by 16"):
        m.raw(torch.zeros(1, 3, 120, 128))


def test_overfits_four_synthetic_images():
    """200 Adam steps on 4 fixed images (64x64 for speed) cut the loss by >= 90% and find the faces."""
    torch.manual_seed(0)
    m = build_detector(_cfg(input_size=[64, 64]))
    data, x, targets = _batch(64)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    losses_ = []
    for _ in range(200):
        out = m(x, targets)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses_.append(out["loss"].item())
    first, last = losses_[0], float(np.mean(losses_[-5:]))
    assert last <= 0.1 * first, f"loss {first:.3f} -> {last:.3f}"
    preds = m.predict([d[0] for d in data], score_thr=0.5)
    assert m.training  # predict restores the mode
    for (img, boxes, _), p in zip(data, preds):
        assert len(p["boxes"]) == len(boxes)
        for b in boxes:
            assert max(_iou(b, q) for q in p["boxes"]) > 0.7


def _fake_raw(m, anchor_index, target_xy):
    """Replace ``raw`` by outputs with one confident detection centred at ``target_xy`` (input px)."""
    def raw(x):
        h, w = x.shape[-2:]
        a = m.anchors_for((h, w))[0]
        reg = torch.zeros(x.shape[0], a.shape[0], 16)
        logits = torch.full((x.shape[0], a.shape[0], 1), -10.0)
        cx, cy = target_xy[0] / w, target_xy[1] / h
        reg[:, anchor_index, 0] = (cx - a[anchor_index, 0]) / a[anchor_index, 2] * w
        reg[:, anchor_index, 1] = (cy - a[anchor_index, 1]) / a[anchor_index, 3] * h
        reg[:, anchor_index, 2:4] = 20.0  # 20x20 input px
        reg[:, anchor_index, 4::2] = reg[:, anchor_index, 0:1]  # all keypoints at the centre
        reg[:, anchor_index, 5::2] = reg[:, anchor_index, 1:2]
        logits[:, anchor_index] = 5.0
        return reg, logits
    m.raw = raw


def test_predict_maps_input_centre_to_original_centre():
    m = build_detector(FRONT)
    _fake_raw(m, anchor_index=100, target_xy=(64.0, 64.0))
    img = np.zeros((100, 200, 3), np.uint8)  # non-square: letterboxed into 128x64 + 32 px padding above/below
    (det,) = m.predict([img])
    assert det["boxes"].dtype == np.float32 and det["boxes"].shape == (1, 4)
    cx, cy = (det["boxes"][0, 0] + det["boxes"][0, 2]) / 2, (det["boxes"][0, 1] + det["boxes"][0, 3]) / 2
    assert abs(cx - 100) < 0.01 and abs(cy - 50) < 0.01
    scale = 128 / 200
    assert np.allclose(det["boxes"][0, 2] - det["boxes"][0, 0], 20 / scale, atol=0.01)
    assert det["keypoints"].shape == (1, 6, 2) and np.allclose(det["keypoints"][0], [100, 50], atol=0.01)
    assert np.isclose(det["scores"][0], 1 / (1 + np.exp(-5.0)))
    # at a larger run-time input size the same point still maps back to the image centre
    (det,) = m.predict([img], input_size=(256, 256))  # (64, 64) of a 256 input: 64 px padding, scale 1.28
    assert np.allclose(det["keypoints"][0, 0], [64 / 1.28, 0.0], atol=0.01)
    _fake_raw(m, anchor_index=100, target_xy=(128.0, 128.0))
    (det,) = m.predict(img, input_size=(256, 256))
    cx, cy = (det["boxes"][0, 0] + det["boxes"][0, 2]) / 2, (det["boxes"][0, 1] + det["boxes"][0, 3]) / 2
    assert abs(cx - 100) < 0.01 and abs(cy - 50) < 0.01


def test_predict_empty_and_bad_input():
    m = build_detector(FRONT)
    (det,) = m.predict([np.zeros((50, 80, 3), np.uint8)], score_thr=1.1)
    assert det["boxes"].shape == (0, 4) and det["scores"].shape == (0,) and det["keypoints"].shape == (0, 6, 2)
    with pytest.raises(ValueError, match="image 1.*uint8"):
        m.predict([np.zeros((50, 80, 3), np.uint8), np.zeros((50, 80, 3), np.float32)])
    with pytest.raises(ValueError, match="divisible by 16"):
        m.predict([np.zeros((50, 80, 3), np.uint8)], input_size=100)


def test_runtime_input_size_anchors_cached():
    m = build_detector(FRONT).eval()
    reg, logits = m.raw(torch.zeros(1, 3, 256, 192))
    assert reg.shape == (1, 32 * 24 * 2 + 16 * 12 * 6, 16)
    a1, _ = m.anchors_for((256, 192))
    a2, _ = m.anchors_for([256, 192])
    assert a1 is a2 and a1.shape[0] == reg.shape[1]
    boxes, kpts, scores = m.decode(reg, logits, input_size=(256, 192))
    a = reg.shape[1]
    assert boxes.shape == (1, a, 4) and kpts.shape == (1, a, 6, 2) and scores.shape == (1, a)
    with pytest.raises(ValueError, match="pass input_size"):
        m.decode(reg, logits)


def test_checkpoint_round_trip(tmp_path):
    m = build_detector(FRONT)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01)
    path = save_checkpoint(tmp_path / "sub" / "model.pt", model_checkpoint(m, meta={"epoch": 3}))
    assert sorted(os.listdir(path.parent)) == ["model.pt"]  # atomic: no temp file left
    ckpt = load_checkpoint(path)
    assert ckpt["meta"] == {"epoch": 3} and ckpt["model_cfg"]["backbone"]["type"] == "BlazeFaceFrontBackbone"
    loaded = build_detector(FRONT, weights=str(path))
    assert not loaded.training
    x = torch.randn(1, 3, 128, 128)
    m.eval()
    assert torch.allclose(loaded.raw(x)[0], m.raw(x)[0], atol=1e-5)
    # a bare state dict is accepted too (no architecture record, strict tensor check only)
    torch.save(m.state_dict(), tmp_path / "bare.pt")
    assert load_checkpoint(tmp_path / "bare.pt")["state_dict"].keys() == m.state_dict().keys()
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_detector(FRONT, weights=str(tmp_path / "nope.pt"))


def test_back_checkpoint_refused_by_front_config(tmp_path):
    back = build_detector(BACK)
    path = save_checkpoint(tmp_path / "back.pt", model_checkpoint(back))
    with pytest.raises(CheckpointError) as err:
        build_detector(FRONT, weights=str(path))
    msg = str(err.value)
    for key in ("model.backbone.type", "model.input_size", "model.anchors.strides", "model.anchors.min_scale"):
        assert key in msg
    # non-strict loading reports what did not fit instead
    front = build_detector(FRONT)
    report = load_model_weights(front, load_checkpoint(path), strict=False)
    assert report["loaded"] and report["unexpected"] and report["shape_mismatch"]
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model_weights(front, load_checkpoint(path), strict=True)


def test_init_from_config_keeps_train_mode(tmp_path):
    m = build_detector(FRONT)
    path = save_checkpoint(tmp_path / "init.pt", model_checkpoint(m))
    cfg = _cfg(init=str(path))
    m2 = build_detector(cfg)
    assert m2.training
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))


def test_mediapipe_weights_find_the_face(shared):
    img = cv2.cvtColor(cv2.imread(str(shared("weights", "hollance", "1face.png"))), cv2.COLOR_BGR2RGB)
    m = build_detector(FRONT, weights="mediapipe_short_range")
    (det,) = m.predict([img])
    assert len(det["scores"]) == 1 and det["scores"][0] > 0.9
    # same face as the LiteRT reference decode of anchor 173 (box centre ~ (51.4, 46.4) px)
    cx, cy = (det["boxes"][0, :2] + det["boxes"][0, 2:]) / 2
    assert abs(cx - 51.4) < 2 and abs(cy - 46.4) < 2


def test_architecture_check_and_unreadable_files(tmp_path):
    from blazekit.checkpoint import architecture_diff, check_compatible

    # a key written on one side only is that class's default: not a difference
    check_compatible({"head": {"type": "SSDHead"}, "input_size": [128, 128]},
                     {"head": {"type": "SSDHead", "prior_prob": 0.01}, "input_size": (128, 128)})
    assert architecture_diff({"anchors": {"min_scale": 0.15625}}, {"anchors": {"min_scale": 0.1484375}}) == [
        "model.anchors.min_scale: checkpoint 0.15625 vs config 0.1484375"]
    assert architecture_diff(None, {"head": {"type": "SSDHead"}}) == []  # bare state dicts are not checked here
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pt"):
        load_checkpoint(bad)
    torch.save({"state_dict": {}, "meta": {"rng": np.random.get_state()}}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="pickled.pt: not a blazekit checkpoint or it holds Python objects"):
        load_checkpoint(tmp_path / "pickled.pt")  # numpy objects need unpickling: refused, never executed


def test_mediapipe_weights_at_non_square_runtime_size(shared):
    """The same photo padded to 128x256 and run at input 128x256 gives the same face, 64 px to the right."""
    img = cv2.cvtColor(cv2.imread(str(shared("weights", "hollance", "1face.png"))), cv2.COLOR_BGR2RGB)
    m = build_detector(FRONT, weights="mediapipe_short_range")
    (ref,) = m.predict([img])
    wide = cv2.copyMakeBorder(img, 0, 0, 64, 64, cv2.BORDER_CONSTANT, value=0)
    (det,) = m.predict([wide], input_size=(128, 256))
    assert len(det["scores"]) == 1 and abs(det["scores"][0] - ref["scores"][0]) < 1e-3
    assert np.allclose(det["boxes"][0], ref["boxes"][0] + [64, 0, 64, 0], atol=0.5)


def test_misspelt_named_weights_suggest_the_name():
    with pytest.raises(FileNotFoundError, match=r"'mediapipe_short_rang'.*Did you mean 'mediapipe_short_range'"):
        build_detector(FRONT, weights="mediapipe_short_rang")


def test_named_init_in_config_loads_shipped_weights():
    """``model.init: mediapipe_short_range`` loads the shipped checkpoint by name and stays trainable."""
    from blazekit.weights import NAMED_WEIGHTS

    m = build_detector(_cfg(init="mediapipe_short_range"))
    assert m.training
    shipped = torch.load(NAMED_WEIGHTS["mediapipe_short_range"], map_location="cpu", weights_only=True)["state_dict"]
    sd = m.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in shipped.items())


@pytest.mark.parametrize("k", [0, 4])
def test_num_keypoints_is_configurable(k):
    """K sets the head width (4 + 2K per anchor), the decoded keypoints and the predict output."""
    m = build_detector(_cfg(num_keypoints=k))
    assert [c.out_channels for c in m.head.reg_convs] == [2 * (4 + 2 * k), 6 * (4 + 2 * k)]
    reg, logits = m.raw(torch.zeros(1, 3, 128, 128))
    assert reg.shape == (1, 896, 4 + 2 * k) and logits.shape == (1, 896, 1)
    _, kpts, _ = m.decode(reg, logits)
    assert kpts.shape == (1, 896, k, 2)
    target = {"boxes": torch.tensor([[10.0, 10.0, 60.0, 60.0]]), "keypoints": torch.full((1, k, 2), 30.0)}
    out = m(torch.zeros(1, 3, 128, 128), [target])
    assert torch.isfinite(out["loss"]) and (out["loss_kpt"].item() > 0) == (k > 0)
    (det,) = m.predict([np.zeros((50, 80, 3), np.uint8)], score_thr=0.0, max_det=3)
    assert det["keypoints"].shape == (3, k, 2) and det["boxes"].shape == (3, 4)


def test_detector_takes_built_parts_and_a_ready_made_backbone(tmp_path):
    """BlazeFace is assembled from modules (no config): any nn.Module giving the anchor levels works."""
    from torch import nn

    from blazekit.anchors import SSDAnchorGenerator
    from blazekit.checkpoint import model_checkpoint
    from blazekit.models.build import load_weights
    from blazekit.models.heads import SSDHead
    from blazekit.postprocess import NMS

    class TwoLevels(nn.Module):  # a plain module (no out_channels / strides attributes): strides 8 and 16
        def __init__(self):
            super().__init__()
            self.c16 = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1))
            self.c8 = nn.Conv2d(8, 16, 3, stride=2, padding=1)

        def forward(self, x):
            f16 = self.c16(x)
            return [f16, self.c8(f16)]

    anchors = SSDAnchorGenerator(**{k: v for k, v in config.load(os.path.join(REPO, FRONT))["model"]["anchors"].items()
                                    if k != "type"})
    m = BlazeFace(TwoLevels(), SSDHead([8, 16], [2, 6], num_keypoints=6), anchors, postprocess=NMS(score_thr=0.0),
                  input_size=128)
    assert m.cfg is None and m.strides == [8, 16] and type(m.postprocess) is NMS
    reg, logits = m.raw(torch.zeros(2, 3, 128, 128))
    assert reg.shape == (2, 896, 16) and logits.shape == (2, 896, 1)
    _, x, targets = _batch(128, n=2)
    out = m(x, targets)
    assert torch.isfinite(out["loss"]) and int(out["num_pos"]) > 0
    (det,) = m.predict([np.zeros((60, 90, 3), np.uint8)], max_det=5)
    assert det["boxes"].shape == (5, 4) and det["keypoints"].shape == (5, 6, 2)
    # its checkpoint records no architecture; loading it back is checked tensor by tensor
    path = save_checkpoint(tmp_path / "hand.pt", model_checkpoint(m))
    assert load_checkpoint(path)["model_cfg"] is None
    assert load_weights(m, path)["loaded"]
    with pytest.raises(ValueError, match="gives 1 feature levels.*describes 2 levels"):  # attributes are checked
        bad = backbones.BlazeFaceFrontBackbone()
        bad.out_channels, bad.strides = [88], [16]
        BlazeFace(bad, SSDHead([88], [2]), anchors)


def test_detectors_registry_builds_blazeface_with_its_config():
    """``DETECTORS.build`` (used by convert.py) still turns a model section into a BlazeFace with ``cfg``."""
    from blazekit.registry import DETECTORS

    section = _cfg()["model"]
    m = DETECTORS.build(section, where="model")
    assert isinstance(m, BlazeFace) and m.cfg["backbone"] == section["backbone"]
    assert m.cfg["postprocess"]["type"] == "WeightedBlending" and m.head.num_anchors == [2, 6]
    with pytest.raises(Exception, match="does not accept 'bakbone'.*did you mean 'backbone'"):
        DETECTORS.build({**section, "bakbone": {}}, where="model")


def test_default_parts_are_stated_once():
    """A part left out (by hand or in the config) is ``DEFAULT_PARTS``'s; the config records it by its registry
    name, and ``predict``'s preprocessing defaults are the schema's."""
    from blazekit import options
    from blazekit.models.detector import DEFAULT_PARTS, DEFAULT_PREPROCESS

    section = {k: v for k, v in _cfg()["model"].items() if k not in DEFAULT_PARTS and k != "preprocess"}
    built = build_detector(section)
    by_hand = BlazeFace(built.backbone, built.head, built.anchor_generator)
    for name, cls in DEFAULT_PARTS.items():
        assert type(getattr(built, name)) is cls and type(getattr(by_hand, name)) is cls
        assert built.cfg[name] == {"type": cls.__name__}
    assert DEFAULT_PREPROCESS == options.defaults(options.PREPROCESS) == built.cfg["preprocess"]
    assert by_hand.preprocess_cfg == {"resize": "letterbox", "normalize": "minus_one_one", "pad_value": 0}


def test_one_weights_loader_reports_what_loaded(tmp_path):
    """``load_weights`` serves --weights, model.init and the distillation teacher: strict refuses another
    architecture listing its keys and tensors and leaves the model as it was; strict=False loads what fits and
    reports the rest (load_summary: the line the trainer logs)."""
    from blazekit.checkpoint import load_summary
    from blazekit.models.build import load_weights

    back = build_detector(BACK)
    path = save_checkpoint(tmp_path / "back.pt", model_checkpoint(back))
    front = build_detector(FRONT)
    before = {k: v.clone() for k, v in front.state_dict().items()}
    for setting, hint in (("weights", "Use the config the checkpoint was trained with"),
                          ("model.init", "Use the matching config, or set train.init_strict: false")):
        with pytest.raises(CheckpointError) as err:
            load_weights(front, path, setting=setting)
        msg = str(err.value)
        assert msg.startswith(f"{setting} '{path}' ({path}) does not fit the model: architecture model.backbone.type")
        assert "model.input_size" in msg and "shape mismatch (" in msg and hint in msg
    assert all(torch.equal(v, front.state_dict()[k]) for k, v in before.items())  # nothing loaded
    report = load_weights(front, path, strict=False)
    assert report == load_model_weights(build_detector(FRONT), load_checkpoint(path), strict=False)
    assert report["loaded"] and report["shape_mismatch"] and report["unexpected"]
    sd = load_checkpoint(path)["state_dict"]
    assert all(torch.equal(front.state_dict()[k], sd[k]) for k in report["loaded"])
    total = len(front.state_dict())
    assert load_summary(report).startswith(f"loaded {len(report['loaded'])}/{total} tensors; not loaded: missing ")
    assert load_summary({"loaded": ["a"], "missing": list("bcdefg"), "unexpected": [],
                         "shape_mismatch": [("h", (1,), (2,))]}) == (
        "loaded 1/8 tensors; not loaded: missing 6 (b, c, d, e, f, ...), unexpected 0, shape mismatch 1 (h (1,)->(2,))")
    with pytest.raises(FileNotFoundError, match=r"^model.init: weights 'nope.pt': not a named weight"):
        load_weights(front, "nope.pt", setting="model.init")
    with pytest.raises(FileNotFoundError, match=r"^weights 'nope.pt': not a named weight"):
        load_weights(front, "nope.pt")


def test_models_import_one_way():
    """The detector never imports its builder (build -> detector only: no circle), the teacher's loss terms never
    import the detector, and no module of models/ imports the engine (any import, also inside functions)."""
    import ast
    from pathlib import Path

    pkg = Path(REPO) / "blazekit" / "models"
    for f in pkg.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = "." * node.level + (node.module or "")
                names |= {base} | {f"{base}.{a.name}" if node.module else base + a.name for a in node.names}
            elif isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
        assert not any("engine" in n for n in names), f"models/{f.name} imports the engine: {sorted(names)}"
        if f.stem in ("detector", "teacher"):
            assert not any(n.startswith(".build") for n in names), f"models/{f.name} imports models.build"
        if f.stem == "teacher":
            assert not any(n.startswith(".detector") for n in names), "models/teacher.py imports the detector"
