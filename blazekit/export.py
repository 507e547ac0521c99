"""Deployment: BatchNorm folding for fast inference and ONNX export (raw or with post-processing).

- :func:`fuse_bn` folds every eval-mode ``BatchNorm2d`` into the convolution that feeds it. The result
  computes the same function with one op less per conv, so it is used for fast eager inference
  (``detector = fuse_bn(detector)``) as well as before export.
- :func:`export_onnx` writes a model with a dynamic batch axis. Outputs are MediaPipe's raw tensors
  ``regressors [B, A, 4+2K]`` and ``classificators [B, A, 1]`` by default, so any MediaPipe-style
  decoder works on them; ``with_postprocess=True`` puts decoding, the score threshold and NMS (or
  MediaPipe's weighted blending) inside the graph and outputs the detections of the whole batch as
  ``boxes [N, 4]`` (xyxy, network-input pixels), ``scores [N]``, ``keypoints [N, K, 2]`` and
  ``batch_index [N]`` (int64, which image each row belongs to).

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
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .postprocess import suppress

PathLike = Union[str, os.PathLike]

CONV_TYPES = (nn.Conv2d,)
BN_TYPES = (nn.BatchNorm2d,)


# ------------------------------------------------------------------------------------------- BN folding

def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv equal to ``bn(conv(x))`` with BN's running statistics (inference semantics)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"cannot fold {bn}: it tracks no running statistics")
    if conv.out_channels != bn.num_features:
        raise ValueError(f"cannot fold {bn} into {conv}: {conv.out_channels} != {bn.num_features} channels")
    return fuse_conv_bn_eval(conv.eval(), bn.eval())


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _sequential_pairs(model: nn.Module) -> List[Tuple[str, str]]:
    """(conv, bn) names adjacent in an ``nn.Sequential``: the common case, found without running the model."""
    pairs = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Sequential):
            kids = list(mod.named_children())
            for (n1, m1), (n2, m2) in zip(kids, kids[1:]):
                if isinstance(m1, CONV_TYPES) and isinstance(m2, BN_TYPES):
                    pre = f"{name}." if name else ""
                    pairs.append((pre + n1, pre + n2))
    return pairs


def _traced_pairs(model: nn.Module, run: Any) -> List[Tuple[str, str]]:
    """(conv, bn) names where, in an actual forward, BN's input is exactly that conv's output tensor.

    Finds convs and BNs held as separate attributes (``self.conv`` / ``self.bn``). A conv output that is
    also used elsewhere would make folding wrong; :func:`fuse_bn` catches that by checking outputs.
    """
    produced: Dict[int, str] = {}
    calls: Dict[str, int] = {}
    pairs: List[Tuple[str, str]] = []
    handles = []
    keep_alive: List[Tensor] = []
    names = {m: n for n, m in model.named_modules()}

    def conv_hook(mod: nn.Module, inp: Any, out: Tensor) -> None:
        keep_alive.append(out)  # ids are only unique while the tensors live
        produced[id(out)] = names[mod]
        calls[names[mod]] = calls.get(names[mod], 0) + 1

    def bn_hook(mod: nn.Module, inp: Any) -> None:
        calls[names[mod]] = calls.get(names[mod], 0) + 1
        src = produced.get(id(inp[0]))
        if src is not None:
            pairs.append((src, names[mod]))

    for m in model.modules():
        if isinstance(m, CONV_TYPES):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, BN_TYPES):
            handles.append(m.register_forward_pre_hook(bn_hook))
    try:
        with torch.no_grad():
            run(model)
    finally:
        for h in handles:
            h.remove()
    # a module called more than once (shared weights) cannot be folded safely
    return [(c, b) for c, b in pairs if calls.get(c) == 1 and calls.get(b) == 1]


def _default_run(model: nn.Module, example_input: Optional[Tensor]) -> Any:
    if example_input is None:
        size = getattr(model, "input_size", None) or (128, 128)
        size = (size, size) if isinstance(size, int) else tuple(size)
        p = next(model.parameters(), None)
        example_input = torch.randn(1, 3, *size, device=p.device if p is not None else "cpu")
    return lambda m: (getattr(m, "raw", None) or m)(example_input)


def _outputs(model: nn.Module, run: Any) -> List[Tensor]:
    with torch.no_grad():
        out = run(model)
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return [v for v in out.values() if isinstance(v, Tensor)]
    return [o for o in out if isinstance(o, Tensor)] if isinstance(out, (list, tuple)) else []


def fuse_bn(model: nn.Module, example_input: Optional[Tensor] = None, inplace: bool = False,
            verify: bool = True) -> nn.Module:
    """Fold every ``BatchNorm2d`` that directly follows a ``Conv2d`` into it; returns an eval-mode model.

    Pairs are found structurally (adjacent in an ``nn.Sequential``) and by running one forward
    (``model.raw(x)`` when the model has it, else ``model(x)``; ``example_input`` defaults to zeros of
    ``model.input_size``). Folded BNs become ``nn.Identity`` so module names and attributes stay.
    ``verify`` folds a copy whose BNs get random statistics first and compares outputs, because with the
    default statistics of an untrained model a wrong pairing would go unnoticed.
    Use only for inference: the folded model has no BN to train.
    """
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    run = _default_run(target, example_input)
    pairs = _sequential_pairs(target)
    seen_bn = {b for _, b in pairs}
    seen_conv = {c for c, _ in pairs}
    for c, b in _traced_pairs(target, run):
        if b not in seen_bn and c not in seen_conv:
            pairs.append((c, b))
            seen_bn.add(b)
            seen_conv.add(c)
    if not pairs:
        return target
    if verify:
        _verify_pairs(target, pairs, run)
    for c, b in pairs:
        conv, bn = target.get_submodule(c), target.get_submodule(b)
        _set_submodule(target, c, fold_conv_bn(conv, bn))
        _set_submodule(target, b, nn.Identity())
    return target


def _verify_pairs(model: nn.Module, pairs: Sequence[Tuple[str, str]], run: Any) -> None:
    probe = copy.deepcopy(model).eval()
    g = torch.Generator().manual_seed(0)
    for _, b in pairs:
        bn = probe.get_submodule(b)
        n = bn.num_features
        bn.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
        bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        if bn.weight is not None:
            bn.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            bn.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    ref = _outputs(probe, run)
    for c, b in pairs:
        _set_submodule(probe, c, fold_conv_bn(probe.get_submodule(c), probe.get_submodule(b)))
        _set_submodule(probe, b, nn.Identity())
    got = _outputs(probe, run)
    for r, o in zip(ref, got):
        scale = float(r.abs().max()) + 1e-6
        if not torch.allclose(r, o, rtol=1e-3, atol=1e-4 * scale):
            raise RuntimeError(
                "fuse_bn: folding changed the model output (max abs diff "
                f"{float((r - o).abs().max()):.3g}); a conv output is probably used by more than its BatchNorm. "
                f"Pairs found: {list(pairs)}")


def count_batchnorm(model: nn.Module) -> int:
    """BatchNorm layers left in ``model`` (0 after a complete :func:`fuse_bn`)."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


# --------------------------------------------------------------------------------- graph post-processing

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
    folded the channel widths are rounded up to ``channel_multiple`` (:func:`blazekit.channel_align.align_channels`:
    same outputs, no channel Pads, about a third faster in onnxruntime on CPU; 1 keeps the original widths).
    ``check`` runs ``onnx.checker`` when onnx is installed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = tuple(int(s) for s in (input_size or getattr(detector, "input_size", None) or ()))
    if len(size) != 2:
        raise ValueError(f"export_onnx: input_size must be [H, W], got {input_size!r} "
                         f"(and the detector has no input_size attribute)")
    model = fuse_bn(detector, example_input=torch.zeros(1, 3, *size)) if fold_bn else copy.deepcopy(detector).eval()
    model = model.float().cpu()
    if fold_bn and channel_multiple > 1:
        from . import channel_align

        try:
            model = channel_align.align_channels(model, channel_multiple, example_input=torch.rand(1, 3, *size) * 2 - 1)
        except (ValueError, RuntimeError) as exc:  # a layout it does not know: the plain widths are still right
            warnings.warn(f"export_onnx: channel alignment skipped ({exc}); exporting the original widths")
    if with_postprocess:
        from .postprocess import postprocess_settings

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
    A Pad breaks onnxruntime's NCHWc layout (reorders around it; measured ~10 % + ~15 % of batch-1 model time),
    while ONNX's Conv takes asymmetric pads itself. Returns how many Pads were folded.
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


def onnx_session(path: PathLike, threads: Optional[int] = None) -> Any:
    """An onnxruntime CPU session with full graph optimisation; ``threads`` fixes intra-op threads.

    Raises ImportError with the install hint when onnxruntime is missing.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError("onnxruntime is not installed: pip install -e .[export]") from exc
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def verify_onnx(detector: nn.Module, path: PathLike, input_size: Optional[Sequence[int]] = None,
                batch: int = 2, seed: int = 0) -> float:
    """Max abs difference between a raw-output ONNX file (onnxruntime) and ``detector.raw`` on random input."""
    import numpy as np

    size = tuple(int(s) for s in (input_size or detector.input_size))
    x = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    sess = onnx_session(path)
    got = sess.run(None, {"images": x.numpy()})
    p = next(detector.parameters())
    with torch.no_grad():
        ref = [t.detach().cpu().numpy() for t in detector.eval().raw(x.to(p.device))]
    return max(float(np.abs(r - g).max()) for r, g in zip(ref, got))


class OnnxDetector:
    """``detector.predict`` on onnxruntime: lean letterbox + normalise, the with-postprocess graph, map back.

    The deployment twin of ``BlazeFace.predict`` (same outputs: per image ``boxes`` [N,4] / ``scores`` [N] /
    ``keypoints`` [N,K,2] in original pixels, numpy float32), with decoding and NMS inside the graph.
    ``micro_batch`` splits large batches: onnxruntime's depthwise kernels run fastest on small
    batches on CPU (measured in ``benchmarks/latency.py``), so throughput is best with a few images
    per call. :class:`blazekit.fastpath.FastDetector` does the post-processing in numpy instead (faster).
    """

    def __init__(self, path: PathLike, input_size: Sequence[int], normalize: str = "minus_one_one",
                 pad_value: int = 0, resize: str = "letterbox", threads: Optional[int] = None,
                 micro_batch: int = 1) -> None:
        from .fastpath import LeanPreprocessor

        self.session = onnx_session(path, threads)
        names = [o.name for o in self.session.get_outputs()]
        if names != POSTPROCESS_OUTPUTS:
            raise ValueError(f"{path}: outputs {names}, expected {POSTPROCESS_OUTPUTS}; export with "
                             "with_postprocess=True (tools/export.py --with-postprocess)")
        self.pre = LeanPreprocessor(input_size, normalize=normalize, pad_value=pad_value, resize=resize)
        self.micro_batch = max(1, int(micro_batch))

    def predict(self, images: Union[np.ndarray, Sequence[np.ndarray]]) -> List[Dict[str, Any]]:
        """HxWx3 uint8 RGB image(s) -> one dict per image, like ``detector.predict``."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        out: List[Dict[str, Any]] = []
        for start in range(0, len(images), self.micro_batch):
            x, infos = self.pre(images[start:start + self.micro_batch])
            boxes, scores, kpts, bidx = self.session.run(None, {"images": x})
            for i, info in enumerate(infos):
                m = bidx == i
                k = kpts[m]
                out.append({"boxes": info.to_original(boxes[m]).reshape(-1, 4), "scores": scores[m],
                            "keypoints": info.to_original(k.reshape(len(k), 2 * k.shape[1])).reshape(k.shape)})
        return out
