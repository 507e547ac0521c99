"""BN folding and ONNX export: same numbers as PyTorch and as MediaPipe's LiteRT reference outputs."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from blazekit.deploy.export import export_onnx
from blazekit.deploy.fuse import count_batchnorm, fuse_bn
from blazekit.models.build import build_detector

from tests.conftest import REPO, shared_path

FRONT = "_base_/models/blazeface_front.yml"
BACK = "_base_/models/blazeface_back.yml"
PAPER = "_base_/models/blazeface_paper.yml"
REF_NAMES = ["1face", "3faces", "4faces", "astronaut"]


def _randomize(det: nn.Module, seed: int = 0) -> nn.Module:
    """Give an untrained detector non-trivial BN statistics and a head that fires, so comparisons mean something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in det.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
        for c in det.head.cls_convs:
            c.weight.copy_(torch.randn(c.weight.shape, generator=g) * 0.3)
            c.bias.zero_()
        for c in det.head.reg_convs:
            c.weight.copy_(torch.randn(c.weight.shape, generator=g) * 2.0)
        # logits within +-4: saturated sigmoids would tie at 1.0 and make NMS order arbitrary
        x = torch.rand(2, 3, *det.input_size, generator=g) * 2 - 1
        peak = float(det.eval().raw(x)[1].abs().max())
        for c in det.head.cls_convs:
            c.weight.mul_(4.0 / peak)
    return det.eval()


@pytest.fixture(scope="module")
def front():
    return build_detector(FRONT, weights="mediapipe_short_range")


def _reference():
    ref = shared_path("weights", "reference")
    x = np.concatenate([np.load(ref / f"{n}_input.npy") for n in REF_NAMES]).transpose(0, 3, 1, 2)
    reg = np.concatenate([np.load(ref / f"{n}_regressors.npy") for n in REF_NAMES])
    cls = np.concatenate([np.load(ref / f"{n}_classificators.npy") for n in REF_NAMES])
    return np.ascontiguousarray(x), reg, cls


def _assert_close(got, ref, what):
    tol = 1e-3 + 1e-5 * np.abs(ref)
    bad = np.abs(got - ref) > tol
    assert not bad.any(), f"{what}: {bad.sum()} elements off, max abs diff {np.abs(got - ref).max():.3g}"


@pytest.mark.parametrize("cfg", [FRONT, BACK, PAPER])
def test_fuse_bn_removes_every_bn_and_keeps_outputs(cfg):
    det = _randomize(build_detector(cfg))
    fused = fuse_bn(det)
    assert count_batchnorm(det) > 30 and count_batchnorm(fused) == 0
    assert count_batchnorm(det) > 0, "fuse_bn must not modify its input (inplace=False)"
    x = torch.rand(2, 3, *det.input_size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        for a, b in zip(det.raw(x), fused.raw(x)):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max())), float((a - b).abs().max())


def test_fuse_bn_keeps_predictions(front):
    img = (np.random.default_rng(0).random((300, 400, 3)) * 255).astype(np.uint8)
    img[100:200, 150:250] = 200
    fused = fuse_bn(front)
    a, b = front.predict([img])[0], fused.predict([img])[0]
    assert len(a["boxes"]) == len(b["boxes"])
    np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-2)


def test_fuse_bn_refuses_a_conv_output_used_twice():
    class Shared(nn.Module):  # conv output goes to BN *and* to the residual: folding would change it
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    with pytest.raises(RuntimeError, match="used by more than its BatchNorm"):
        fuse_bn(Shared().eval(), example_input=torch.randn(1, 3, 8, 8))


def test_onnx_raw_matches_torch_and_litert(front, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    x, reg_ref, cls_ref = _reference()
    path = export_onnx(front, tmp_path / "front.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["regressors", "classificators"]
    reg, cls = sess.run(None, {"images": x})  # batch 4 although exported with batch 2: dynamic batch
    assert reg.shape == (4, 896, 16) and cls.shape == (4, 896, 1)
    _assert_close(reg, reg_ref, "ONNX regressors vs LiteRT")
    _assert_close(cls, cls_ref, "ONNX classificators vs LiteRT")
    with torch.no_grad():
        t_reg, t_cls = (t.numpy() for t in front.raw(torch.from_numpy(x)))
    _assert_close(reg, t_reg, "ONNX regressors vs PyTorch")
    _assert_close(cls, t_cls, "ONNX classificators vs PyTorch")
    one = sess.run(None, {"images": x[3:4]})[1]
    np.testing.assert_allclose(one, cls[3:4], atol=1e-4)


def _by_geometry(boxes):
    """Order detections by their (rounded) box so two equally scored ones compare regardless of order."""
    r = np.round(np.asarray(boxes, dtype=np.float64), 1)
    return np.lexsort(r.T[::-1]) if len(r) else np.arange(0)


def _check_postprocess_graph(det, path, images_uint8, ort):
    """ONNX detections == detector.predict on images already at the input size (letterbox is identity)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    from blazekit.preprocess import normalize

    x = np.stack([normalize(im) for im in images_uint8])
    boxes, scores, kpts, bidx = sess.run(None, {"images": x})
    expected = det.predict(list(images_uint8))
    total = 0
    for i, e in enumerate(expected):
        m = bidx == i
        assert m.sum() == len(e["scores"]), f"image {i}: {m.sum()} ONNX detections vs {len(e['scores'])}"
        # Scores equal to ~1e-6 (random weights) may come out in either order: compare as sets of detections.
        got, want = _by_geometry(boxes[m]), _by_geometry(e["boxes"])
        np.testing.assert_allclose(boxes[m][got], e["boxes"][want], atol=2e-3)
        np.testing.assert_allclose(scores[m][got], e["scores"][want], atol=1e-4)
        np.testing.assert_allclose(kpts[m][got], e["keypoints"][want], atol=2e-3)
        total += len(e["scores"])
    return total


def test_onnx_with_postprocess_matches_predict(front, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    x, _, _ = _reference()
    images = np.round((x.transpose(0, 2, 3, 1) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    path = export_onnx(front, tmp_path / "front_pp.onnx", with_postprocess=True)
    n = _check_postprocess_graph(front, path, images, ort)
    assert n >= 3  # 1face, 3faces (some), astronaut: real faces found through the whole graph


@pytest.mark.parametrize("cfg", [BACK, PAPER])
def test_back_and_paper_models_export(cfg, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)  # conv weights come from Kaiming init: fix them so the test is the same every run
    det = _randomize(build_detector(cfg))
    h, w = det.input_size
    raw_path = export_onnx(det, tmp_path / "raw.onnx")
    x = torch.rand(3, 3, h, w, generator=torch.Generator().manual_seed(2)) * 2 - 1
    got = ort.InferenceSession(str(raw_path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = [t.numpy() for t in det.raw(x)]
    for g, r, name in zip(got, ref, ("regressors", "classificators")):
        _assert_close(g, r, f"{cfg} {name}")
    images = (np.random.default_rng(3).random((2, h, w, 3)) * 255).astype(np.uint8)
    pp_path = export_onnx(det, tmp_path / "pp.onnx", with_postprocess=True)
    assert _check_postprocess_graph(det, pp_path, images, ort) > 0


def test_export_cli(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    r = subprocess.run([sys.executable, "tools/export.py", FRONT, "--weights", "mediapipe_short_range",
                        "--format", "onnx", "--out", str(out), "--verify"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert out.is_file() and "max abs diff" in r.stdout
    err = float(r.stdout.rsplit("max abs diff", 1)[1].strip())
    assert err < 1e-3


# ------------------------------------------------------------------------- lean numpy fast path

def _demo_images():
    from blazekit.inference import load_image

    paths = sorted((REPO / "blazekit" / "data" / "demo" / "images").glob("*.jpg"))
    assert paths, "bundled demo images missing"
    return [load_image(str(p)) for p in paths]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("mode,pad,norm", [("letterbox", 0, "minus_one_one"), ("letterbox", 114, "zero_one"),
                                           ("mediapipe", 0, "minus_one_one"), ("mediapipe", 114, "zero_one")])
def test_lean_preprocessor_equals_letterbox_normalize(layout, mode, pad, norm):
    from blazekit.deploy.runtime import LeanPreprocessor
    from blazekit.preprocess import letterbox, normalize

    rng = np.random.default_rng(0)
    shapes = [(480, 640), (640, 480), (37, 200), (128, 128), (60, 50)]  # down, portrait, thin, identity, upscale
    images = [(rng.random((h, w, 3)) * 255).astype(np.uint8) for h, w in shapes]
    pre = LeanPreprocessor((128, 128), normalize=norm, pad_value=pad, resize=mode, layout=layout)
    x, infos = pre(images)
    for i, im in enumerate(images):
        boxed, info = letterbox(im, (128, 128), pad_value=pad, mode=mode)
        want = normalize(boxed, norm)
        got = x[i] if layout == "NCHW" else x[i].transpose(2, 0, 1)
        assert np.array_equal(got, want), f"image {shapes[i]}: max diff {np.abs(got - want).max()}"
        assert infos[i] == info
    x1, _ = pre(images[:1])  # the buffer is reused: a smaller batch overwrites its padding correctly
    assert np.array_equal(x1[0] if layout == "NCHW" else x1[0].transpose(2, 0, 1),
                          normalize(letterbox(images[0], (128, 128), pad_value=pad, mode=mode)[0], norm))
    with pytest.raises(ValueError, match="image 0: expected an HxWx3 uint8"):
        pre([images[0].astype(np.float32)])


def _assert_same_detections(got, want, what):
    assert len(got["scores"]) == len(want["scores"]), f"{what}: {len(got['scores'])} vs {len(want['scores'])}"
    g, w = _by_geometry(got["boxes"]), _by_geometry(want["boxes"])
    np.testing.assert_allclose(got["boxes"][g], want["boxes"][w], atol=1e-3, err_msg=what)
    np.testing.assert_allclose(got["keypoints"][g], want["keypoints"][w], atol=1e-3, err_msg=what)
    np.testing.assert_allclose(got["scores"][g], want["scores"][w], atol=1e-5, err_msg=what)
    assert got["boxes"].dtype == got["scores"].dtype == got["keypoints"].dtype == np.float32


def _torch_runner(det):
    def run(x):
        with torch.no_grad():
            return tuple(t.numpy() for t in det.raw(torch.from_numpy(x)))
    return run


def test_fast_detector_onnxruntime_matches_predict(front, tmp_path):
    pytest.importorskip("onnxruntime")
    from blazekit.deploy.fastpath import FastDetector

    fast = FastDetector.from_detector(front, tmp_path / "raw.onnx", threads=1, micro_batch=3)
    images = _demo_images()
    want, got = front.predict(images), fast.predict(images)
    assert sum(len(w["scores"]) for w in want) >= 10  # real faces, so the comparison means something
    for i, (g, w) in enumerate(zip(got, want)):
        _assert_same_detections(g, w, f"demo image {i}")
    # per-call overrides behave like predict's
    for kw in ({"score_thr": 0.8}, {"max_det": 1}, {"score_thr": 0.3, "max_det": 2}):
        for i, (g, w) in enumerate(zip(fast.predict(images, **kw), front.predict(images, **kw))):
            _assert_same_detections(g, w, f"demo image {i} {kw}")
    # 10 images in chunks of 4 (pre-processed together) with micro-batches of 3 inside: same results, same order
    fast.CHUNK = 4
    for i, (g, w) in enumerate(zip(fast.predict(images), want)):
        _assert_same_detections(g, w, f"demo image {i}, chunks of 4")


@pytest.mark.parametrize("post", ["WeightedBlending", "NMS"])
def test_lean_postprocessor_matches_predict_on_many_detections(post):
    """Random weights give dozens of overlapping candidates per image: blending / NMS clusters must agree."""
    from blazekit.deploy.fastpath import FastDetector, LeanPostprocessor, preprocessor_for
    from blazekit.postprocess import NMS, WeightedBlending

    torch.manual_seed(0)
    det = _randomize(build_detector(FRONT))
    det.postprocess = {"NMS": NMS, "WeightedBlending": WeightedBlending}[post](score_thr=0.5, iou_thr=0.3)
    fast = FastDetector(_torch_runner(det), preprocessor_for(det), LeanPostprocessor.from_detector(det), micro_batch=2)
    images = [(np.random.default_rng(s).random((200 + 40 * s, 300, 3)) * 255).astype(np.uint8) for s in range(3)]
    want, got = det.predict(images), fast.predict(images)
    assert sum(len(w["scores"]) for w in want) >= 10
    for i, (g, w) in enumerate(zip(got, want)):
        _assert_same_detections(g, w, f"{post} image {i}")


def test_lean_postprocessor_refuses_unsupported_coder():
    from blazekit.coder import SSDCoder
    from blazekit.deploy.fastpath import LeanPostprocessor

    det = build_detector(FRONT)
    det.coder = SSDCoder()
    with pytest.raises(ValueError, match="MediaPipeCoder only"):
        LeanPostprocessor.from_detector(det)


def test_spatial_pads_fold_into_convs(front, tmp_path):
    """TF-SAME Pads become Conv pads (onnxruntime keeps its NCHWc layout); outputs stay bit-identical."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import blazekit.deploy.export as E

    # channel_multiple=1 keeps MediaPipe's widths, so the shortcuts' channel Pads stay (test_channel_align
    # covers the default export, which has none)
    folded = E.export_onnx(front, tmp_path / "fold.onnx", channel_multiple=1)
    m = onnx.load(str(folded))
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    asym = [n for n in convs for a in n.attribute if a.name == "pads" and list(a.ints) == [1, 1, 2, 2]]
    assert len(asym) == 1  # the 5x5 stride-2 stem: TF-SAME pads top/left 1, bottom/right 2
    assert sum(1 for n in m.graph.node if n.op_type == "Pad") == 11  # only the shortcuts' channel pads remain
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(5)).numpy() * 2 - 1
    with torch.no_grad():
        ref = [t.numpy() for t in front.raw(torch.from_numpy(x))]
    got = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, atol=2e-3, rtol=1e-4)


def test_onnx_detector_matches_predict_on_photos_and_takes_one_image(front, tmp_path):
    """OnnxDetector (with-postprocess graph + lean letterbox) equals predict on real photos of any size."""
    pytest.importorskip("onnxruntime")
    from blazekit.deploy.runtime import OnnxDetector

    onnx_det = OnnxDetector(export_onnx(front, tmp_path / "pp.onnx", with_postprocess=True), front.input_size,
                            threads=1, micro_batch=3)
    images = _demo_images()
    want = front.predict(images)
    assert sum(len(w["scores"]) for w in want) >= 10
    for i, (g, w) in enumerate(zip(onnx_det.predict(images), want)):
        _assert_same_detections(g, w, f"demo image {i}")
    one = onnx_det.predict(images[0])  # a lone HxWx3 array is one image, as in predict
    assert len(one) == 1
    _assert_same_detections(one[0], want[0], "single image")


def test_unsupported_postprocessor_is_refused_by_name(tmp_path):
    """The ONNX graph and the numpy fast path re-implement NMS / WeightedBlending only; anything else is refused."""
    from blazekit.deploy.fastpath import LeanPostprocessor
    from blazekit.postprocess import NMS

    class MyNMS(NMS):  # a subclass may suppress differently: not silently treated as NMS
        pass

    det = build_detector(FRONT)
    det.postprocess = MyNMS(score_thr=0.5, iou_thr=0.3)
    with pytest.raises(ValueError, match="LeanPostprocessor supports the NMS and WeightedBlending .*not MyNMS"):
        LeanPostprocessor.from_detector(det)
    with pytest.raises(ValueError, match="export with_postprocess supports .*not MyNMS"):
        export_onnx(det, tmp_path / "m.onnx", with_postprocess=True)


def test_deploy_modules_import_one_way():
    """blazekit.deploy's modules import each other in one direction only (any import, also inside functions),
    and the layers below it (models, the evaluation metrics, data, post-processing) never import deploy; the evaluator
    (evaluation/evaluator.py) and the engine sit above deploy (the evaluator runs the fast path)."""
    import ast

    pkg = REPO / "blazekit" / "deploy"
    deps = {}
    for f in pkg.glob("*.py"):
        if f.stem == "__init__":
            continue
        found = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        deps[f.stem] = found
    assert set(deps) == {"fuse", "fp16", "channel_align", "export", "tflite", "runtime", "fastpath", "backends"}
    order = ["fuse", "fp16", "tflite", "channel_align", "export", "runtime", "fastpath", "backends"]
    for mod, used in deps.items():
        assert all(order.index(u) < order.index(mod) for u in used), f"deploy.{mod} imports {sorted(used)}"
    below = [p for d in ("models", "evaluation", "data") for p in (REPO / "blazekit" / d).rglob("*.py")
             if p.relative_to(REPO).as_posix() != "blazekit/evaluation/evaluator.py"]
    below += [REPO / "blazekit" / f"{n}.py" for n in ("postprocess", "boxes", "matcher", "coder", "losses", "anchors")]
    for p in below:
        for node in ast.walk(ast.parse(p.read_text())):
            names = ([node.module or ""] + [a.name for a in node.names] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            assert not any("deploy" in n for n in names), f"{p.relative_to(REPO)} imports deploy"
