"""Moved to :mod:`blazekit.evaluation.evaluator` (evaluation knows no trainer; the trainer calls it). These names
stay importable from here for existing scripts: the same objects, not copies."""
from __future__ import annotations

from ..evaluation.evaluator import (BACKENDS, DEFAULT_EVAL, REFERENCE_SCORE, DatasetPredictions,  # noqa: F401
                                    Evaluator, Predict, _dataset_cfgs, eval_datasets, evaluate, format_table,
                                    resolve_backend, subset_ground_truth)

__all__ = ["BACKENDS", "DEFAULT_EVAL", "REFERENCE_SCORE", "DatasetPredictions", "Evaluator", "Predict",
           "eval_datasets", "evaluate", "format_table", "resolve_backend", "subset_ground_truth"]
