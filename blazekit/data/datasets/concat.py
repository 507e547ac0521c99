"""Several datasets as one, so a training config can mix WIDER, COCO and YOLO sources."""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Sequence

from torch.utils.data import ConcatDataset as _TorchConcat
from torch.utils.data import Dataset

from ...registry import DATASETS
from .base import DatasetSummary

logger = logging.getLogger("blazekit.data")


@DATASETS.register()
class ConcatDataset(_TorchConcat):
    """``datasets`` may be built datasets or config dicts (``{type: WiderFace, ...}``).

    ``transforms`` is handed to every part, so one pipeline (and one random stream) serves all sources;
    ``summary`` adds up the parts' summaries.
    """

    def __init__(self, datasets: Sequence[Any], transforms: Optional[Callable] = None) -> None:
        from ..build import build_dataset  # late import: it builds ConcatDataset for a list

        if not datasets:
            raise ValueError("ConcatDataset: 'datasets' is empty; give at least one dataset config")
        built = [d if isinstance(d, Dataset) else build_dataset(d, transforms=transforms, where=f"datasets[{i}]")
                 for i, d in enumerate(datasets)]
        if transforms is not None:
            for d in built:
                d.transforms = transforms
        super().__init__(built)
        self.transforms = transforms
        self.summary = DatasetSummary(name="ConcatDataset")
        for d in built:
            if hasattr(d, "summary"):
                self.summary.add(d.summary)
        self.summary.images = len(self)
        logger.info(str(self.summary))
