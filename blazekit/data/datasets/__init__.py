"""Built-in datasets; importing this package registers them in ``DATASETS``."""
from .base import DataError, DatasetSummary, FaceDataset, FaceRecord, data_fingerprint, image_size, read_image
from .coco import CocoFaces
from .concat import ConcatDataset
from .folder import ImageFolder
from .widerface import WiderFace, retinaface_to_blazeface
from .yolo import YoloFaces

__all__ = ["DataError", "DatasetSummary", "FaceDataset", "FaceRecord", "data_fingerprint", "image_size", "read_image",
           "CocoFaces", "ConcatDataset", "ImageFolder", "WiderFace", "YoloFaces", "retinaface_to_blazeface"]
