"""Evaluation: official WIDER FACE protocol, COCO AP via pycocotools, keypoint NME, PR-curve plots."""
from .coco import COCO_KEYS, CocoDetections, CocoImage, evaluate_coco  # noqa: F401
from .keypoints import NMEAccumulator, face_nme  # noqa: F401
from .plots import plot_pr_curves  # noqa: F401
from .wider import (SETTINGS, WiderFormatError, WiderGroundTruth, WiderResult, evaluate_wider,  # noqa: F401
                    evaluate_wider_dir, load_wider_gt, read_predictions, write_predictions)

__all__ = ["COCO_KEYS", "CocoDetections", "CocoImage", "evaluate_coco", "NMEAccumulator", "face_nme",
           "plot_pr_curves", "SETTINGS", "WiderFormatError", "WiderGroundTruth", "WiderResult", "evaluate_wider",
           "evaluate_wider_dir", "load_wider_gt", "read_predictions", "write_predictions"]
