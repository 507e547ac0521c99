"""``build_dataset``: a dataset config (or a list of them) -> the dataset, through the ``DATASETS`` registry.

Its own module, below the datasets that build their children with it (``ConcatDataset``, ``Mosaic``) and the
loader, so none of them imports the ``blazekit.data`` package that imports them (no import circle).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

from ..config import expand_env
from ..registry import DATASETS, BuildError, build


def build_dataset(cfg: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]], transforms: Optional[Callable] = None,
                  where: str = "data.dataset") -> Any:
    """``{type: WiderFace, ...}`` -> dataset; a list of configs -> :class:`ConcatDataset` of them.

    ``${VAR}`` / ``${VAR:-default}`` in paths are expanded here (:func:`blazekit.config.expand_env`), so every
    caller (trainer, evaluator, browse tool, a user's script) resolves ``${BLAZEKIT_SHARED}`` the same way.
    """
    cfg = expand_env(cfg)
    if isinstance(cfg, (list, tuple)):  # looked up, not imported: ConcatDataset builds its parts with this function
        return DATASETS.get("ConcatDataset")(datasets=list(cfg), transforms=transforms)
    if not isinstance(cfg, Mapping):
        raise BuildError(f"{where}: expected a dataset config mapping (or a list of them), got {cfg!r}")
    return build(DATASETS, cfg, where=where, transforms=transforms)
