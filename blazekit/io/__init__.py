"""Reading and writing what people have: image and video files, and finding them in folders and globs.

The bottom of the app: datasets (training, evaluation) and prediction read images through the same
:func:`read_image`, so both get its guarantees (non-ASCII paths, a truncated file refused).
"""
from .images import IMAGE_EXTS, SourceError, jpeg_problem, read_image, save_image
from .sources import Source, expand_sources
from .videos import VIDEO_EXTS, VideoInfo, iter_video_frames, open_video

__all__ = ["IMAGE_EXTS", "VIDEO_EXTS", "SourceError", "Source", "VideoInfo", "expand_sources", "iter_video_frames",
           "jpeg_problem", "open_video", "read_image", "save_image"]
