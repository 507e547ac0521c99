"""The opening the tools share, written once: flags checked while parsing, the config loaded with ``--set`` /
``--import``, the weights to run resolved and the detector built with them.

Light at import (no torch): the tools import it at the top, and ``--help`` stays instant. The heavy imports
happen inside the functions, once the arguments are known to be valid.
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from ..deploy.backends import backend_problem
from ..engine.cli import device_problem


def check_run_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--device`` (a name that is no device) and ``--backend`` (onnxruntime off the CPU, or not installed) as
    parse errors, the same line from every tool. A tool without ``--backend`` passes only ``--device``."""
    for why in (device_problem(args.device), backend_problem(getattr(args, "backend", None), args.device)):
        if why:
            parser.error(why)


def load_config(args: argparse.Namespace, require: Sequence[str] = ()) -> Dict[str, Any]:
    """``args.config`` with ``args.overrides`` (``--set``) and ``args.imports`` (``--import``) applied and validated;
    ``require``: top-level sections that must be there."""
    from .. import config

    return config.load(args.config, overrides=args.overrides, imports=args.imports, require=require)


def load_run(args: argparse.Namespace) -> Tuple[Dict[str, Any], Union[str, os.PathLike]]:
    """The config (with a ``model`` section) and the weights to run: ``--weights``, else ``model.init``; neither is
    a :class:`~blazekit.config.ConfigError` (an untrained detector finds no faces)."""
    from ..models.build import inference_weights

    cfg = load_config(args, require=("model",))
    return cfg, inference_weights(cfg, args.weights)


def load_detector(cfg: Dict[str, Any], weights: Union[str, os.PathLike], device: str = "cpu",
                  input_size: Optional[Sequence[int]] = None) -> Any:
    """``cfg``'s detector with ``weights`` loaded, on ``device``, in eval mode; ``input_size`` (``--input-size``)
    is checked against it (a multiple of its stride)."""
    from ..models.build import build_detector

    detector = build_detector(cfg["model"], weights=weights, device=device).eval()
    if input_size:
        detector.check_input_size(tuple(input_size), where="--input-size")
    return detector
