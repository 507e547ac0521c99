"""Channel alignment for export: wider, SIMD-friendly widths with zero weights compute the same detector."""
import numpy as np
import pytest
import torch
from torch import nn

from blazekit.deploy.channel_align import ConcatShortcutBlock, align_channels, pad_conv
from blazekit.deploy.export import export_onnx
from blazekit.models.backbones import BlazeBackbone
from blazekit.models.build import build_detector

from tests.deploy.test_export import BACK, FRONT, PAPER, _randomize


def _raw(det, x):
    with torch.no_grad():
        return [t.numpy() for t in det.eval().raw(x)]


def _widths(model):
    return [m.out_channels for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("cfg", [FRONT, BACK, PAPER])
def test_aligned_model_computes_the_same_outputs(cfg):
    torch.manual_seed(0)
    det = _randomize(build_detector(cfg))
    aligned = align_channels(det, 16)
    widths = _widths(aligned)
    assert widths and all(w % 16 == 0 for w in widths), widths
    assert any(w % 16 for w in _widths(det))  # the published layouts are not aligned to begin with
    x = torch.rand(2, 3, *det.input_size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for got, ref in zip(_raw(aligned, x), _raw(det, x)):
        np.testing.assert_allclose(got, ref, atol=1e-4 * np.abs(ref).max(), rtol=1e-4)
    assert det.backbone.out_channels != aligned.backbone.out_channels or cfg != FRONT
    assert any(isinstance(m, nn.BatchNorm2d) for m in det.modules())  # the original is left untouched


def test_front_layout_is_rounded_up_and_keeps_four_concat_shortcuts():
    det = build_detector(FRONT, weights="mediapipe_short_range")
    aligned = align_channels(det)
    assert aligned.backbone.stem[0].conv.out_channels == 32  # 24 -> 32
    # widths 32 32 32 | 48 48 48 | 64 64 80 80 96 | 96...: only 32->48, 48->64, 64->80, 80->96 still widen
    concat = [m for m in aligned.modules() if isinstance(m, ConcatShortcutBlock)]
    assert [(m.keep.out_channels, m.extra.out_channels) for m in concat] == [(32, 16), (48, 16), (64, 16), (80, 16)]
    assert aligned.backbone.out_channels == [96, 96]
    assert [c.in_channels for c in aligned.head.cls_convs] == [96, 96]


def test_aligned_onnx_has_no_pad_and_matches_unaligned(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    det = build_detector(FRONT, weights="mediapipe_short_range")
    fast = onnx.load(str(export_onnx(det, tmp_path / "aligned.onnx")))
    plain = onnx.load(str(export_onnx(det, tmp_path / "plain.onnx", channel_multiple=1)))
    ops = [n.op_type for n in fast.graph.node]
    assert "Pad" not in ops and ops.count("Concat") >= 4
    init = {t.name: t for t in fast.graph.initializer}
    backbone_convs = [n for n in fast.graph.node if n.op_type == "Conv" and "head" not in n.input[1]]
    assert backbone_convs and all(init[n.input[1]].dims[0] % 16 == 0 for n in backbone_convs)
    x = (torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(4)) * 2 - 1).numpy()
    a = ort.InferenceSession(fast.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    b = ort.InferenceSession(plain.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    for got, ref in zip(a, b):
        np.testing.assert_allclose(got, ref, atol=1e-4 * np.abs(ref).max(), rtol=1e-4)


class _WrappedHead(nn.Module):
    """A head align_channels does not know: it must receive the original widths."""

    def __init__(self, head):
        super().__init__()
        self.inner = head

    def forward(self, feats):
        assert [f.shape[1] for f in feats] == [88, 96]
        return self.inner(feats)


def test_unknown_head_gets_the_original_widths_back():
    torch.manual_seed(0)
    det = _randomize(build_detector(FRONT))
    det.head = _WrappedHead(det.head)
    aligned = align_channels(det)
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    for got, ref in zip(_raw(aligned, x), _raw(det, x)):
        np.testing.assert_allclose(got, ref, atol=1e-4 * np.abs(ref).max(), rtol=1e-4)
    assert isinstance(aligned.backbone.backbone, BlazeBackbone)  # wrapped in the slicing adapter


def test_multiple_one_and_bad_arguments():
    det = build_detector(FRONT)
    assert _widths(align_channels(det, 1)) == _widths(det)
    with pytest.raises(ValueError, match="multiple must be >= 1"):
        align_channels(det, 0)
    with pytest.raises(ValueError, match="grouped conv"):
        pad_conv(nn.Conv2d(8, 8, 3, groups=2), 16, 16)
    with pytest.raises(ValueError, match="cannot pad"):
        pad_conv(nn.Conv2d(8, 8, 1), 4, 8)


def test_pad_conv_zero_extends():
    conv = nn.Conv2d(3, 5, 3, padding=1)
    wide = pad_conv(conv, 8, 4)
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        y = wide(x)
        torch.testing.assert_close(y[:, :5], conv(x[:, :3]))
    assert float(y[:, 5:].abs().max()) == 0.0


def test_export_falls_back_to_plain_widths_with_a_warning(tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    import blazekit.deploy.channel_align as CA

    def refuse(*a, **k):
        raise ValueError("a layout align_channels does not know")

    monkeypatch.setattr(CA, "align_channels", refuse)
    det = build_detector(FRONT)
    with pytest.warns(UserWarning, match="channel alignment skipped .*does not know"):
        path = export_onnx(det, tmp_path / "m.onnx")
    assert sum(n.op_type == "Pad" for n in onnx.load(str(path)).graph.node) == 11
