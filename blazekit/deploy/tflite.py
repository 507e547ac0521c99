"""MediaPipe ``.tflite`` export: the detector's weights written back into MediaPipe's own model file.

MediaPipe ships no way to retrain its face detector, and its runtimes (Tasks on Android, iOS, the web and
Python) expect *its* graph: tensor names, ops, and the ``TFLITE_METADATA`` entry whose NormalizationOptions
Tasks needs to accept a float model. So the export does not build a graph: it takes the very file the
weights were imported from (shipped as a template, :data:`blazekit.weights.TFLITE_TEMPLATES`) and overwrites
the bytes of its weight buffers with the BN-folded weights, through the same conv pairing the import uses
(:func:`blazekit.convert.mapping.pair_convs`), so the mapping is one and its inverse cannot drift.

- ``precision="fp16"`` (default): buffers keep their fp16 type and size, so untouched weights give MediaPipe's
  file back byte for byte, and only bytes inside weight buffers ever change.
- ``precision="fp32"``: every fp16 (and sparse) weight becomes a dense fp32 constant and its DEQUANTIZE /
  DENSIFY op goes: outputs then equal ``detector.raw`` to float rounding, at about twice the size.
- Full range stores 46 convs sparse (DENSIFY). Their sparse layout is kept while the pruned weights stayed
  zero; a weight that grew where the layout has no slot is refused, naming the tensor, unless
  ``densify=True`` (that tensor is then stored dense and its DENSIFY op dropped).

What MediaPipe's graph and calculators hard-code is refused up front, with every difference on one line:
input size, anchors, box coder, keypoint count, input normalisation and the architecture itself. Post-processing
(score threshold, blending/NMS) happens in MediaPipe's calculators, not in the file: the config's
``model.postprocess`` does not travel (:func:`mediapipe_postprocess_note`).

Restructuring (fp32, densify) uses the TFLite schema's object API from ``ai-edge-litert``; the default fp16
path only needs the ``tflite`` reader that the import uses too.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence, Set, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..convert.mapping import pair_convs
from ..convert.source import ConversionError
from ..convert.tflite import read_tflite, sparse_coords
from .fuse import fold_conv_bn

PathLike = Union[str, os.PathLike]
PRECISIONS = ("fp16", "fp32")
FP16_MAX = float(np.finfo(np.float16).max)  # 65504


class TFLiteExportError(ConversionError):
    """The detector cannot be written into MediaPipe's graph as asked; the message names what differs."""


@dataclass
class TFLiteExport:
    """What :func:`export_tflite` wrote."""

    path: Path
    template: Path
    precision: str
    size: int
    tensors_written: int
    tensors_changed: int  # whose stored bytes differ from the template's
    densified: List[str] = field(default_factory=list)  # sparse tensors stored dense (densify=True)
    sparse_kept: int = 0


# ----------------------------------------------------------------------------- compatibility
def template_for(detector: nn.Module) -> Dict[str, Any]:
    """The shipped MediaPipe file whose graph matches ``detector``'s input size, or refuse."""
    from ..weights import TFLITE_TEMPLATES

    size = tuple(int(s) for s in detector.input_size)
    if size not in TFLITE_TEMPLATES:
        known = ", ".join(f"{h}x{w} ({Path(t['path']).name})" for (h, w), t in TFLITE_TEMPLATES.items())
        raise TFLiteExportError(f"model.input_size {list(size)}: MediaPipe ships no face detector graph of this size "
                                f"to write the weights into (templates: {known}); the back model (256x256) has none. "
                                "Export it to ONNX instead (--format onnx)")
    template = dict(TFLITE_TEMPLATES[size])
    if not Path(template["path"]).is_file():
        raise FileNotFoundError(f"tflite template {template['path']} is missing from this installation "
                                "(reinstall blazekit; see blazekit/weights/ATTRIBUTION.md)")
    return template


def mediapipe_differences(detector: nn.Module, template: Dict[str, Any]) -> List[str]:
    """What ``detector`` does differently from what MediaPipe's graph and calculators hard-code (empty = none)."""
    from ..checkpoint import architecture_diff
    from ..convert.checkpoints import default_model_cfg
    from ..convert.mapping import build_target
    from ..models.coder import MediaPipeCoder

    ref_cfg = default_model_cfg(template["variant"])
    ref = build_target(ref_cfg)
    out: List[str] = []
    if getattr(detector, "cfg", None) is not None:
        out += [d.replace("checkpoint", "MediaPipe").replace("config", "this config")
                for d in architecture_diff(ref_cfg, detector.cfg)]
    if not out and not torch.equal(detector.anchors.cpu(), ref.anchors):
        out.append("model.anchors: the anchors differ from MediaPipe's (its SsdAnchorsCalculator is fixed)")
    size = tuple(detector.input_size)
    if not isinstance(detector.coder, MediaPipeCoder):
        out.append(f"model.coder: {type(detector.coder).__name__}, but MediaPipe decodes with its own coder "
                   "(MediaPipeCoder)")
    elif tuple(detector.coder.scales(size)) != tuple(float(s) for s in (size[1], size[0], size[1], size[0])):
        out.append(f"model.coder.scale: {detector.coder.scale}, but MediaPipe's x/y/w/h_scale are the input size "
                   f"{size[1]}")
    norm = detector.preprocess_cfg.get("normalize", "minus_one_one")
    if norm != "minus_one_one":
        out.append(f"model.preprocess.normalize: {norm!r}, but MediaPipe feeds RGB in [-1, 1] (minus_one_one; its "
                   "NormalizationOptions metadata says so)")
    if int(detector.num_keypoints) != int(ref.num_keypoints) and not any("num_keypoints" in d for d in out):
        out.append(f"model.num_keypoints: {detector.num_keypoints}, but MediaPipe's graph has {ref.num_keypoints}")
    return out


def mediapipe_postprocess_note(detector: nn.Module) -> str:
    """One line saying which post-processing settings stay behind (they live in MediaPipe's calculators)."""
    pp = detector.postprocess
    have = ", ".join(f"{k} {getattr(pp, k)}" for k in ("score_thr", "iou_thr", "max_det") if hasattr(pp, k))
    return (f"note: post-processing is MediaPipe's, not this config's ({have} stay behind): set the score threshold "
            "in MediaPipe (FaceDetectorOptions.min_detection_confidence); its suppression is weighted blending at "
            "IoU 0.3")


# ----------------------------------------------------------------------------- weights
def _tflite_layout(weight: np.ndarray, depthwise: bool) -> np.ndarray:
    """PyTorch OIHW (depthwise O1HW) -> TFLite OHWI (depthwise 1HWO): the inverse of the import's transpose."""
    return np.ascontiguousarray(weight.transpose(1, 2, 3, 0) if depthwise else weight.transpose(0, 2, 3, 1))


def _folded(pair: Any) -> Tuple[np.ndarray, np.ndarray]:
    """(weight OIHW, bias) of a pair's conv with its BatchNorm folded in (eval statistics), float32."""
    conv = pair.conv
    if pair.bn is not None:
        conv = fold_conv_bn(conv, pair.bn)  # a folded copy
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
    return (conv.weight.detach().float().cpu().numpy(), bias.detach().float().cpu().numpy())


def tflite_weights(detector: nn.Module, buf: bytes, where: str) -> List[Tuple[int, str, np.ndarray]]:
    """``(tensor, name, array)`` in TFLite layout for every weight and bias tensor of the template, in pairing
    order (weight, bias, weight, bias, ...); ``tensor`` is the one storing it in ``buf``. The pairing refuses a
    detector whose convs do not map 1:1 onto the template's (another architecture)."""
    out: List[Tuple[int, str, np.ndarray]] = []
    for pair in pair_convs(read_tflite(buf, where), detector, where):
        w, b = _folded(pair)
        out += [(int(pair.source.weight_tensor), f"{pair.key}.weight", _tflite_layout(w, pair.source.depthwise)),
                (int(pair.source.bias_tensor), f"{pair.key}.bias", b)]
    return out


def stored_tensors(detector: nn.Module, buf: bytes, where: str) -> List[int]:
    """The tensors storing :func:`tflite_weights`' arrays in ``buf`` (after DEQUANTIZE / DENSIFY are followed back),
    same order: for a rewritten graph, whose tensor indices moved."""
    out: List[int] = []
    for pair in pair_convs(read_tflite(buf, where), detector, where):
        out += [int(pair.source.weight_tensor), int(pair.source.bias_tensor)]
    return out


# ----------------------------------------------------------------------------- flatbuffer access
class _Flat:
    """Read access to one .tflite's tensors and the byte span of each buffer (for in-place writes)."""

    def __init__(self, buf: bytes) -> None:
        import tflite

        self.model = tflite.Model.GetRootAsModel(buf, 0)
        self.graph = self.model.Subgraphs(0)
        self.types = {v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}

    def name(self, t: int) -> str:
        return self.graph.Tensors(t).Name().decode()

    def span(self, t: int) -> Tuple[int, int]:
        """(start, length) in bytes of tensor ``t``'s buffer data within the file."""
        b = self.model.Buffers(self.graph.Tensors(t).Buffer())
        o = b._tab.Offset(4)  # Buffer.data
        if not o:
            return 0, 0
        return b._tab.Vector(o), b._tab.VectorLen(o)

    def dtype(self, t: int) -> np.dtype:
        name = self.types.get(self.graph.Tensors(t).Type())
        if name not in ("FLOAT16", "FLOAT32"):
            raise TFLiteExportError(f"tensor {self.name(t)!r} is stored as {name}; only float16/float32 are written")
        return np.dtype(np.float16 if name == "FLOAT16" else np.float32)

    def shape(self, t: int) -> Tuple[int, ...]:
        return tuple(int(s) for s in self.graph.Tensors(t).ShapeAsNumpy())

    def sparsity(self, t: int) -> Any:
        return self.graph.Tensors(t).Sparsity()

    def buffer_users(self) -> Dict[int, int]:
        users: Dict[int, int] = {}
        for i in range(self.graph.TensorsLength()):
            b = self.graph.Tensors(i).Buffer()
            users[b] = users.get(b, 0) + 1
        return users


def _outside_layout(flat: _Flat, t: int, array: np.ndarray) -> int:
    """How many non-zeros of ``array`` fall where sparse tensor ``t`` has no slot (0 for a dense tensor)."""
    sparsity = flat.sparsity(t)
    if sparsity is None:
        return 0
    outside = array.astype(np.float16).copy()  # what rounds to zero in fp16 needs no slot
    outside[tuple(sparse_coords(sparsity, flat.shape(t), flat.name(t)).T)] = 0
    return int(np.count_nonzero(outside))


def _encode(flat: _Flat, t: int, array: np.ndarray, role: str) -> bytes:
    """The bytes tensor ``t`` must hold for ``array`` (dense TFLite layout; sparse tensors take the values at their
    slots, the caller has checked that nothing lies outside them)."""
    shape = flat.shape(t)
    if tuple(array.shape) != shape:
        raise TFLiteExportError(f"{role}: shape {tuple(array.shape)} does not fit tensor {flat.name(t)!r} {shape}")
    if not np.isfinite(array).all():
        raise TFLiteExportError(f"{role}: non-finite values (NaN/inf); refusing to export these weights")
    dtype = flat.dtype(t)
    if dtype == np.float16:
        worst = float(np.abs(array).max(initial=0.0))
        if worst > FP16_MAX:
            raise TFLiteExportError(f"{role}: |value| up to {worst:.4g} overflows fp16 (max {FP16_MAX:.0f}) in tensor "
                                    f"{flat.name(t)!r}; export with --tflite-precision fp32")
    stored = array.astype(dtype)
    sparsity = flat.sparsity(t)
    if sparsity is None:
        return stored.tobytes()
    return stored[tuple(sparse_coords(sparsity, shape, flat.name(t)).T)].tobytes()


def _write(buf: bytes, writes: Sequence[Tuple[int, bytes, str]]) -> Tuple[bytes, int]:
    """``buf`` with each (tensor, bytes) written over that tensor's buffer in place; returns (bytes, changed)."""
    flat = _Flat(buf)
    users = flat.buffer_users()
    out = bytearray(buf)
    changed = 0
    for t, data, role in writes:
        start, length = flat.span(t)
        if length != len(data):
            raise TFLiteExportError(f"{role}: {len(data)} bytes for tensor {flat.name(t)!r} whose buffer holds "
                                    f"{length}")
        if users[flat.graph.Tensors(t).Buffer()] > 1:
            raise TFLiteExportError(f"{role}: tensor {flat.name(t)!r} shares its buffer with another tensor; "
                                    "cannot write it alone")
        changed += out[start:start + length] != data
        out[start:start + length] = data
    return bytes(out), changed


# ----------------------------------------------------------------------------- restructuring
def _restructure(buf: bytes, fp32: bool, densify: Union[bool, Set[int]]) -> bytes:
    """A copy of the graph with constant weights stored dense (``densify``: these sparse tensors, or True for all;
    ``fp32``: all, as float32): their DENSIFY / DEQUANTIZE ops are dropped and the op's output tensor holds the data itself."""
    try:
        import flatbuffers
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:
        raise TFLiteExportError("--tflite-precision fp32 and --densify rewrite the graph, which needs the "
                                "'ai-edge-litert' package: pip install 'blazekit[litert]'") from exc
    flat = _Flat(buf)
    model = schema.ModelT.InitFromPackedBuf(bytearray(buf), 0)
    graph = model.subgraphs[0]
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    producer = {int(o): op for op in graph.operators for o in op.outputs}

    def dense_values(t: int) -> np.ndarray:
        """Constant tensor ``t`` (fp16/fp32, maybe sparse) as a dense float32 array."""
        start, length = flat.span(t)
        values = np.frombuffer(buf[start:start + length], dtype=flat.dtype(t)).astype(np.float32)
        if flat.sparsity(t) is None:
            return values.reshape(flat.shape(t))
        dense = np.zeros(flat.shape(t), np.float32)
        dense[tuple(sparse_coords(flat.sparsity(t), flat.shape(t), flat.name(t)).T)] = values
        return dense

    def is_const(t: int) -> bool:
        return flat.span(t)[1] > 0 and uses.get(t, 0) == 1

    drop_ops: Set[int] = set()
    drop_tensors: Set[int] = set()

    def store(t: int, array: np.ndarray) -> None:
        """Give tensor ``t`` (an op output until now) its own buffer holding ``array``."""
        model.buffers.append(schema.BufferT())
        model.buffers[-1].data = np.frombuffer(array.tobytes(), np.uint8)
        graph.tensors[t].buffer = len(model.buffers) - 1

    uses: Dict[int, int] = {}
    for op in graph.operators:
        for t in op.inputs:
            uses[int(t)] = uses.get(int(t), 0) + 1

    for op in graph.operators:
        code, src, dst = codes[op.opcodeIndex], int(op.inputs[0]), int(op.outputs[0])
        if uses.get(src, 0) != 1:
            continue  # a constant read by other ops too stays as it is
        if code == schema.BuiltinOperator.DENSIFY and is_const(src) and (fp32 or densify is True or src in densify):
            consumer = [o for o in graph.operators if dst in list(o.inputs)]
            if fp32 and all(codes[o.opcodeIndex] == schema.BuiltinOperator.DEQUANTIZE for o in consumer):
                continue  # the DEQUANTIZE after it stores the fp32 data
            store(dst, dense_values(src).astype(np.float16 if graph.tensors[dst].type == schema.TensorType.FLOAT16
                                                 else np.float32))
            drop_ops.add(id(op))
            drop_tensors.add(src)
        elif code == schema.BuiltinOperator.DEQUANTIZE and fp32:
            chain = [src]
            if src in producer and codes[producer[src].opcodeIndex] == schema.BuiltinOperator.DENSIFY:
                chain.append(int(producer[src].inputs[0]))
                drop_ops.add(id(producer[src]))
            if not is_const(chain[-1]):
                continue
            store(dst, dense_values(chain[-1]))
            drop_ops.add(id(op))
            drop_tensors.update(chain)
    graph.operators = [op for op in graph.operators if id(op) not in drop_ops]
    _drop_tensors(model, graph, drop_tensors)
    return _pack(model, schema, flatbuffers.Builder(2 * len(buf) + (1 << 20)))


def _drop_tensors(model: Any, graph: Any, drop: Set[int]) -> None:
    """Remove tensors ``drop`` (no op reads them any more) and their data; the other tensors are renumbered and every
    op's and the graph's inputs / outputs follow. Buffer entries stay (their indices are kept), emptied."""
    for t in drop:
        model.buffers[graph.tensors[t].buffer].data = None
    keep = [t for t in range(len(graph.tensors)) if t not in drop]
    new_index = {old: new for new, old in enumerate(keep)}
    graph.tensors = [graph.tensors[t] for t in keep]

    def remap(ids: Any) -> List[int]:
        return [new_index[int(i)] if int(i) >= 0 else -1 for i in ids]

    for op in graph.operators:
        op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
    graph.inputs, graph.outputs = remap(graph.inputs), remap(graph.outputs)


def _pack(model: Any, schema: Any, builder: Any) -> bytes:
    """The object-API ``model`` as ``.tflite`` bytes, buffer data 16-byte aligned as the TFLite converter writes it."""
    for buffer in model.buffers:
        buffer.__class__ = _AlignedBufferT(schema)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@functools.lru_cache(maxsize=None)
def _AlignedBufferT(schema: Any) -> type:  # noqa: N802 - a class, made once per schema module
    """``schema.BufferT`` whose data vector is 16-byte aligned (the object API aligns it to 4 only)."""
    class AlignedBufferT(schema.BufferT):
        def Pack(self, builder: Any) -> int:  # noqa: N802 - the schema's name
            data = None
            if self.data is not None:
                raw = np.asarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(raw), 16)
                builder.head = builder.head - len(raw)
                builder.Bytes[builder.head:builder.head + len(raw)] = raw
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            return schema.BufferEnd(builder)

    return AlignedBufferT


# ----------------------------------------------------------------------------- export
def export_tflite(detector: nn.Module, out: PathLike, precision: str = "fp16", densify: bool = False) -> TFLiteExport:
    """Write ``detector``'s weights into MediaPipe's matching ``.tflite`` and save it as ``out`` (see module doc)."""
    if precision not in PRECISIONS:
        raise TFLiteExportError(f"--tflite-precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    template = template_for(detector)
    diffs = mediapipe_differences(detector, template)
    if diffs:
        raise TFLiteExportError("MediaPipe's face detector graph hard-codes what this model changes, so its "
                                f".tflite would compute or decode something else: {'; '.join(diffs)}; export ONNX "
                                "instead (--format onnx)")
    path = Path(template["path"])
    where = path.name
    original = buf = path.read_bytes()
    weights = tflite_weights(detector.eval(), buf, where)
    tensors = [t for t, _, _ in weights]
    arrays = [(role, array) for _, role, array in weights]
    flat = _Flat(buf)
    sparse_total = sum(flat.sparsity(t) is not None for t in tensors)
    to_densify: Dict[int, str] = {}
    for t, (role, array) in zip(tensors, arrays):
        lost = _outside_layout(flat, t, array)
        if lost:
            to_densify[t] = f"{role} ({flat.name(t)!r}: {lost} non-zero weights where the sparse layout has none)"
    if to_densify and not densify and precision == "fp16":  # fp32 stores every tensor dense anyway
        raise TFLiteExportError(f"{len(to_densify)} of the {sparse_total} sparse weight tensors of {where} are no "
                                f"longer sparse, e.g. {next(iter(to_densify.values()))}; pass --densify to store "
                                "them dense (the file grows)")
    if precision == "fp32" or to_densify:
        buf = _restructure(buf, precision == "fp32", set(to_densify))
        flat = _Flat(buf)
        tensors = stored_tensors(detector, buf, where)
    writes = [(t, _encode(flat, t, array, role), role) for t, (role, array) in zip(tensors, arrays)]
    result, changed = _write(buf, writes)
    out = Path(out)
    from ..checkpoint import _atomic_write

    _atomic_write(out, lambda tmp: Path(tmp).write_bytes(result))
    return TFLiteExport(path=out, template=path, precision=precision, size=len(result), tensors_written=len(writes),
                        tensors_changed=changed if buf is original else len(writes),
                        densified=list(to_densify.values()),
                        sparse_kept=sum(flat.sparsity(t) is not None for t in tensors))
