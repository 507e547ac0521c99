"""Pretrained weights shipped with blazekit, by name.

``build_detector(cfg, weights="mediapipe_short_range")`` resolves names here; any other value is
treated as a checkpoint path by the caller. See ``ATTRIBUTION.md`` for sources and licences.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Union

from ..registry import close_matches

_HERE = Path(__file__).resolve().parent

#: name -> checkpoint file (``{"state_dict", "model_cfg", "meta"}``)
NAMED_WEIGHTS: Dict[str, Path] = {
    # MediaPipe face_detection_short_range.tflite (mediapipe 0.10.21), front model, 128x128
    "mediapipe_short_range": _HERE / "mediapipe_short_range.pt",
    # MediaPipe face_detection_full_range_sparse.tflite (mediapipe 0.10.21), full range, 192x192
    # (configs/blazeface_full_range.yml; its parts live in blazekit.models.full_range)
    "mediapipe_full_range": _HERE / "mediapipe_full_range.pt",
}


#: MediaPipe's own model files (mediapipe 0.10.21 wheel, untouched), by input (H, W): the templates that
#: ``blazekit.deploy.tflite`` writes fine-tuned weights into, and the name of the weights imported from each.
TFLITE_TEMPLATES: Dict[tuple, Dict[str, Union[str, Path]]] = {
    (128, 128): {"path": _HERE / "face_detection_short_range.tflite", "weights": "mediapipe_short_range",
                 "variant": "front"},
    (192, 192): {"path": _HERE / "face_detection_full_range_sparse.tflite", "weights": "mediapipe_full_range",
                 "variant": "full_range"},
}


def resolve_weights(name_or_path: Union[str, os.PathLike]) -> Path:
    """A name in :data:`NAMED_WEIGHTS` or an existing file path -> the checkpoint file."""
    key = os.fspath(name_or_path)
    if key in NAMED_WEIGHTS:
        path = NAMED_WEIGHTS[key]
        if not path.is_file():
            raise FileNotFoundError(f"named weights {key!r}: file {path} is missing from this installation "
                                    "(reinstall blazekit, or regenerate it with tools/convert.py, see ATTRIBUTION.md)")
        return path
    path = Path(key).expanduser()
    if path.is_file():
        return path
    hint = close_matches(key, NAMED_WEIGHTS)
    msg = f"weights {key!r}: not a named weight and no such file."
    if hint:
        msg += f" Did you mean {', '.join(repr(h) for h in hint)}?"
    msg += f" Named weights: {', '.join(sorted(NAMED_WEIGHTS))}."
    raise FileNotFoundError(msg)


__all__ = ["NAMED_WEIGHTS", "TFLITE_TEMPLATES", "resolve_weights"]
