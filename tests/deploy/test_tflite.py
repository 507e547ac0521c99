"""MediaPipe .tflite export: byte identity, only weight bytes change, the import's exact inverse, LiteRT parity,
refusals. Everything here uses the templates and demo photos shipped in the package (no ../shared needed)."""
import hashlib
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import blazekit
from blazekit import convert
from blazekit.deploy.tflite import TFLiteExportError, _Flat, export_tflite, stored_tensors
from blazekit.preprocess import letterbox, normalize
from blazekit.weights import TFLITE_TEMPLATES

from tests.conftest import REPO

FRONT = REPO / "configs" / "blazeface_front.yml"
FULL = REPO / "configs" / "blazeface_full_range.yml"
MODELS = {  # name: (config, weights, input size, md5 of MediaPipe's file in the mediapipe 0.10.21 wheel)
    "short": (FRONT, "mediapipe_short_range", 128, "c21001d6003fe98ed674c5f6c13ca652"),
    "full": (FULL, "mediapipe_full_range", 192, "61be71c968b83f3bd2e04805c49219d4"),
}


def _detector(name, **overrides):
    cfg, weights, _, _ = MODELS[name]
    return blazekit.build_detector(cfg, weights=weights).eval()


def _finetuned(det, seed=0, scale=0.02):
    """What fine-tuning does to every tensor: weights move by ~2 % (pruned zeros stay zero), BN statistics and
    affine parameters move off the identity the import sets."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in det.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(1 + scale * torch.randn(m.weight.shape, generator=g))
                if m.bias is not None:
                    m.bias.add_(scale * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.add_(scale * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.mul_(1 + scale * torch.rand(m.running_var.shape, generator=g))
                m.weight.mul_(1 + scale * torch.randn(m.weight.shape, generator=g))
                m.bias.add_(scale * torch.randn(m.bias.shape, generator=g))
    return det


def _photos(size):
    paths = sorted((REPO / "blazekit" / "data" / "demo" / "images").glob("*.jpg"))
    imgs = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]
    return np.stack([normalize(letterbox(im, (size, size))[0]) for im in imgs])  # [N, 3, H, W] in [-1, 1]


def _litert(path, x):
    """LiteRT's (regressors, classificators) for each image of ``x`` [N, 3, H, W]."""
    interp = pytest.importorskip("ai_edge_litert.interpreter",
                                 reason="ai-edge-litert not installed (pip install 'blazekit[dev]')").Interpreter
    it = interp(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    regs, logits = [], []
    for img in x:
        it.set_tensor(it.get_input_details()[0]["index"], np.ascontiguousarray(img.transpose(1, 2, 0)[None]))
        it.invoke()
        outs = sorted((it.get_tensor(d["index"]) for d in it.get_output_details()), key=lambda a: a.shape[-1])
        regs.append(outs[1][0])
        logits.append(outs[0][0])
    return np.stack(regs), np.stack(logits)


def _structure(buf):
    """Everything but the weight values: io names, op codes and tensor wiring, tensor names/types/shapes, metadata."""
    flat = _Flat(buf)
    g, m = flat.graph, flat.model
    tensors = [(flat.name(i), g.Tensors(i).Type(), flat.shape(i)) for i in range(g.TensorsLength())]
    ops = [(g.Operators(i).OpcodeIndex(), tuple(g.Operators(i).InputsAsNumpy()), tuple(g.Operators(i).OutputsAsNumpy()))
           for i in range(g.OperatorsLength())]
    meta = [(m.Metadata(i).Name(), m.Buffers(m.Metadata(i).Buffer()).DataAsNumpy().tobytes())
            for i in range(m.MetadataLength())]
    io = ([flat.name(int(t)) for t in g.InputsAsNumpy()], [flat.name(int(t)) for t in g.OutputsAsNumpy()])
    return tensors, ops, meta, io


@pytest.mark.parametrize("name", ["short", "full"])
def test_untouched_weights_give_mediapipes_file_byte_for_byte(name, tmp_path):
    cfg, weights, size, md5 = MODELS[name]
    template = Path(TFLITE_TEMPLATES[(size, size)]["path"])
    assert hashlib.md5(template.read_bytes()).hexdigest() == md5  # the shipped template is MediaPipe's own file
    out = tmp_path / "m.tflite"
    r = subprocess.run([sys.executable, str(REPO / "tools" / "export.py"), str(cfg), "--weights", weights,
                        "--format", "tflite", "--out", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == template.read_bytes()
    assert "0 of" in r.stdout and "post-processing is MediaPipe's" in r.stdout
    assert "note: fp16 stores these weights exactly (outputs on the 10 demo photos unchanged)" in r.stdout


@pytest.mark.parametrize("name", ["short", "full"])
def test_finetuned_weights_change_only_bytes_inside_weight_buffers(name, tmp_path):
    det = _finetuned(_detector(name))
    template = Path(TFLITE_TEMPLATES[(det.input_size[0], det.input_size[1])]["path"]).read_bytes()
    done = export_tflite(det, tmp_path / "ft.tflite")
    out = done.path.read_bytes()
    assert len(out) == len(template) and out != template
    flat = _Flat(template)
    tensors = stored_tensors(det, template, "template")
    inside = np.zeros(len(template), bool)
    for t in tensors:
        start, length = flat.span(t)
        inside[start:start + length] = True
    changed = np.frombuffer(out, np.uint8) != np.frombuffer(template, np.uint8)
    assert changed.any() and not (changed & ~inside).any()
    assert _structure(out) == _structure(template)  # io names, ops, wiring, metadata (TFLITE_METADATA) untouched
    assert done.tensors_changed == done.tensors_written == len(tensors)
    if name == "full":
        assert done.sparse_kept == 46 and not done.densified


@pytest.mark.parametrize("name", ["short", "full"])
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_convert_of_export_gives_the_weights_back(name, precision, tmp_path):
    """import(export(det)) = det's BN-folded weights, exactly after rounding to the stored precision."""
    from blazekit.deploy.tflite import tflite_weights

    det = _finetuned(_detector(name), seed=1)
    path = export_tflite(det, tmp_path / "ft.tflite", precision=precision).path
    template = Path(TFLITE_TEMPLATES[tuple(det.input_size)]["path"]).read_bytes()
    want = tflite_weights(det, template, "template")
    back = blazekit.build_detector(MODELS[name][0], weights=None)
    back.load_state_dict(convert.convert_tflite(path, back.cfg), strict=False)
    got = tflite_weights(back.eval(), template, "template")
    dtype = np.float16 if precision == "fp16" else np.float32
    assert [n for _, n, _ in got] == [n for _, n, _ in want]
    for (_, role, g), (_, _, w) in zip(got, want):
        assert np.array_equal(g.astype(dtype), w.astype(dtype)), role
    assert any(not np.array_equal(w, w.astype(np.float16).astype(np.float32)) for _, _, w in want)  # fp16 rounds


def _trained(det, steps=3, lr=1e-3):
    """A real (tiny) fine-tune: Adam steps on the demo photos, labelled with the model's own detections, BatchNorm
    in train mode. Full range keeps its pruned weights at zero, as ``train.keep_sparsity`` does."""
    size = det.input_size[0]
    paths = sorted((REPO / "blazekit" / "data" / "demo" / "images").glob("*.jpg"))[:4]
    boxed = [letterbox(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), (size, size))[0] for p in paths]
    targets = [{"boxes": d["boxes"], "keypoints": d["keypoints"]} for d in det.predict(boxed)]
    x = torch.from_numpy(np.stack([normalize(b) for b in boxed]))
    masks = {m: m.weight != 0 for m in det.modules() if isinstance(m, torch.nn.Conv2d)}
    opt = torch.optim.Adam(det.parameters(), lr=lr)
    det.train()
    for _ in range(steps):
        loss = det(x + 0.05 * torch.randn_like(x), targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for m, keep in masks.items():
                m.weight.mul_(keep)
    return det.eval()


@pytest.mark.parametrize("name, fp16_cost", [("short", 2e-3), ("full", 5e-3)])
def test_exported_file_in_litert_equals_det_raw(name, fp16_cost, tmp_path):
    """LiteRT on the exported file vs PyTorch, on real photos, relative to the largest |output| per image:
    fp32 equals ``det.raw`` within 1e-5; fp16 equals the same network with its weights rounded to fp16 within
    1e-5 (the export adds no error of its own), and ``det.raw`` within what fp16 storage costs (measured on this
    fine-tune: 1.2e-3 short range, 4.5e-3 full range, whose 91 convs in a row round more; RESULTS.md)."""
    det = _trained(_detector(name))
    x = _photos(det.input_size[0])

    def raw(model):
        with torch.no_grad():
            return [t.numpy() for t in model.raw(torch.from_numpy(x))]

    def worst(lite, ref):
        return max(float((np.abs(a - b) / np.abs(b).reshape(len(b), -1).max(1)[:, None, None]).max())
                   for a, b in zip(lite, ref))

    ref = raw(det)
    assert np.abs(ref[0]).max() > 10  # real outputs
    assert worst(_litert(export_tflite(det, tmp_path / "fp32.tflite", "fp32").path, x), ref) <= 1e-5
    fp16 = export_tflite(det, tmp_path / "fp16.tflite", "fp16").path
    rounded = blazekit.build_detector(MODELS[name][0], weights=None)
    rounded.load_state_dict(convert.convert_tflite(fp16, rounded.cfg), strict=False)
    assert worst(_litert(fp16, x), raw(rounded.eval())) <= 1e-5
    assert worst(_litert(fp16, x), ref) <= fp16_cost


def _random_detector(name, **model_overrides):
    """The model of ``name`` with config changes, random weights (refusals come before any weight is read)."""
    from blazekit import config

    cfg = config.load(MODELS[name][0], overrides=[f"{k}={v}" for k, v in model_overrides.items()])
    cfg["model"]["init"] = None
    return blazekit.build_detector(cfg).eval()


@pytest.mark.parametrize("overrides, says", [
    ({"model.input_size": "[256,256]"}, "MediaPipe ships no face detector graph of this size"),
    ({"model.preprocess.normalize": "zero_one"}, "model.preprocess.normalize"),
    ({"model.num_keypoints": 4}, "model.num_keypoints"),
    ({"model.anchors.min_scale": 0.2}, "model.anchors.min_scale"),
    ({"+model.coder.scale": 100}, "model.coder.scale"),
    ({"model.backbone.kernel_size": 5}, "model.backbone.kernel_size"),
])
def test_refuses_what_mediapipes_graph_hard_codes(overrides, says, tmp_path):
    det = _random_detector("short", **overrides)
    with pytest.raises(TFLiteExportError, match=says) as err:
        export_tflite(det, tmp_path / "x.tflite")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "x.tflite").exists()


def test_refuses_the_back_model_by_cli(tmp_path):
    from blazekit.checkpoint import model_checkpoint, save_checkpoint

    back = REPO / "configs" / "blazeface_back.yml"
    save_checkpoint(tmp_path / "back.pt", model_checkpoint(blazekit.build_detector(back)))
    r = subprocess.run([sys.executable, str(REPO / "tools" / "export.py"), str(back), "--weights",
                        str(tmp_path / "back.pt"), "--format", "tflite", "--out", str(tmp_path / "b.tflite")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and "back model (256x256) has none" in r.stderr
    assert not (tmp_path / "b.tflite").exists()


def test_onnx_only_options_are_refused_for_tflite(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "tools" / "export.py"), str(FRONT), "--weights",
                        "mediapipe_short_range", "--format", "tflite", "--with-postprocess", "--out",
                        str(tmp_path / "x.tflite")], capture_output=True, text=True)
    assert r.returncode == 2 and "--with-postprocess: ONNX options" in r.stderr


def test_fp16_overflow_and_non_finite_are_refused_naming_the_tensor(tmp_path):
    det = _detector("short")
    with torch.no_grad():
        det.head.cls_convs[0].weight[0, 0, 0, 0] = 1e6
    with pytest.raises(TFLiteExportError, match=r"head\.cls_convs\.0\.weight: \|value\| up to 1e\+06 overflows fp16"):
        export_tflite(det, tmp_path / "x.tflite")
    export_tflite(det, tmp_path / "x32.tflite", precision="fp32")  # fp32 holds it
    with torch.no_grad():
        det.head.cls_convs[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(TFLiteExportError, match="head.cls_convs.0.weight: non-finite"):
        export_tflite(det, tmp_path / "x32.tflite", precision="fp32")


def test_full_range_weights_that_left_the_sparse_layout(tmp_path):
    """A pruned weight that became non-zero: refused naming the tensor; ``densify=True`` stores it dense and the
    file still equals ``det.raw`` in LiteRT."""
    det = _detector("full")
    template = Path(TFLITE_TEMPLATES[(192, 192)]["path"]).read_bytes()
    with torch.no_grad():
        for m in det.modules():
            if isinstance(m, torch.nn.Conv2d) and (m.weight == 0).float().mean() > 0.25:
                m.weight[m.weight == 0] = 1e-2  # the first pruned conv grows back
                break
    with pytest.raises(TFLiteExportError, match=r"1 of the 46 sparse weight tensors .* non-zero weights where the "
                                                r"sparse layout has none\); pass --densify"):
        export_tflite(det, tmp_path / "x.tflite")
    done = export_tflite(det, tmp_path / "dense.tflite", densify=True)
    assert len(done.densified) == 1 and done.sparse_kept == 45 and done.size > len(template)
    flat = _Flat(done.path.read_bytes())
    n_densify = sum(1 for i in range(flat.graph.OperatorsLength())
                    if convert._op_name(flat.model, flat.graph.Operators(i)) == "DENSIFY")
    assert n_densify == 45
    x = _photos(192)[:3]
    with torch.no_grad():
        reg, logits = (t.numpy() for t in det.raw(torch.from_numpy(x)))
    lite_reg, lite_logits = _litert(done.path, x)
    assert np.abs(lite_reg - reg).max() <= 2e-3 * np.abs(reg).max()
    assert np.abs(lite_logits - logits).max() <= 2e-3 * np.abs(logits).max()
    fp32 = export_tflite(det, tmp_path / "fp32.tflite", precision="fp32")  # dense anyway: no --densify needed
    assert fp32.sparse_kept == 0
    lite_reg, lite_logits = _litert(fp32.path, x)
    assert np.abs(lite_reg - reg).max() <= 1e-5 * np.abs(reg).max()


def test_keep_sparsity_fine_tune_exports_in_mediapipes_sparse_layout(tmp_path, monkeypatch):
    """``train.keep_sparsity``: a full-range fine-tune (every layer trained) keeps the pruned zeros, so the export
    keeps all 46 sparse tensors without --densify while the non-zero weights did move."""
    import yaml

    from blazekit.checkpoint import load_checkpoint
    from blazekit.engine.trainer import Trainer

    monkeypatch.chdir(REPO)  # the demo set's paths are relative to the checkout
    cfg = {"_base_": [str(FULL), str(REPO / "configs/_base_/datasets/demo.yml"),
                      str(REPO / "configs/_base_/schedules/finetune_adamw.yml")],
           "model": {"init": "mediapipe_full_range"},
           "train": {"epochs": 2, "keep_sparsity": True, "val_interval": 0, "val_metric": "coco/AP", "val_vis": 0, "progress_bar": False,
                     "tensorboard": False, "optimizer": {"_replace_": True, "type": "AdamW", "lr": 1e-3}}}
    path = tmp_path / "full.yml"
    path.write_text(yaml.safe_dump(cfg))
    Trainer(str(path), work_dir=tmp_path / "run", seed=0).fit()
    tuned = blazekit.build_detector(FULL, weights=str(tmp_path / "run" / "last.pt")).eval()
    start = load_checkpoint(blazekit.weights.resolve_weights("mediapipe_full_range"))["state_dict"]
    now = tuned.state_dict()
    pruned = [k for k, v in start.items() if v.dim() == 4 and (v == 0).float().mean() >= 0.25]
    assert len(pruned) >= 46
    assert all(torch.equal(now[k][start[k] == 0], torch.zeros_like(now[k][start[k] == 0])) for k in pruned)
    assert any(not torch.equal(now[k], start[k]) for k in pruned)
    done = export_tflite(tuned, tmp_path / "tuned.tflite")
    assert done.sparse_kept == 46 and not done.densified and done.tensors_changed > 100


@pytest.mark.parametrize("name", ["short", "full"])
def test_fp16_rounded_weights_export_equal_to_det_raw(name, tmp_path):
    """``round_to_fp16_`` puts the model's BN-folded weights on the fp16 grid (BN kept, zeros kept): the fp16 file
    then equals ``det.raw`` as the fp32 file does (1e-5), where the unrounded fine-tune was ~2e-3 to 5e-3 off."""
    from blazekit.deploy.fp16 import fp16_deviation, fp16_note, round_to_fp16_

    det = _finetuned(_detector(name))
    x = torch.from_numpy(_photos(det.input_size[0]))
    before = fp16_deviation(det, x)
    assert max(before.values()) > 1e-3  # what fp16 storage would cost this fine-tune
    assert f"by up to {before['regressors']:.1e} (boxes, keypoints) and {before['classificators']:.1e}" in fp16_note(det)
    zeros = {k: v == 0 for k, v in det.state_dict().items() if v.dim() == 4}
    report = round_to_fp16_(det)
    assert report.overflow == [] and report.moved > 10_000
    assert report.tensors == 2 * len([m for m in det.modules() if isinstance(m, torch.nn.Conv2d)])
    assert all(bool(det.state_dict()[k][z].eq(0).all()) for k, z in zeros.items())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in det.modules()) > 0  # BN kept: training can go on
    assert max(fp16_deviation(det, x).values()) < 1e-6  # rounding again changes nothing
    assert fp16_note(det).startswith("note: fp16 stores these weights exactly")
    done = export_tflite(det, tmp_path / "m.tflite")
    assert done.densified == []  # the pruned zeros stayed zero: full range keeps its sparse layout
    with torch.no_grad():
        ref = [t.numpy() for t in det.raw(x)]
    got = _litert(tmp_path / "m.tflite", x.numpy())
    for g, r in zip(got, ref):
        for gi, ri in zip(g, r):
            assert np.abs(gi - ri).max() <= 1e-5 * np.abs(ri).max()


def test_fp16_rounding_refuses_overflow_and_changes_nothing():
    from blazekit.deploy.fp16 import round_to_fp16_

    det = _detector("short")
    det.head.cls_convs[0].weight.data[0, 0, 0, 0] = 1e5
    before = {k: v.clone() for k, v in det.state_dict().items()}
    report = round_to_fp16_(det)
    assert report.overflow == ["head.cls_convs.0.weight (|value| up to 1e+05)"] and report.tensors == 0
    assert all(torch.equal(before[k], v) for k, v in det.state_dict().items())


def test_fp16_weights_fine_tune_validates_and_saves_the_fp16_model(tmp_path, monkeypatch):
    """``train.fp16_weights``: the saved (EMA) weights are on the fp16 grid, so the fp16 export of ``last.pt``
    computes what ``last.pt`` computes (and its validation numbers are the file's); the weights did train."""
    import yaml

    from blazekit.deploy.fp16 import fp16_deviation
    from blazekit.engine.trainer import Trainer

    monkeypatch.chdir(REPO)  # the demo set's paths are relative to the checkout
    cfg = {"_base_": [str(FRONT), str(REPO / "configs/_base_/datasets/demo.yml"),
                      str(REPO / "configs/_base_/schedules/finetune_adamw.yml")],
           "model": {"init": "mediapipe_short_range"},
           "train": {"epochs": 2, "fp16_weights": True, "val_interval": 0, "val_metric": "coco/AP", "val_vis": 0,
                     "progress_bar": False, "tensorboard": False, "norm_eval": False,
                     "optimizer": {"_replace_": True, "type": "AdamW", "lr": 1e-3}}}
    path = tmp_path / "short.yml"
    path.write_text(yaml.safe_dump(cfg))
    Trainer(str(path), work_dir=tmp_path / "run", seed=0).fit()
    assert "fp16_weights: 74 tensors rounded to fp16" in (tmp_path / "run" / "train.log").read_text()
    tuned = blazekit.build_detector(FRONT, weights=str(tmp_path / "run" / "last.pt")).eval()
    start = blazekit.build_detector(FRONT, weights="mediapipe_short_range").eval()
    x = torch.from_numpy(_photos(128))
    assert max(fp16_deviation(tuned, x).values()) < 1e-6
    assert not torch.allclose(tuned.raw(x)[1], start.raw(x)[1], atol=1e-3)  # it trained
    export_tflite(tuned, tmp_path / "tuned.tflite")
    with torch.no_grad():
        ref = [t.numpy() for t in tuned.raw(x)]
    for g, r in zip(_litert(tmp_path / "tuned.tflite", x.numpy()), ref):
        assert np.abs(g - r).max() <= 1e-5 * np.abs(r).max()
