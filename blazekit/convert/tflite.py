"""MediaPipe's BlazeFace ``.tflite`` flatbuffers as a :class:`~.source.SourceModel`.

The convs in graph order, fp16 weights dequantized and sparse (DENSIFY) weights expanded to float32; each conv
also records the tensors storing its weight and bias, which the ``.tflite`` export
(:mod:`blazekit.deploy.tflite`) writes back into. A conv whose output reaches a graph output through head ops
only is a head conv; every other conv belongs to the body (backbone, then neck).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from .source import ConversionError, PathLike, SourceConv, SourceModel, group_head

#: ops between a head conv and a graph output (MediaPipe full range: pad + depthwise conv + depth-to-space)
_HEAD_OPS = ("RESHAPE", "CONCATENATION", "SQUEEZE", "PAD", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE")
#: ops that only convert a stored constant (fp16 -> fp32, sparse -> dense) on its way to a conv
_STORAGE_OPS = ("DEQUANTIZE", "DENSIFY")


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


class _Graph:
    """The first subgraph of one ``.tflite`` with the look-ups the reader needs: each op's kind, the op producing
    and the ops consuming each tensor, and constant tensors as arrays."""

    def __init__(self, model: Any, path: Union[Path, str]) -> None:
        import tflite

        self.model, self.path = model, path
        self.graph = model.Subgraphs(0)
        self.ops = [self.graph.Operators(i) for i in range(self.graph.OperatorsLength())]
        self.kinds = [_op_name(model, op) for op in self.ops]
        self.producer: Dict[int, int] = {}
        self.consumers: Dict[int, List[int]] = {}
        for k, op in enumerate(self.ops):
            for t in op.OutputsAsNumpy():
                self.producer[int(t)] = k
            for t in op.InputsAsNumpy():
                self.consumers.setdefault(int(t), []).append(k)
        self.outputs = [int(t) for t in self.graph.OutputsAsNumpy()]
        self.type_names = {v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}

    def tname(self, i: int) -> str:
        return self.graph.Tensors(i).Name().decode()

    def inputs(self, op: Any) -> List[int]:
        return [int(t) for t in op.InputsAsNumpy()]

    def stored(self, i: int) -> int:
        """The tensor holding the data: DEQUANTIZE / DENSIFY outputs lead back to their (sparse) fp16 input."""
        while i in self.producer and self.kinds[self.producer[i]] in _STORAGE_OPS:
            i = int(self.ops[self.producer[i]].InputsAsNumpy()[0])
        return i

    def const(self, i: int) -> np.ndarray:
        """A constant tensor as float32 (fp16 weights are dequantized, sparse ones expanded)."""
        i = self.stored(i)
        t = self.graph.Tensors(i)
        raw = self.model.Buffers(t.Buffer()).DataAsNumpy()
        ttype = self.type_names.get(t.Type(), str(t.Type()))
        if isinstance(raw, int) or raw is None or len(raw) == 0:
            raise ConversionError(f"{self.path}: tensor {self.tname(i)!r} has no constant data (is it a weight?)")
        dtypes = {"FLOAT16": np.float16, "FLOAT32": np.float32}
        if ttype not in dtypes:
            raise ConversionError(f"{self.path}: tensor {self.tname(i)!r} has type {ttype}; only float16/float32 "
                                  "weights are supported (int8-quantized or sparse models are not)")
        shape = tuple(int(s) for s in t.ShapeAsNumpy())
        values = np.frombuffer(raw.tobytes(), dtype=dtypes[ttype]).astype(np.float32)
        if t.Sparsity() is not None:
            return _densify(t.Sparsity(), values, shape, f"{self.path}: tensor {self.tname(i)!r}")
        return values.reshape(shape)

    def const_int(self, i: int) -> np.ndarray:
        t = self.graph.Tensors(i)
        return np.frombuffer(self.model.Buffers(t.Buffer()).DataAsNumpy().tobytes(), dtype=np.int32)

    def reaches_output(self, tensor: int) -> Optional[int]:
        """Graph output reached through head ops (reshape/concat, or full range's pad/depthwise/depth-to-space;
        never an ADD or activation of the body), else None."""
        seen, todo = set(), [tensor]
        while todo:
            t = todo.pop()
            if t in self.outputs:
                return t
            for k in self.consumers.get(t, []):
                if self.kinds[k] in _HEAD_OPS and k not in seen:
                    seen.add(k)
                    todo.extend(int(o) for o in self.ops[k].OutputsAsNumpy())
        return None

    def explicit_pads(self, tensor: int) -> Optional[Tuple[int, int, int, int]]:
        """(left, right, top, bottom) when ``tensor`` comes from a spatial zero PAD op, else None."""
        if tensor not in self.producer or self.kinds[self.producer[tensor]] != "PAD":
            return None
        pad_op = self.ops[self.producer[tensor]]
        amounts = self.const_int(int(pad_op.InputsAsNumpy()[1])).reshape(-1, 2)
        if amounts.shape[0] != 4 or amounts[0].any() or amounts[3].any():
            raise ConversionError(f"{self.path}: PAD {self.tname(tensor)!r} pads batch or channels "
                                  f"({amounts.tolist()}) right before a conv")
        return int(amounts[2, 0]), int(amounts[2, 1]), int(amounts[1, 0]), int(amounts[1, 1])

    def feature_op(self, tensor: int) -> int:
        """The op producing the feature a head conv reads (through a PAD in front of it); -1 for a graph input."""
        k = self.producer.get(tensor, -1)
        if k >= 0 and self.kinds[k] == "PAD":
            k = self.producer.get(int(self.ops[k].InputsAsNumpy()[0]), -1)
        return k

    def input_hw(self) -> Optional[Tuple[int, int]]:
        shape = self.graph.Tensors(int(self.graph.InputsAsNumpy()[0])).ShapeAsNumpy()
        return (int(shape[1]), int(shape[2])) if len(shape) == 4 else None


def _open_graph(path: Union[PathLike, bytes], name: Optional[str]) -> _Graph:
    """Parse the flatbuffer; refuse, naming the file, what is not a TFLite model with operators."""
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
    return _Graph(model, path)


def _conv_options(g: _Graph, op: Any, kind: str, weight_name: str) -> Any:
    """The conv's builtin options (strides, padding); refuses depth multipliers and strides BlazeFace never uses."""
    import tflite

    table = op.BuiltinOptions()
    opts = tflite.Conv2DOptions() if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions()
    opts.Init(table.Bytes, table.Pos)
    if kind != "CONV_2D" and opts.DepthMultiplier() not in (0, 1):
        raise ConversionError(f"{g.path}: depthwise conv {weight_name!r} has depth multiplier "
                              f"{opts.DepthMultiplier()}; BlazeBlocks use 1")
    if opts.StrideH() != opts.StrideW():
        raise ConversionError(f"{g.path}: conv {weight_name!r} has unequal strides "
                              f"{opts.StrideH()}x{opts.StrideW()}")
    return opts


def _read_conv(g: _Graph, op: Any, kind: str) -> SourceConv:
    """One CONV_2D / DEPTHWISE_CONV_2D op as a :class:`SourceConv` in PyTorch layout."""
    import tflite

    ins = g.inputs(op)
    if len(ins) < 3 or ins[2] < 0:
        raise ConversionError(f"{g.path}: {kind} {g.tname(int(op.OutputsAsNumpy()[0]))!r} has no bias input")
    w, b = g.const(ins[1]), g.const(ins[2])
    name = g.tname(g.stored(ins[1]))
    opts = _conv_options(g, op, kind, name)
    w = w.transpose(0, 3, 1, 2) if kind == "CONV_2D" else w.transpose(3, 0, 1, 2)  # OHWI -> OIHW; 1HWO -> O1HW
    padding = "SAME" if opts.Padding() == tflite.Padding.SAME else "VALID"
    return SourceConv(name, np.ascontiguousarray(w), b, int(opts.StrideH()), kind == "DEPTHWISE_CONV_2D", padding,
                      g.explicit_pads(ins[0]) if padding == "VALID" else None,
                      weight_tensor=g.stored(ins[1]), bias_tensor=g.stored(ins[2]))


def read_tflite(path: Union[PathLike, bytes], name: Optional[str] = None) -> SourceModel:
    """Parse a BlazeFace ``.tflite`` flatbuffer (a file, or its bytes named ``name``) into convs (fp16 weights
    dequantized to float32; each conv also records the tensors storing its weight and bias)."""
    g = _open_graph(path, name)
    backbone: List[SourceConv] = []
    head_raw: List[Tuple[int, str, SourceConv]] = []  # (producer of input, cls/reg[_post], conv)
    head_level: Dict[int, int] = {}  # head conv op -> the level key of its chain
    for k, (op, kind) in enumerate(zip(g.ops, g.kinds)):
        if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            if kind in ("FULLY_CONNECTED", "TRANSPOSE_CONV"):
                raise ConversionError(f"{g.path}: op {k} {kind} is not part of a BlazeFace SSD graph")
            continue
        conv = _read_conv(g, op, kind)
        out_t = g.reaches_output(int(op.OutputsAsNumpy()[0]))
        if out_t is None:
            backbone.append(conv)
            continue
        role = "cls" if int(g.graph.Tensors(out_t).ShapeAsNumpy()[-1]) == 1 else "reg"
        feature = g.feature_op(g.inputs(op)[0])
        if feature in head_level:  # refines another head conv's output
            head_level[k] = head_level[feature]
            head_raw.append((head_level[k], role + "_post", conv))
        else:
            head_level[k] = feature
            head_raw.append((feature, role, conv))
    return SourceModel(backbone, group_head(head_raw, str(g.path)), g.input_hw())
