"""Weight import: LiteRT / hollance parity, BN compensation, checkpoint layout, clear failures."""
import importlib.util
import math

import numpy as np
import pytest
import torch

import blazekit
from blazekit import config, convert
from blazekit.weights import NAMED_WEIGHTS, resolve_weights

from tests.conftest import REPO

CONFIGS = REPO / "configs" / "_base_" / "models"
NAMES = ["1face", "3faces", "4faces", "astronaut"]


def model_cfg(variant):
    return config.load(CONFIGS / f"blazeface_{variant}.yml")["model"]


def _max_violation(out, ref):
    """max over elements of |out - ref| - (1e-3 + 1e-5 |ref|); <= 0 means within tolerance."""
    out = out.detach().numpy()
    assert out.shape == ref.shape
    return float((np.abs(out - ref) - (1e-3 + 1e-5 * np.abs(ref))).max())


@pytest.fixture(scope="module")
def mediapipe_model():
    return blazekit.build_detector(CONFIGS / "blazeface_front.yml", weights="mediapipe_short_range")


@pytest.mark.parametrize("name", NAMES)
def test_shipped_weights_match_litert(shared, mediapipe_model, name):
    ref_dir = shared("weights", "reference")
    x = torch.from_numpy(np.load(ref_dir / f"{name}_input.npy").transpose(0, 3, 1, 2).copy())  # NHWC -> NCHW
    assert not mediapipe_model.training
    with torch.no_grad():
        reg, logits = mediapipe_model.raw(x)
    assert _max_violation(reg, np.load(ref_dir / f"{name}_regressors.npy")) <= 0
    assert _max_violation(logits, np.load(ref_dir / f"{name}_classificators.npy")) <= 0


def test_shipped_checkpoint_is_the_tflite_conversion(shared):
    src = shared("weights", "mediapipe", "face_detection_short_range.tflite")
    fresh = convert.convert_checkpoint(src)
    shipped = torch.load(NAMED_WEIGHTS["mediapipe_short_range"], map_location="cpu", weights_only=True)
    assert set(shipped) >= {"state_dict", "model_cfg", "meta"}
    assert shipped["meta"]["md5"] == "c21001d6003fe98ed674c5f6c13ca652" == fresh["meta"]["md5"]
    assert shipped["meta"]["source"] == "face_detection_short_range.tflite"
    assert shipped["model_cfg"] == fresh["model_cfg"] and "init" not in shipped["model_cfg"]
    assert shipped["model_cfg"]["backbone"]["type"] == "BlazeFaceFrontBackbone"
    assert shipped["state_dict"].keys() == fresh["state_dict"].keys()
    assert all(torch.equal(shipped["state_dict"][k], v) for k, v in fresh["state_dict"].items())


def test_bn_layers_compensate_eps(shared):
    """BN computes x + source bias: mean 0, var 1, weight sqrt(1 + eps), bias = source bias."""
    src = shared("weights", "hollance", "blazeface.pth")
    sd = convert.convert_hollance(src, model_cfg("front"))
    hol = torch.load(src, map_location="cpu", weights_only=True)
    assert torch.equal(sd["backbone.stem.0.conv.weight"], hol["backbone1.0.weight"])
    assert torch.equal(sd["backbone.stem.0.bn.bias"], hol["backbone1.0.bias"])
    assert torch.all(sd["backbone.stem.0.bn.running_mean"] == 0)
    assert torch.all(sd["backbone.stem.0.bn.running_var"] == 1)
    assert torch.allclose(sd["backbone.stem.0.bn.weight"], torch.full((24,), math.sqrt(1 + 1e-5)))
    assert torch.equal(sd["backbone.stages.1.4.convs.1.conv.weight"], hol["backbone2.4.convs.1.weight"])
    assert torch.equal(sd["head.reg_convs.1.weight"], hol["regressor_16.weight"])
    assert torch.equal(sd["head.cls_convs.0.bias"], hol["classifier_8.bias"])


def test_tflite_weights_are_dequantized_and_transposed(shared):
    src = convert.read_tflite(shared("weights", "mediapipe", "face_detection_short_range.tflite"))
    assert src.input_hw == (128, 128) and len(src.backbone) == 33 and len(src.head) == 2
    stem, dw = src.backbone[0], src.backbone[1]
    assert stem.weight.shape == (24, 3, 5, 5) and stem.weight.dtype == np.float32 and stem.stride == 2
    assert dw.depthwise and dw.weight.shape == (24, 1, 3, 3) and dw.padding == "SAME"
    assert [c.stride for c in src.backbone].count(2) == 4  # stem + 3 stride-2 depthwise convs
    assert src.head[0]["cls"].name == "classificator_8/Kernel" and src.head[1]["reg"].weight.shape == (96, 96, 1, 1)
    # fp16 values survive exactly
    assert np.array_equal(stem.weight.astype(np.float16).astype(np.float32), stem.weight)


@pytest.mark.parametrize("variant, file", [("front", "blazeface.pth"), ("back", "blazefaceback.pth")])
def test_hollance_parity(shared, tmp_path, variant, file):
    src = shared("weights", "hollance", file)
    assert convert.guess_variant(src) == variant
    out = tmp_path / f"{variant}.pt"
    convert.save_converted(src, out)
    model = blazekit.build_detector(CONFIGS / f"blazeface_{variant}.yml", weights=out)
    ref_dir = shared("weights", "reference")
    x = torch.cat([torch.from_numpy(np.load(ref_dir / f"hollance_{variant}_{n}_input.npy")) for n in NAMES])
    with torch.no_grad():
        reg, logits = model.raw(x)
    for i, n in enumerate(NAMES):
        assert _max_violation(reg[i:i + 1], np.load(ref_dir / f"hollance_{variant}_{n}_regressors.npy")) <= 0, n
        assert _max_violation(logits[i:i + 1], np.load(ref_dir / f"hollance_{variant}_{n}_classificators.npy")) <= 0, n


def test_wrong_architecture_fails_naming_tensors(shared):
    with pytest.raises(convert.ConversionError, match=r"65 backbone convs.*final\.convs\.1\.weight"):
        convert.convert_hollance(shared("weights", "hollance", "blazefaceback.pth"), model_cfg("front"))
    with pytest.raises(convert.ConversionError, match="depthwise_conv2d/Kernel"):
        convert.convert_tflite(shared("weights", "mediapipe", "face_detection_short_range.tflite"), model_cfg("paper"))


def test_bad_files_are_explained(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"x")
    with pytest.raises(convert.ConversionError, match="unknown weight format '.onnx'"):
        convert.convert_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="not found"):
        convert.convert_checkpoint(tmp_path / "missing.tflite")
    junk = tmp_path / "junk.pth"
    torch.save({"something": torch.zeros(3)}, junk)
    with pytest.raises(convert.ConversionError, match="something"):
        convert.convert_hollance(junk, model_cfg("front"))


def test_cli_converts_by_suffix(shared, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bk_tools_convert", REPO / "tools" / "convert.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "front.pt"
    assert tool.main([str(shared("weights", "hollance", "blazeface.pth")), str(out),
                      "--config", str(CONFIGS / "blazeface_front.yml")]) == 0
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert ckpt["meta"] == {"source": "blazeface.pth", "md5": "304ae14947da9967db90ec13380abff8",
                            "format": "hollance", "converter": "blazekit.convert"}
    assert "wrote" in capsys.readouterr().out


def test_named_weights_and_attribution():
    path = resolve_weights("mediapipe_short_range")
    assert path == NAMED_WEIGHTS["mediapipe_short_range"] and path.is_file()
    with pytest.raises(FileNotFoundError, match="Did you mean 'mediapipe_short_range'.*Named weights"):
        resolve_weights("mediapipe_shortrange")
    assert resolve_weights(str(path)) == path
    text = (path.parent / "ATTRIBUTION.md").read_text()
    assert "c21001d6003fe98ed674c5f6c13ca652" in text and "Apache" in text and "tools/convert.py" in text
    assert "Apache License" in (path.parent / "LICENSE").read_text()


def test_corrupt_sources_name_the_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    zeros, noise = tmp_path / "zeros.tflite", tmp_path / "noise.tflite"
    zeros.write_bytes(b"\0" * 64)
    noise.write_bytes(rng.bytes(4000))
    with pytest.raises(convert.ConversionError, match=r"zeros\.tflite: not a TFLite model with a graph"):
        convert.read_tflite(zeros)
    with pytest.raises(convert.ConversionError, match=r"noise\.tflite: not a readable TFLite flatbuffer"):
        convert.read_tflite(noise)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle")
    # without --config the variant is guessed from the content first: that must name the file too
    with pytest.raises(convert.ConversionError, match=r"junk\.pth: cannot load as a PyTorch state dict"):
        convert.convert_checkpoint(junk)
    spec = importlib.util.spec_from_file_location("bk_tools_convert2", REPO / "tools" / "convert.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([str(junk), str(tmp_path / "out.pt")]) == 2
    assert "error: " + str(junk) in capsys.readouterr().err and not (tmp_path / "out.pt").exists()


class _Evil:
    """Unpickling calls ``marker.touch()``-like code: a file that runs code when loaded with pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("layout", ["torch", "raw_pickle"])
def test_pickled_code_is_refused_not_run(tmp_path, layout):
    import pickle
    import subprocess
    import sys

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    if layout == "torch":
        torch.save({"backbone1.0.weight": _Evil(marker)}, evil)
    else:
        evil.write_bytes(pickle.dumps({"x": _Evil(marker)}))
    assert not marker.exists()
    with pytest.raises(convert.ConversionError, match="not a blazekit checkpoint or it holds Python objects"):
        convert.convert_checkpoint(evil)
    out = tmp_path / "out.pt"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "convert.py"), str(evil), str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {evil}: not a blazekit checkpoint or it holds Python objects that are not loaded for safety "
        "(only tensors and plain containers are read)"]
    assert "Traceback" not in proc.stderr and not marker.exists() and not out.exists()
