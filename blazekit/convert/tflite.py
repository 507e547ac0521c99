"""Import pretrained BlazeFace weights: MediaPipe ``.tflite`` and hollance ``.pth``.

Both sources have BatchNorm folded into conv biases. blazekit's convs are ``bias=False`` + BN, so
each BN is set to an identity plus the source bias: ``running_mean 0, running_var 1,
weight sqrt(1 + eps), bias = source bias``; in eval mode BN then computes ``x + bias`` exactly, and the
model stays trainable (fine-tuning updates the BN statistics and affine parameters as usual).

Tensors are mapped *structurally*: the source convs in graph / state-dict order against the
target's conv units in forward order, checking kernel shapes, channels and strides pair by pair.
Anything that does not map 1:1 raises :class:`ConversionError` naming both sides.
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..registry import DETECTORS

PathLike = Union[str, os.PathLike]

#: shipped model configs, picked by :func:`default_model_cfg`
_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "_base_" / "models"


class ConversionError(UserError, ValueError):
    """Source weights that do not fit the target architecture; the message names the tensors."""


@dataclass
class SourceConv:
    """One conv of the source model, already in PyTorch layout (OIHW; depthwise O1HW)."""

    name: str
    weight: np.ndarray
    bias: np.ndarray
    stride: Optional[int] = None  # None: unknown (hollance state dicts do not store strides)
    depthwise: bool = False
    padding: Optional[str] = None  # "SAME" / "VALID" for tflite
    pads: Optional[Tuple[int, int, int, int]] = None  # (left, right, top, bottom) of a PAD op feeding the conv
    weight_tensor: Optional[int] = None  # tflite: index of the tensor storing the weight (behind DEQUANTIZE/DENSIFY)
    bias_tensor: Optional[int] = None  # tflite: likewise for the bias; export writes back into both


@dataclass
class SourceModel:
    """Body convs (backbone, then neck) in graph order and head convs per level.

    ``head[level] = {"cls": .., "reg": ..}`` are the convs reading the feature; a head that refines
    them (MediaPipe full range: a depthwise conv before depth-to-space) adds ``"cls_post"`` / ``"reg_post"``.
    """

    backbone: List[SourceConv]
    head: List[Dict[str, SourceConv]]
    input_hw: Optional[Tuple[int, int]] = None


def file_md5(path: PathLike) -> str:
    """MD5 of a file, recorded in converted checkpoints so their source can be verified."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- TFLite
def _op_name(model: Any, op: Any) -> str:
    import tflite

    code = model.OperatorCodes(op.OpcodeIndex())
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    return names.get(builtin, f"BUILTIN_{builtin}")


def sparse_coords(sparsity: Any, shape: Tuple[int, ...], where: str) -> np.ndarray:
    """The dense coordinates [N, ndim] of a TFLite sparse tensor's N stored values, in storage order.

    Supports the layout MediaPipe's sparse models use: traversal order = dims, no block map, each
    dimension DENSE or SPARSE_CSR (``array_segments`` / ``array_indices``). Import scatters the values
    to these coordinates; export gathers them back from there.
    """
    import tflite

    ndim = len(shape)
    order = [int(v) for v in sparsity.TraversalOrderAsNumpy()] if sparsity.TraversalOrderLength() else []
    if order != list(range(ndim)) or sparsity.BlockMapLength() > 0 or sparsity.DimMetadataLength() != ndim:
        raise ConversionError(f"{where}: sparse weight layout (traversal order {order}, block map "
                              f"{sparsity.BlockMapLength()} dims) is not supported; only per-dimension "
                              "dense / CSR without blocks")
    vec_types = {tflite.SparseIndexVector.Int32Vector: tflite.Int32Vector,
                 tflite.SparseIndexVector.Uint16Vector: tflite.Uint16Vector,
                 tflite.SparseIndexVector.Uint8Vector: tflite.Uint8Vector}

    def vector(kind: int, table: Any) -> np.ndarray:
        vec = vec_types[kind]()
        vec.Init(table.Bytes, table.Pos)
        return vec.ValuesAsNumpy().astype(np.int64)

    dims = []
    for d in range(ndim):
        meta = sparsity.DimMetadata(d)
        if meta.Format() == tflite.DimensionType.DENSE:
            dims.append(("dense", int(meta.DenseSize()), None, None))
        else:
            dims.append(("csr", 0, vector(meta.ArraySegmentsType(), meta.ArraySegments()),
                         vector(meta.ArrayIndicesType(), meta.ArrayIndices())))
    # Walk level by level: ``pos`` is the position within each level (the values' index at the last).
    coords = np.zeros((1, 0), dtype=np.int64)
    pos = np.zeros(1, dtype=np.int64)
    for kind, size, segments, indices in dims:
        if kind == "dense":
            coords = np.concatenate([np.repeat(coords, size, axis=0),
                                     np.tile(np.arange(size), len(pos))[:, None]], axis=1)
            pos = (pos[:, None] * size + np.arange(size)[None, :]).reshape(-1)
        else:
            starts, ends = segments[pos], segments[pos + 1]
            counts = ends - starts
            new_pos = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)]) if len(pos) else pos
            coords = np.concatenate([np.repeat(coords, counts, axis=0), indices[new_pos][:, None]], axis=1)
            pos = new_pos
    out = np.empty_like(coords)
    out[pos] = coords  # storage order: value ``pos[i]`` sits at ``coords[i]``
    return out


def _densify(sparsity: Any, values: np.ndarray, shape: Tuple[int, ...], where: str) -> np.ndarray:
    """TFLite sparse tensor (what a DENSIFY op expands) -> dense array."""
    coords = sparse_coords(sparsity, shape, where)
    if len(coords) != len(values):
        raise ConversionError(f"{where}: sparse weight has {len(values)} values but its index describes {len(coords)}")
    dense = np.zeros(shape, dtype=values.dtype)
    dense[tuple(coords.T)] = values
    return dense


def read_tflite(path: Union[PathLike, bytes], name: Optional[str] = None) -> SourceModel:
    """Parse a BlazeFace ``.tflite`` flatbuffer (a file, or its bytes named ``name``) into convs (fp16 weights
    dequantized to float32; each conv also records the tensors storing its weight and bias)."""
    try:
        import tflite
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading .tflite needs the 'tflite' package: pip install 'blazekit[tflite]'") from exc
    if isinstance(path, (bytes, bytearray)):
        buf, path = bytes(path), name or "<tflite bytes>"
    else:
        path = Path(path)
        buf = path.read_bytes()
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        graph = model.Subgraphs(0) if model.SubgraphsLength() > 0 else None
        num_ops = graph.OperatorsLength() if graph is not None else 0
    except Exception as exc:
        raise ConversionError(f"{path}: not a readable TFLite flatbuffer ({exc})") from exc
    if num_ops == 0:
        raise ConversionError(f"{path}: not a TFLite model with a graph (no subgraph or no operators); "
                              "is the file truncated or another format?")
    type_names = {v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}

    def tname(i: int) -> str:
        return graph.Tensors(i).Name().decode()

    ops = [graph.Operators(i) for i in range(graph.OperatorsLength())]
    kinds = [_op_name(model, op) for op in ops]
    producer: Dict[int, int] = {}
    consumers: Dict[int, List[int]] = {}
    for k, op in enumerate(ops):
        for t in op.OutputsAsNumpy():
            producer[int(t)] = k
        for t in op.InputsAsNumpy():
            consumers.setdefault(int(t), []).append(k)
    outputs = [int(t) for t in graph.OutputsAsNumpy()]

    def stored(i: int) -> int:
        """The tensor holding the data: DEQUANTIZE / DENSIFY outputs lead back to their (sparse) fp16 input."""
        while i in producer and kinds[producer[i]] in ("DEQUANTIZE", "DENSIFY"):
            i = int(ops[producer[i]].InputsAsNumpy()[0])
        return i

    def const(i: int) -> np.ndarray:
        """A constant tensor as float32 (fp16 weights are dequantized)."""
        i = stored(i)
        t = graph.Tensors(i)
        raw = model.Buffers(t.Buffer()).DataAsNumpy()
        ttype = type_names.get(t.Type(), str(t.Type()))
        if isinstance(raw, int) or raw is None or len(raw) == 0:
            raise ConversionError(f"{path}: tensor {tname(i)!r} has no constant data (is it a weight?)")
        dtypes = {"FLOAT16": np.float16, "FLOAT32": np.float32}
        if ttype not in dtypes:
            raise ConversionError(f"{path}: tensor {tname(i)!r} has type {ttype}; only float16/float32 weights "
                                  "are supported (int8-quantized or sparse models are not)")
        shape = tuple(int(s) for s in t.ShapeAsNumpy())
        values = np.frombuffer(raw.tobytes(), dtype=dtypes[ttype]).astype(np.float32)
        if t.Sparsity() is not None:
            return _densify(t.Sparsity(), values, shape, f"{path}: tensor {tname(i)!r}")
        return values.reshape(shape)

    def reaches_output(tensor: int) -> Optional[int]:
        """Graph output reached through head ops (reshape/concat, or full range's pad/depthwise/depth-to-space;
        never an ADD or activation of the body), else None."""
        seen, todo = set(), [tensor]
        while todo:
            t = todo.pop()
            if t in outputs:
                return t
            for k in consumers.get(t, []):
                if kinds[k] in _HEAD_OPS and k not in seen:
                    seen.add(k)
                    todo.extend(int(o) for o in ops[k].OutputsAsNumpy())
        return None

    def explicit_pads(tensor: int) -> Optional[Tuple[int, int, int, int]]:
        """(left, right, top, bottom) when ``tensor`` comes from a spatial zero PAD op, else None."""
        if tensor not in producer or kinds[producer[tensor]] != "PAD":
            return None
        pad_op = ops[producer[tensor]]
        amounts = const_int(int(pad_op.InputsAsNumpy()[1])).reshape(-1, 2)
        if amounts.shape[0] != 4 or amounts[0].any() or amounts[3].any():
            raise ConversionError(f"{path}: PAD {tname(tensor)!r} pads batch or channels ({amounts.tolist()}) "
                                  "right before a conv")
        return int(amounts[2, 0]), int(amounts[2, 1]), int(amounts[1, 0]), int(amounts[1, 1])

    def const_int(i: int) -> np.ndarray:
        t = graph.Tensors(i)
        return np.frombuffer(model.Buffers(t.Buffer()).DataAsNumpy().tobytes(), dtype=np.int32)

    backbone: List[SourceConv] = []
    head_raw: List[Tuple[int, str, SourceConv]] = []  # (producer of input, cls/reg[_post], conv)
    head_level: Dict[int, int] = {}  # head conv op -> the level key of its chain
    for k, (op, kind) in enumerate(zip(ops, kinds)):
        if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            if kind in ("FULLY_CONNECTED", "TRANSPOSE_CONV"):
                raise ConversionError(f"{path}: op {k} {kind} is not part of a BlazeFace SSD graph")
            continue
        ins = [int(t) for t in op.InputsAsNumpy()]
        if len(ins) < 3 or ins[2] < 0:
            raise ConversionError(f"{path}: {kind} {tname(int(op.OutputsAsNumpy()[0]))!r} has no bias input")
        w, b = const(ins[1]), const(ins[2])
        opts_table = op.BuiltinOptions()
        if kind == "CONV_2D":
            opts = tflite.Conv2DOptions()
            opts.Init(opts_table.Bytes, opts_table.Pos)
            w = w.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        else:
            opts = tflite.DepthwiseConv2DOptions()
            opts.Init(opts_table.Bytes, opts_table.Pos)
            if opts.DepthMultiplier() not in (0, 1):
                raise ConversionError(f"{path}: depthwise conv {tname(stored(ins[1]))!r} has depth multiplier "
                                      f"{opts.DepthMultiplier()}; BlazeBlocks use 1")
            w = w.transpose(3, 0, 1, 2)  # 1HWO -> O1HW
        if opts.StrideH() != opts.StrideW():
            raise ConversionError(f"{path}: conv {tname(stored(ins[1]))!r} has unequal strides "
                                  f"{opts.StrideH()}x{opts.StrideW()}")
        padding = "SAME" if opts.Padding() == tflite.Padding.SAME else "VALID"
        conv = SourceConv(tname(stored(ins[1])), np.ascontiguousarray(w), b, int(opts.StrideH()),
                          kind == "DEPTHWISE_CONV_2D", padding, explicit_pads(ins[0]) if padding == "VALID" else None,
                          weight_tensor=stored(ins[1]), bias_tensor=stored(ins[2]))
        out_t = reaches_output(int(op.OutputsAsNumpy()[0]))
        if out_t is None:
            backbone.append(conv)
        else:
            last_dim = int(graph.Tensors(out_t).ShapeAsNumpy()[-1])
            role = "cls" if last_dim == 1 else "reg"
            src_op = producer.get(ins[0], -1)
            if src_op >= 0 and kinds[src_op] == "PAD":
                src_op = producer.get(int(ops[src_op].InputsAsNumpy()[0]), -1)
            if src_op in head_level:  # refines another head conv's output
                head_level[k] = head_level[src_op]
                head_raw.append((head_level[k], role + "_post", conv))
            else:
                head_level[k] = src_op
                head_raw.append((src_op, role, conv))
    head = _group_head(head_raw, str(path))
    in_shape = graph.Tensors(int(graph.InputsAsNumpy()[0])).ShapeAsNumpy()
    return SourceModel(backbone, head, (int(in_shape[1]), int(in_shape[2])) if len(in_shape) == 4 else None)


#: ops between a head conv and a graph output (MediaPipe full range: pad + depthwise conv + depth-to-space)
_HEAD_OPS = ("RESHAPE", "CONCATENATION", "SQUEEZE", "PAD", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE")


def _group_head(items: List[Tuple[Any, str, SourceConv]], where: str) -> List[Dict[str, SourceConv]]:
    """Group head convs into levels ordered by ``items[i][0]`` (the feature they read)."""
    levels: Dict[Any, Dict[str, SourceConv]] = {}
    for key, role, conv in items:
        slot = levels.setdefault(key, {})
        if role in slot:
            raise ConversionError(f"{where}: two {role} convs on one feature level: {slot[role].name!r}, {conv.name!r}")
        slot[role] = conv
    out = [levels[k] for k in sorted(levels)]
    for i, lv in enumerate(out):
        if not {"cls", "reg"} <= set(lv) <= {"cls", "reg", "cls_post", "reg_post"}:
            names = [c.name for c in lv.values()]
            raise ConversionError(f"{where}: head level {i} needs one classifier and one regressor conv, got {names}")
    return out


# ----------------------------------------------------------------------------- hollance
def _load_state_dict(path: Path) -> Mapping[str, Any]:
    """A ``.pth`` state dict (or a ``{"state_dict": ...}`` wrapper), with an error naming the file otherwise.

    Loaded with ``weights_only=True`` only: a file that needs arbitrary pickled Python objects is
    refused, never unpickled (a pickle can run code when loaded).
    """
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about plain pickles' protocol before refusing them
            warnings.simplefilter("ignore", UserWarning)
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        with open(path, "rb") as f:
            head = f.read(4)
        if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # a torch zip archive or a pickle
            raise ConversionError(f"{path}: not a blazekit checkpoint or it holds Python objects that are not "
                                  "loaded for safety (only tensors and plain containers are read)") from None
        raise ConversionError(f"{path}: cannot load as a PyTorch state dict (neither a torch archive "
                              "nor a pickle)") from None
    except Exception as exc:
        raise ConversionError(f"{path}: cannot load as a PyTorch state dict ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if isinstance(sd, Mapping) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping):
        raise ConversionError(f"{path}: expected a state dict, got {type(sd).__name__}")
    return sd


def read_hollance(path: PathLike) -> SourceModel:
    """Parse hollance's BlazeFace state dict (``blazeface.pth`` / ``blazefaceback.pth``)."""
    path = Path(path)
    sd = _load_state_dict(path)
    backbone: List[SourceConv] = []
    head_raw: List[Tuple[int, str, SourceConv]] = []
    for key, value in sd.items():
        if not key.endswith(".weight") or getattr(value, "ndim", 0) != 4:
            continue
        prefix = key[: -len(".weight")]
        if prefix + ".bias" not in sd:
            raise ConversionError(f"{path}: conv {key!r} has no bias {prefix + '.bias'!r} (expected folded BN)")
        w = value.float().numpy()
        conv = SourceConv(key, w, sd[prefix + ".bias"].float().numpy(), depthwise=w.shape[1] == 1 and w.shape[2] > 1)
        role = "cls" if prefix.startswith("classifier_") else "reg" if prefix.startswith("regressor_") else None
        if role is None:
            backbone.append(conv)
        else:
            suffix = prefix.split("_", 1)[1]
            if not suffix.isdigit():
                raise ConversionError(f"{path}: head conv {key!r}: expected a name like classifier_8 / regressor_16")
            head_raw.append((int(suffix), role, conv))
    unused = [k for k in sd if not (k.endswith(".weight") or k.endswith(".bias"))]
    if unused:
        raise ConversionError(f"{path}: unexpected entries {unused[:8]} (only conv weights and biases are mapped)")
    return SourceModel(backbone, _group_head(head_raw, str(path)))


# ----------------------------------------------------------------------------- mapping
def build_target(model_cfg: Mapping[str, Any]) -> nn.Module:
    """The detector a model config section describes (head sized by the detector itself; ``init`` not loaded)."""
    for key in ("backbone", "head", "anchors"):
        if key not in model_cfg:
            raise ConversionError(f"model config has no {key!r} section (keys: {sorted(model_cfg)})")
    return DETECTORS.build({"type": "BlazeFace", **model_cfg}, where="model")


def _units(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """Conv+BN units of the backbone, then the neck, in registration (= source graph) order."""
    from ..models.blocks import ConvBN

    out = []
    for part in ("backbone", "neck"):
        sub = getattr(model, part, None)
        if sub is not None:
            out += [(f"{part}.{n}", m) for n, m in sub.named_modules() if isinstance(m, ConvBN)]
    return out


def _target_pads(conv: nn.Conv2d, explicit: Optional[Tuple[int, int, int, int]]) -> Tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding a target conv applies (``explicit``: a ConvBN's F.pad)."""
    if explicit is not None:
        return tuple(int(v) for v in explicit)  # type: ignore[return-value]
    ph, pw = (int(v) for v in conv.padding)
    return pw, pw, ph, ph


def _source_pads(conv: SourceConv, kernel: int) -> Optional[Tuple[int, int, int, int]]:
    """(left, right, top, bottom) padding of a tflite conv (SAME: TF's rule for inputs divisible by the
    stride); None for hollance (not stored). Rows a stride-2 conv never reads are not counted."""
    if conv.padding is None or conv.stride is None:
        return None
    if conv.padding == "SAME":
        from ..models.blocks import tf_same_padding

        return tf_same_padding(kernel, conv.stride)
    return conv.pads or (0, 0, 0, 0)


def _pads_equivalent(src: Tuple[int, int, int, int], dst: Tuple[int, int, int, int], kernel: int,
                     stride: int) -> bool:
    """Same output on inputs divisible by the stride: equal leading pads and the same output size
    (a trailing row that no window reaches does not count, e.g. Keras' pad 1 + VALID vs pad (1, 0))."""
    def rows(lead: int, trail: int) -> int:
        return (lead + trail - kernel) // stride

    return (src[0] == dst[0] and src[2] == dst[2] and rows(src[0], src[1]) == rows(dst[0], dst[1])
            and rows(src[2], src[3]) == rows(dst[2], dst[3]))


@dataclass
class ConvPair:
    """One source conv and the target conv it fills: ``bn`` is the BatchNorm after it (body units), None in the head."""

    source: SourceConv
    key: str  # target state-dict prefix of the conv, e.g. ``backbone.stem.conv`` / ``head.cls_convs.0``
    conv: nn.Conv2d
    bn: Optional[nn.BatchNorm2d] = None
    bn_key: Optional[str] = None


def pair_convs(src: SourceModel, target: nn.Module, source_name: str = "source") -> List[ConvPair]:
    """The source convs against the target's, in order; raise naming both sides on any structural mismatch.

    The one mapping of both directions: import copies source -> target, export (:mod:`blazekit.deploy.tflite`)
    writes target -> the source's tensors.
    """
    def check_conv(conv: SourceConv, key: str, module: nn.Conv2d, explicit_pad: Any = None) -> None:
        depthwise = module.groups == module.in_channels and module.groups > 1
        if depthwise != conv.depthwise and conv.weight.shape[2] > 1:
            raise ConversionError(f"{source_name}: source {conv.name!r} ({'depthwise' if conv.depthwise else 'dense'}) "
                                  f"maps to {key} ({'depthwise' if depthwise else 'dense'})")
        stride = int(module.stride[0])
        if conv.stride is not None and conv.stride != stride:
            raise ConversionError(f"{source_name}: source {conv.name!r} has stride {conv.stride}, target {key} "
                                  f"has stride {stride}")
        k = int(module.kernel_size[0])
        want = _source_pads(conv, k)
        have = _target_pads(module, explicit_pad)
        if want is not None and k > 1 and not _pads_equivalent(want, have, k, stride):
            raise ConversionError(f"{source_name}: source {conv.name!r} pads (left, right, top, bottom) = {want}, "
                                  f"target {key} pads {have}; the outputs would be shifted")
        if tuple(conv.weight.shape) != tuple(module.weight.shape):
            raise ConversionError(f"{source_name}: source {conv.name!r} has shape {tuple(conv.weight.shape)} but "
                                  f"target {key}.weight has {tuple(module.weight.shape)}")

    pairs: List[ConvPair] = []
    units = _units(target)
    if len(units) != len(src.backbone):
        raise ConversionError(
            f"{source_name}: {len(src.backbone)} backbone convs in the source but {len(units)} conv units in "
            f"{type(target.backbone).__name__}"
            f"{' + ' + type(target.neck).__name__ if target.neck is not None else ''}; "
            f"source: {[c.name for c in src.backbone]}; target: {[n for n, _ in units]}. "
            "Is the model config the right one (front/back/full range)?")
    for (key, unit), conv in zip(units, src.backbone):
        check_conv(conv, key, unit.conv, unit.pad)
        pairs.append(ConvPair(conv, f"{key}.conv", unit.conv, unit.bn, f"{key}.bn"))

    n_levels = len(target.head.cls_convs)
    if len(src.head) != n_levels:
        raise ConversionError(f"{source_name}: source head has {len(src.head)} levels "
                              f"({[[c.name for c in lv.values()] for lv in src.head]}), target head has {n_levels}")
    for i, level in enumerate(src.head):
        for role, attr in (("cls", "cls_convs"), ("reg", "reg_convs")):
            module = getattr(target.head, attr)[i]
            # SSDHead: one conv per level; SubPixelSSDHead: {"conv", "dw"} (the source's <role>_post)
            parts = [(role, "", module)] if isinstance(module, nn.Conv2d) else \
                [(role, ".conv", module["conv"]), (role + "_post", ".dw", module["dw"])]
            if {r for r, _, _ in parts} != {r for r in level if r.startswith(role)}:
                raise ConversionError(f"{source_name}: head level {i} {role}: source convs "
                                      f"{[c.name for r, c in level.items() if r.startswith(role)]} do not match "
                                      f"target head.{attr}.{i} ({type(target.head).__name__})")
            for r, suffix, conv_module in parts:
                conv, key = level[r], f"head.{attr}.{i}{suffix}"
                check_conv(conv, key, conv_module)
                pairs.append(ConvPair(conv, key, conv_module))
    return pairs


def map_to_state_dict(src: SourceModel, model_cfg: Mapping[str, Any],
                      source_name: str = "source") -> Dict[str, torch.Tensor]:
    """Fill the target's state dict from ``src``; raise naming the tensors on any mismatch."""
    target = build_target(model_cfg)
    sd = {k: v.detach().clone() for k, v in target.state_dict().items()}
    filled = set()

    def put(key: str, array: np.ndarray, what: str) -> None:
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if tuple(t.shape) != tuple(sd[key].shape):
            raise ConversionError(f"{source_name}: {what} has shape {tuple(t.shape)} but target {key!r} "
                                  f"expects {tuple(sd[key].shape)}")
        sd[key] = t
        filled.add(key)

    for pair in pair_convs(src, target, source_name):
        conv = pair.source
        put(f"{pair.key}.weight", conv.weight, f"source {conv.name!r}")
        if pair.bn is None:
            put(f"{pair.key}.bias", conv.bias, f"bias of {conv.name!r}")
            continue
        put(f"{pair.bn_key}.bias", conv.bias, f"bias of {conv.name!r}")
        put(f"{pair.bn_key}.weight", np.full(conv.bias.shape, math.sqrt(1.0 + pair.bn.eps)), "BN weight")
        put(f"{pair.bn_key}.running_mean", np.zeros(conv.bias.shape), "BN running_mean")
        put(f"{pair.bn_key}.running_var", np.ones(conv.bias.shape), "BN running_var")

    missing = [k for k in sd if k not in filled and not k.endswith("num_batches_tracked")]
    if missing:
        raise ConversionError(f"{source_name}: target tensors not filled from the source: {missing}")
    return sd


def convert_tflite(path: PathLike, model_cfg: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """MediaPipe BlazeFace ``.tflite`` -> blazekit state dict (``backbone.*``, ``head.*``)."""
    return map_to_state_dict(read_tflite(path), model_cfg, str(path))


def convert_hollance(path: PathLike, model_cfg: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """hollance ``blazeface.pth`` / ``blazefaceback.pth`` -> blazekit state dict."""
    return map_to_state_dict(read_hollance(path), model_cfg, str(path))


# ----------------------------------------------------------------------------- checkpoints
#: tflite input size -> model variant (``configs/_base_/models/blazeface_{variant}.yml``)
_VARIANT_BY_INPUT = {(128, 128): "front", (256, 256): "back", (192, 192): "full_range"}


def guess_variant(path: PathLike) -> str:
    """``"front"``, ``"back"`` or ``"full_range"`` from the file's content (input size / layer names), not its name."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        hw = read_tflite(path).input_hw
        if hw in _VARIANT_BY_INPUT:
            return _VARIANT_BY_INPUT[hw]
        raise ConversionError(f"{path}: input size {hw} is none of the BlazeFace models (front 128, full range 192, "
                              "back 256); pass a model config explicitly (--config)")
    if suffix in (".pth", ".pt"):
        return "back" if any(k.startswith("final.") for k in _load_state_dict(path)) else "front"
    raise ConversionError(f"{path}: unknown weight format {suffix!r}; expected .tflite (MediaPipe) or .pth (hollance)")


def default_model_cfg(variant: str) -> Dict[str, Any]:
    """The ``model`` section of ``configs/_base_/models/blazeface_{variant}.yml``."""
    from .. import config

    path = _CONFIG_DIR / f"blazeface_{variant}.yml"
    if not path.is_file():
        raise ConversionError(f"default model config {path} not found; pass a config with a 'model' section")
    return dict(config.load(path)["model"])


def convert_checkpoint(src: PathLike, model_cfg: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Convert ``src`` (format by suffix) to ``{"state_dict", "model_cfg", "meta"}`` (save_checkpoint layout)."""
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"weights file {src} not found")
    suffix = src.suffix.lower()
    if suffix not in (".tflite", ".pth"):
        raise ConversionError(f"{src}: unknown weight format {suffix!r}; "
                              "expected .tflite (MediaPipe) or .pth (hollance)")
    if model_cfg is None:
        model_cfg = default_model_cfg(guess_variant(src))
    model_cfg = copy.deepcopy(dict(model_cfg))
    model_cfg.pop("init", None)  # a checkpoint does not point at weights
    fmt = "tflite" if suffix == ".tflite" else "hollance"
    state_dict = (convert_tflite if fmt == "tflite" else convert_hollance)(src, model_cfg)
    meta = {"source": src.name, "md5": file_md5(src), "format": fmt, "converter": "blazekit.convert"}
    return {"state_dict": state_dict, "model_cfg": model_cfg, "meta": meta}


def save_converted(src: PathLike, out: PathLike, model_cfg: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Convert ``src`` and ``torch.save`` the checkpoint to ``out`` (pruned weights packed losslessly, see
    :func:`blazekit.checkpoint.pack_sparse`); returns the checkpoint (dense)."""
    from ..checkpoint import pack_sparse

    ckpt = convert_checkpoint(src, model_cfg)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(pack_sparse(ckpt), out)
    return ckpt
