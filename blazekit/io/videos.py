"""Video files in: open one and iterate its frames as RGB (prediction writes annotated copies with OpenCV)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Tuple

import cv2
import numpy as np

from .images import PathLike, SourceError

VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif"})


@dataclass
class VideoInfo:
    fps: float
    width: int
    height: int
    num_frames: int  # as reported by the container; may be 0 or approximate


def open_video(path: PathLike) -> Tuple[cv2.VideoCapture, VideoInfo]:
    """Open a video with OpenCV; :class:`SourceError` when it cannot be opened or has no frame size."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SourceError(f"{path}: OpenCV could not open it as a video")
    info = VideoInfo(fps=float(cap.get(cv2.CAP_PROP_FPS)) or 25.0, width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     num_frames=max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))))
    if info.width <= 0 or info.height <= 0:
        cap.release()
        raise SourceError(f"{path}: video has no readable frames")
    return cap, info


def iter_video_frames(cap: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """RGB uint8 frames until the stream ends."""
    while True:
        ok, bgr = cap.read()
        if not ok or bgr is None:
            return
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
