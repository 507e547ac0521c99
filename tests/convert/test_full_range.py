"""MediaPipe full range import: the sparse tflite's structure and conversion, live LiteRT parity of the shipped
weights (full and short range), a wrong config named (the model itself: tests/models/test_full_range.py)."""
import cv2
import numpy as np
import pytest
import torch

import blazekit
from blazekit import config, convert
from blazekit.checkpoint import load_checkpoint
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
