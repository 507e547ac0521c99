"""ONNX export: raw outputs, or the whole detector with post-processing in the graph.

:func:`export_onnx` writes a model with a dynamic batch axis. Outputs are MediaPipe's raw tensors
``regressors [B, A, 4+2K]`` and ``classificators [B, A, 1]`` by default, so any MediaPipe-style decoder works
on them; ``with_postprocess=True`` puts decoding, the score threshold and NMS (or MediaPipe's weighted
blending, :func:`blazekit.models.postprocess.suppress`, the same code as ``detector.predict``) inside the graph and
outputs the detections of the whole batch as ``boxes [N, 4]`` (xyxy, network-input pixels), ``scores [N]``,
``keypoints [N, K, 2]`` and ``batch_index [N]`` (int64, which image each row belongs to).

The exported input is the normalised float32 NCHW tensor that ``detector.raw`` takes
(``blazekit.preprocess.letterbox`` + ``normalize``); mapping boxes back to the original image is the
caller's ``LetterboxInfo.to_original``, as in ``detector.predict``.
"""
from __future__ import annotations

import copy
import inspect
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..models.postprocess import postprocess_settings, suppress
from . import channel_align
from .fuse import fuse_bn

PathLike = Union[str, os.PathLike]


class RawModel(nn.Module):
    """``x [B,3,H,W] -> (regressors [B,A,4+2K], classificators [B,A,1])``: ``detector.raw`` as a plain module."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        reg, logits = self.detector.raw(x)
        return reg, logits


class PostprocessedModel(nn.Module):
    """Raw model + decode + sigmoid + score threshold + NMS / weighted blending + per-image ``max_det``.

    Written with ops that export to standard ONNX (NonMaxSuppression via torchvision's ``batched_nms``,
    opset >= 11), so onnxruntime runs the whole detector. Results match ``detector.predict`` on inputs
    that need no letterbox; the rows of all images come together, told apart by ``batch_index``.
    """

    def __init__(self, detector: nn.Module, input_size: Sequence[int], score_thr: float, iou_thr: float,
                 max_det: int, blending: bool) -> None:
        super().__init__()
        self.detector = detector
        self.input_size = tuple(int(s) for s in input_size)
        self.score_thr, self.iou_thr, self.max_det, self.blending = score_thr, iou_thr, max_det, blending

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        reg, logits = self.detector.raw(x)
        # the detector's own decode: same coder, anchors and logit clipping as detector.predict
        boxes, kpts, scores = self.detector.decode(reg, logits, self.input_size)
        b, a = scores.shape
        batch = torch.arange(b, device=x.device)[:, None].expand(b, a).reshape(-1)
        boxes, kpts, scores = boxes.reshape(b * a, 4), kpts.reshape(b * a, kpts.shape[-2], 2), scores.reshape(-1)
        cand = torch.nonzero(scores >= self.score_thr).reshape(-1)
        boxes, kpts, scores, batch = boxes[cand], kpts[cand], scores[cand], batch[cand]
        keep, boxes, kpts = suppress(boxes, scores, kpts, self.iou_thr, self.blending, groups=batch,
                                     max_det=self.max_det)
        return boxes, scores[keep], kpts, batch[keep]


# ------------------------------------------------------------------------------------------------ export

RAW_OUTPUTS = ["regressors", "classificators"]


def _opsets() -> range:
    """The opsets :func:`export_onnx` can write: from 11 (NonMaxSuppression, dynamic shapes) to what the installed
    torch's TorchScript exporter knows."""
    try:
        from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET as top
    except ImportError:  # another torch layout: its documented default range
        top = 20
    return range(11, int(top) + 1)


OPSETS = _opsets()
POSTPROCESS_OUTPUTS = ["boxes", "scores", "keypoints", "batch_index"]


def export_onnx(detector: nn.Module, path: PathLike, *, with_postprocess: bool = False,
                input_size: Optional[Sequence[int]] = None, opset: int = 17, fold_bn: bool = True,
                score_thr: Optional[float] = None, iou_thr: Optional[float] = None, max_det: Optional[int] = None,
                channel_multiple: int = 16, check: bool = True) -> Path:
    """Write ``detector`` as ONNX with a dynamic batch axis; returns the path.

    Input ``images`` float32 [B, 3, H, W] (``input_size`` default: ``detector.input_size``).
    Outputs: ``regressors``, ``classificators`` (raw, MediaPipe layout) or, ``with_postprocess``,
    ``boxes``, ``scores``, ``keypoints``, ``batch_index`` (thresholds default to the detector's own
    post-processor). BN is folded first (``fold_bn``) so the graph holds plain convolutions, and with BN
    folded the channel widths are rounded up to ``channel_multiple`` (:func:`~blazekit.deploy.channel_align.align_channels`:
    same outputs, no channel Pads, faster in onnxruntime on CPU (RESULTS.md); 1 keeps the original widths).
    ``check`` runs ``onnx.checker`` when onnx is installed.
    """
    if opset not in OPSETS:
        raise ValueError(f"export_onnx: opset {opset} is outside {OPSETS[0]}..{OPSETS[-1]}, what this torch exports")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = tuple(int(s) for s in (input_size or getattr(detector, "input_size", None) or ()))
    if len(size) != 2:
        raise ValueError(f"export_onnx: input_size must be [H, W], got {input_size!r} "
                         f"(and the detector has no input_size attribute)")
    model = fuse_bn(detector, example_input=torch.zeros(1, 3, *size)) if fold_bn else copy.deepcopy(detector).eval()
    model = model.float().cpu()
    if fold_bn and channel_multiple > 1:
        try:
            model = channel_align.align_channels(model, channel_multiple, example_input=torch.rand(1, 3, *size) * 2 - 1)
        except (ValueError, RuntimeError) as exc:  # a layout it does not know: the plain widths are still right
            warnings.warn(f"export_onnx: channel alignment skipped ({exc}); exporting the original widths")
    if with_postprocess:
        own = postprocess_settings(detector, "export with_postprocess")
        pp = {"score_thr": own["score_thr"], "iou_thr": own["iou_thr"], "blending": own["blending"],
              "max_det": 10 ** 6 if own["max_det"] is None else own["max_det"]}
        pp.update({k: v for k, v in (("score_thr", score_thr), ("iou_thr", iou_thr), ("max_det", max_det))
                   if v is not None})
        wrapper: nn.Module = PostprocessedModel(model, size, **pp)
        outputs = POSTPROCESS_OUTPUTS
        dyn = {"images": {0: "batch"}, **{o: {0: "detections"} for o in outputs}}
    else:
        wrapper = RawModel(model)
        outputs = RAW_OUTPUTS
        dyn = {"images": {0: "batch"}, **{o: {0: "batch"} for o in outputs}}
    wrapper.eval()
    dummy = torch.zeros(2, 3, *size)  # batch 2 so the exporter cannot specialise on 1
    kwargs: Dict[str, Any] = dict(input_names=["images"], output_names=outputs, dynamic_axes=dyn,
                                  opset_version=opset, do_constant_folding=True)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter knows torchvision's NMS -> NonMaxSuppression
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about data-dependent shapes are expected here
        torch.onnx.export(wrapper, (dummy,), str(path), **kwargs)
    try:
        import onnx
    except ImportError:
        return path
    model_proto = onnx.load(str(path))
    if fold_spatial_pads(model_proto):
        onnx.save(model_proto, str(path))
    if check:
        onnx.checker.check_model(model_proto)
    return path


def _constant_pad_amounts(model: Any) -> Dict[str, np.ndarray]:
    """Values of the Pad ``pads`` inputs that do not depend on the graph input (the exporter computes them with
    ConstantOfShape/Concat/Slice/... chains), evaluated with ONNX's reference evaluator."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    known = {t.name for t in g.initializer}
    out: Dict[str, np.ndarray] = {}
    for pad in g.node:
        if pad.op_type != "Pad" or len(pad.input) < 2:
            continue
        needed, stack, ok = [], [pad.input[1]], True
        while stack and ok:
            name = stack.pop()
            if not name or name in known or any(name in n.output for n in needed):
                continue
            node = producer.get(name)
            if node is None:  # a graph input: the amount depends on the data
                ok = False
                break
            needed.append(node)
            stack.extend(node.input)
        if not ok:
            continue
        order = [n for n in g.node if n in needed]
        sub = helper.make_graph(order, "pads", [], [helper.make_tensor_value_info(pad.input[1], 7, None)],
                                initializer=[t for t in g.initializer if any(t.name in n.input for n in order)])
        try:
            sub_model = helper.make_model(sub, opset_imports=model.opset_import)
            out[pad.input[1]] = np.asarray(ReferenceEvaluator(sub_model).run(None, {})[0])
        except Exception:  # anything unusual: leave that Pad alone
            continue
    return out


def fold_spatial_pads(model: Any) -> int:
    """Fold zero ``Pad`` ops that only pad H/W and feed one ``Conv`` into that Conv's (asymmetric) ``pads``.

    PyTorch convs pad symmetrically, so the TF-SAME padding of stride-2 BlazeBlocks exports as Pad + Conv.
    A Pad breaks onnxruntime's NCHWc layout (it reorders around it; RESULTS.md has the profile), while ONNX's
    Conv takes asymmetric pads itself. Returns how many Pads were folded.
    """
    from onnx import helper

    g = model.graph
    consts = _constant_pad_amounts(model)
    consumers: Dict[str, List[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in g.output}
    folded = []
    for pad in g.node:
        if pad.op_type != "Pad" or pad.input[1] not in consts or pad.output[0] in graph_outputs:
            continue
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        value = consts.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else 0.0
        pads = np.asarray(consts[pad.input[1]]).astype(np.int64).ravel()
        users = consumers.get(pad.output[0], [])
        if (mode != b"constant" or value is None or np.any(np.asarray(value) != 0) or pads.size != 8
                or np.any(pads < 0) or pads[[0, 1, 4, 5]].any() or len(users) != 1 or users[0].op_type != "Conv"
                or users[0].input[0] != pad.output[0]):
            continue
        conv = users[0]
        attrs = {a.name: a for a in conv.attribute}
        if "auto_pad" in attrs and attrs["auto_pad"].s not in (b"", b"NOTSET"):
            continue
        old = list(helper.get_attribute_value(attrs["pads"])) if "pads" in attrs else [0, 0, 0, 0]
        new = [old[0] + int(pads[2]), old[1] + int(pads[3]), old[2] + int(pads[6]), old[3] + int(pads[7])]
        if "pads" in attrs:
            conv.attribute.remove(attrs["pads"])
        conv.attribute.append(helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        folded.append(pad)
    for pad in folded:
        g.node.remove(pad)
    return len(folded)


__all__ = ["POSTPROCESS_OUTPUTS", "RAW_OUTPUTS", "PostprocessedModel", "RawModel", "export_onnx", "fold_spatial_pads"]
