"""Kept so that ``from blazekit.inference import load_image, draw_detections, save_image`` (README, notebooks)
goes on working. The pieces now live by what they are:

- :mod:`blazekit.io` (``images``, ``videos``, ``sources``): reading and writing image/video files, ``IMAGE_EXTS``,
  ``VIDEO_EXTS``, and :func:`expand_sources` for files, folders and globs;
- :mod:`blazekit.drawing`: :func:`draw_detections`, for predictions and ground truth alike;
- :mod:`blazekit.results`: a detection dict as JSON;
- :mod:`blazekit.predict_runner`: :func:`predict_sources`, the batch runner behind ``tools/predict.py``.
"""
from __future__ import annotations

from .drawing import KEYPOINT_COLORS, draw_detections
from .io.images import IMAGE_EXTS, PathLike, SourceError, read_image, save_image
from .io.sources import Source, expand_sources
from .io.videos import VIDEO_EXTS, VideoInfo, iter_video_frames, open_video
from .predict_runner import PredictSummary, predict_sources
from .results import KEYPOINT_NAMES_6, detections_to_json, keypoint_names

#: the name the README and earlier releases use for :func:`blazekit.io.images.read_image`
load_image = read_image

__all__ = ["IMAGE_EXTS", "KEYPOINT_COLORS", "KEYPOINT_NAMES_6", "PathLike", "PredictSummary", "Source", "SourceError",
           "VIDEO_EXTS", "VideoInfo", "detections_to_json", "draw_detections", "expand_sources", "iter_video_frames",
           "keypoint_names", "load_image", "open_video", "predict_sources", "read_image", "save_image"]
