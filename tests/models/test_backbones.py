"""Blocks, backbones and the SSD head: layouts, padding, shortcut, output order, init, trainability."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from blazekit.models.backbones import (BlazeBackbone, BlazeFaceBackBackbone, BlazeFaceFrontBackbone,
                                       BlazeFacePaperBackbone, conv_bn_units)
from blazekit.models.blocks import BlazeBlock, ConvBN, tf_same_padding
from blazekit.models.heads import SSDHead
from blazekit.registry import BACKBONES, HEADS


def _shapes(feats):
    return [tuple(f.shape) for f in feats]


class BackboneHead(nn.Module):
    """What the detector holds (``backbone``, ``head``), without the rest."""

    def __init__(self, backbone, num_anchors=(2, 6)):
        super().__init__()
        self.backbone = backbone
        self.head = SSDHead(backbone.out_channels, list(num_anchors))

    def forward(self, x):
        return self.head(self.backbone(x))


def test_tf_same_padding():
    assert tf_same_padding(3, 1) == (1, 1, 1, 1)
    assert tf_same_padding(3, 2) == (0, 1, 0, 1)
    assert tf_same_padding(5, 2) == (1, 2, 1, 2)
    assert tf_same_padding(5, 1) == (2, 2, 2, 2)
    assert tf_same_padding(1, 1) == (0, 0, 0, 0)


def test_convbn_stride2_pads_right_and_bottom():
    torch.manual_seed(0)
    unit = ConvBN(4, 4, 3, stride=2, groups=4).eval()
    x = torch.randn(1, 4, 8, 8)
    expected = unit.bn(F.conv2d(F.pad(x, (0, 1, 0, 1)), unit.conv.weight, stride=2, groups=4))
    assert unit.conv.bias is None and unit.pad == (0, 1, 0, 1)
    assert torch.allclose(unit(x), expected)


def test_blazeblock_shortcut_is_maxpool_plus_zero_channels():
    """With the conv branch silenced the block is ReLU(shortcut): 2x2 max-pool, then zero channels."""
    torch.manual_seed(0)
    block = BlazeBlock(3, 5, stride=2).eval()
    for m in block.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.zeros_(m.weight)
    x = torch.randn(2, 3, 6, 8)
    out = block(x)
    assert out.shape == (2, 5, 3, 4)
    assert torch.equal(out[:, :3], F.relu(F.max_pool2d(x, 2)))
    assert torch.equal(out[:, 3:], torch.zeros(2, 2, 3, 4))
    no_res = BlazeBlock(3, 3, stride=2, residual=False).eval()
    for m in no_res.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.zeros_(m.weight)
    assert torch.equal(no_res(x), torch.zeros(2, 3, 3, 4))


def test_blazeblock_bad_arguments():
    with pytest.raises(ValueError, match="stride"):
        BlazeBlock(8, 8, stride=3)
    with pytest.raises(ValueError, match="shrink"):
        BlazeBlock(8, 4)
    with pytest.raises(ValueError, match="mid_channels"):
        BlazeBlock(8, 8, mid_channels=4)


def test_double_block_layout():
    block = BlazeBlock(48, 96, kernel_size=5, stride=2, double=True, mid_channels=24)
    convs = [m.conv for m in block.modules() if isinstance(m, ConvBN)]
    assert [tuple(c.weight.shape) for c in convs] == [(48, 1, 5, 5), (24, 48, 1, 1), (24, 1, 5, 5), (96, 24, 1, 1)]
    assert block(torch.randn(1, 48, 32, 32)).shape == (1, 96, 16, 16)


def test_front_backbone_layout():
    bb = BlazeFaceFrontBackbone()
    assert bb.out_channels == [88, 96] and bb.strides == [8, 16]
    assert _shapes(bb(torch.zeros(1, 3, 128, 128))) == [(1, 88, 16, 16), (1, 96, 8, 8)]
    # fully convolutional: non-square inputs divisible by 16
    assert _shapes(bb(torch.zeros(2, 3, 128, 160))) == [(2, 88, 16, 20), (2, 96, 8, 10)]
    with pytest.raises(ValueError, match="divisible by 16"):
        bb(torch.zeros(1, 3, 120, 128))


def test_front_backbone_matches_hollance_layout(shared):
    """Conv shapes in forward order equal hollance's blazeface.pth (the same graph as the tflite)."""
    sd = torch.load(shared("weights", "hollance", "blazeface.pth"), map_location="cpu", weights_only=True)
    src = [tuple(v.shape) for k, v in sd.items() if k.startswith("backbone") and k.endswith("weight")]
    ours = [tuple(u.conv.weight.shape) for u in conv_bn_units(BlazeFaceFrontBackbone())]
    assert ours == src and len(ours) == 33


def test_back_backbone_matches_hollance_layout(shared):
    sd = torch.load(shared("weights", "hollance", "blazefaceback.pth"), map_location="cpu", weights_only=True)
    src = [tuple(v.shape) for k, v in sd.items() if k.startswith(("backbone", "final")) and k.endswith("weight")]
    bb = BlazeFaceBackBackbone()
    assert [tuple(u.conv.weight.shape) for u in conv_bn_units(bb)] == src
    assert bb.out_channels == [96, 96] and bb.strides == [16, 32]
    assert _shapes(bb(torch.zeros(1, 3, 256, 256))) == [(1, 96, 16, 16), (1, 96, 8, 8)]
    final = bb.stages[1][0]
    assert final.stride == 2 and not final.residual
    assert [b.stride for b in bb.stages[0]].count(2) == 3


def test_paper_backbone_and_kernel_option():
    bb = BlazeFacePaperBackbone()
    assert bb.out_channels == [96, 96] and bb.strides == [8, 16]
    assert _shapes(bb(torch.zeros(1, 3, 128, 128))) == [(1, 96, 16, 16), (1, 96, 8, 8)]
    blocks = [m for m in bb.modules() if isinstance(m, BlazeBlock)]
    assert len(blocks) == 11 and sum(len(b.convs) == 5 for b in blocks) == 6  # 5 single + 6 double
    dw = [u.conv for u in conv_bn_units(bb) if u.conv.groups > 1]
    assert all(c.kernel_size == (5, 5) for c in dw)
    front5 = BlazeFaceFrontBackbone(kernel_size=5)
    assert all(u.conv.kernel_size == (5, 5) for u in conv_bn_units(front5) if u.conv.groups > 1)
    assert _shapes(front5(torch.zeros(1, 3, 128, 128))) == [(1, 88, 16, 16), (1, 96, 8, 8)]


def test_custom_backbone_from_config():
    bb = BACKBONES.build({"type": "BlazeBackbone", "stem_channels": 16,
                          "stages": [[[16, 1], [32, 2]], [{"out": 48, "stride": 2, "double": True, "mid": 8}]]})
    assert bb.out_channels == [32, 48] and bb.strides == [4, 8]
    with pytest.raises(ValueError, match=r"stages\[0\]\[0\]"):
        BlazeBackbone([[{"channels": 8}]])


@pytest.mark.parametrize("cls", [BlazeFaceFrontBackbone, BlazeFaceBackBackbone, BlazeFacePaperBackbone])
def test_every_conv_is_biasless_and_followed_by_bn(cls):
    bb = cls()
    convs = [m for m in bb.modules() if isinstance(m, nn.Conv2d)]
    units = conv_bn_units(bb)
    assert len(convs) == len(units)  # no conv outside a conv+BN unit
    for u in units:
        assert u.conv.bias is None and isinstance(u.bn, nn.BatchNorm2d)
        assert u.bn.num_features == u.conv.out_channels
        assert torch.all(u.bn.weight == 1) and torch.all(u.bn.bias == 0)


def test_kaiming_normal_fan_out_init():
    torch.manual_seed(0)
    bb = BlazeFaceFrontBackbone()
    w = bb.stages[1][1].convs[1].conv.weight  # 96x96 1x1: fan_out = 96
    assert w.shape == (96, 96, 1, 1)
    assert w.std().item() == pytest.approx(math.sqrt(2.0 / 96), rel=0.05)
    assert abs(w.mean().item()) < 0.01
    dw = bb.stages[1][1].convs[0].conv.weight  # 96x1x3x3 depthwise: torch fan_out = 96 * 9
    assert dw.std().item() == pytest.approx(math.sqrt(2.0 / (96 * 9)), rel=0.1)


def test_head_output_layout_follows_mediapipe():
    """Level by level, row-major over the grid, anchors fastest; coords (4 + 2K) contiguous per anchor."""
    head = SSDHead([2, 3], [2, 6], num_keypoints=6)
    with torch.no_grad():
        for conv in list(head.cls_convs) + list(head.reg_convs):
            conv.weight.zero_()
            conv.weight[:, 0] = 1.0  # every output = feature channel 0 + bias
        head.cls_convs[0].bias.copy_(torch.tensor([0.0, 0.5]))
        head.cls_convs[1].bias.copy_(torch.arange(6) / 10.0)
        head.reg_convs[0].bias.copy_(torch.arange(32) / 100.0)
    f0 = torch.zeros(1, 2, 4, 5)
    f0[0, 0] = torch.arange(20, dtype=torch.float32).reshape(4, 5) * 10  # value = (y * 5 + x) * 10
    f1 = torch.zeros(1, 3, 2, 2)
    f1[0, 0] = torch.tensor([[1000.0, 2000.0], [3000.0, 4000.0]])
    reg, logits = head([f0, f1])
    assert reg.shape == (1, 4 * 5 * 2 + 2 * 2 * 6, 16) and logits.shape == (1, 64, 1)
    y, x, a = 2, 3, 1
    assert logits[0, (y * 5 + x) * 2 + a, 0].item() == pytest.approx((y * 5 + x) * 10 + 0.5)
    assert torch.allclose(reg[0, (y * 5 + x) * 2 + a], (y * 5 + x) * 10 + torch.arange(16, 32) / 100.0)
    # level 1 follows level 0: cell (1, 0), anchor 4
    assert logits[0, 40 + (1 * 2 + 0) * 6 + 4, 0].item() == pytest.approx(3000.4)


def test_head_init_and_errors():
    torch.manual_seed(0)
    head = HEADS.build({"type": "SSDHead"}, in_channels=[88, 96], num_anchors=[2, 6], num_keypoints=6)
    assert [c.out_channels for c in head.reg_convs] == [32, 96]
    assert torch.allclose(head.cls_convs[0].bias, torch.full((2,), math.log(0.01 / 0.99)))
    assert head.reg_convs[1].weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.all(head.reg_convs[1].bias == 0)
    with pytest.raises(ValueError, match="same length"):
        SSDHead([88, 96], [2])
    with pytest.raises(ValueError, match="feature levels"):
        head([torch.zeros(1, 88, 16, 16)])


def test_model_is_trainable():
    torch.manual_seed(0)
    model = BackboneHead(BlazeFaceFrontBackbone()).train()
    bn = model.backbone.stem[0].bn
    before = bn.running_mean.clone()
    reg, logits = model(torch.randn(2, 3, 128, 128))
    assert reg.shape == (2, 896, 16) and logits.shape == (2, 896, 1)
    loss = reg.pow(2).mean() + F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    nonzero = sum(bool(g.abs().sum() > 0) for g in grads.values())
    assert nonzero == len(grads)
    assert not torch.equal(bn.running_mean, before)  # BN statistics update in train mode
