"""Detector models. Importing the package registers the built-in parts and ``DETECTORS['BlazeFace']``."""
from .detector import BlazeFace
from .build import build_detector, load_weights

__all__ = ["BlazeFace", "build_detector", "load_weights"]
