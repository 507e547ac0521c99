"""Import pretrained BlazeFace weights: MediaPipe ``.tflite`` and hollance ``.pth``, one module per source.

- ``source``: what a reader produces (:class:`SourceConv`, :class:`SourceModel`) and :class:`ConversionError`;
- ``tflite``: :func:`read_tflite` (MediaPipe flatbuffers, fp16 and sparse weights) and :func:`sparse_coords`;
- ``hollance``: :func:`read_hollance` (hollance's ``.pth`` state dicts);
- ``mapping``: :func:`pair_convs`, the one source <-> detector mapping of the import and the ``.tflite`` export,
  and :func:`map_to_state_dict`;
- ``checkpoints``: a weight file -> a blazekit checkpoint (:func:`convert_checkpoint`, :func:`save_converted`).

``source <- tflite, hollance, mapping <- checkpoints``. Every name is importable from ``blazekit.convert``.
"""
from __future__ import annotations

from .checkpoints import (convert_checkpoint, convert_hollance, convert_tflite, default_model_cfg, file_md5,
                          guess_variant, save_converted)
from .hollance import load_state_dict, read_hollance
from .mapping import ConvPair, build_target, map_to_state_dict, pair_convs
from .source import ConversionError, PathLike, SourceConv, SourceModel, group_head
from .tflite import _op_name, read_tflite, sparse_coords  # noqa: F401  (_op_name: tests count DENSIFY ops with it)

__all__ = ["ConversionError", "ConvPair", "PathLike", "SourceConv", "SourceModel", "build_target",
           "convert_checkpoint", "convert_hollance", "convert_tflite", "default_model_cfg", "file_md5",
           "group_head", "guess_variant", "load_state_dict", "map_to_state_dict", "pair_convs", "read_hollance",
           "read_tflite", "save_converted", "sparse_coords"]
