"""hollance's BlazeFace ``.pth`` state dicts (``blazeface.pth`` front, ``blazefaceback.pth`` back) as a
:class:`~.source.SourceModel`: the convs in state-dict order (hollance stores no strides or padding)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Mapping, Tuple

import torch

from .source import ConversionError, PathLike, SourceConv, SourceModel, group_head


def load_state_dict(path: Path) -> Mapping[str, Any]:
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
    sd = load_state_dict(path)
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
    return SourceModel(backbone, group_head(head_raw, str(path)))
