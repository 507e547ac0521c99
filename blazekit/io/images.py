"""Image files in and out: one reader for training, evaluation and prediction, one writer for every drawn image.

OpenCV's own ``imread``/``imwrite`` take the path as a narrow string (non-ASCII names fail on Windows) and decode
a truncated JPEG without complaint (the missing rows come out grey); :func:`read_image` does neither.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

from ..errors import UserError

PathLike = Union[str, os.PathLike]

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".pgm", ".ppm"})


class SourceError(UserError, ValueError):
    """An input that could not be read; the message names the file and the reason."""


def jpeg_problem(path: PathLike) -> Optional[str]:
    """Why a JPEG file is incomplete, or None (also for files that are not JPEG).

    OpenCV decodes a truncated JPEG without an error (the missing rows come out grey), so this is checked
    explicitly: a complete JPEG ends with the end-of-image marker FF D9, which cannot occur inside the
    compressed data (byte stuffing). Reading the last KiB makes this nearly free. A file with data appended
    after the marker (some cameras add a video or padding) is confirmed by decoding it at 1/8 scale with
    PIL, which reads every compressed byte and says how many were missing.
    """
    p = os.fspath(path)
    with open(p, "rb") as f:
        if f.read(2) != b"\xff\xd8":
            return None
        size = os.fstat(f.fileno()).st_size
        f.seek(max(2, size - 1024))
        if b"\xff\xd9" in f.read():
            return None
    from PIL import Image, ImageFile

    if ImageFile.LOAD_TRUNCATED_IMAGES:  # a global a user may have set: then PIL would not tell either
        return "no JPEG end-of-image marker (the file is cut off)"
    try:
        with Image.open(p) as im:
            im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
            im.load()
    except (OSError, SyntaxError, ValueError) as exc:
        return f"{exc} (the file is cut off or damaged)"
    return None


def read_image(path: PathLike) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB (EXIF orientation applied, gray expanded, alpha dropped).

    Raises :class:`SourceError` naming the file when it is missing, empty, a truncated JPEG or not a decodable
    image. The bytes are read with numpy, so non-ASCII paths work on every platform.
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise SourceError(f"image file not found: {p}")
    try:
        why = jpeg_problem(p)
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as exc:
        raise SourceError(f"cannot read image {p}: {exc.strerror or exc}") from exc
    if why is not None:
        raise SourceError(f"corrupt image {p}: {why}")
    if data.size == 0:
        raise SourceError(f"cannot decode image {p}: the file is empty")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise SourceError(f"cannot decode image {p}: the file is corrupt or not a decodable image format (OpenCV "
                          f"reads {', '.join(sorted(IMAGE_EXTS))})")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def save_image(path: PathLike, image_rgb: np.ndarray) -> None:
    """Write an RGB uint8 image; the format follows the extension (non-ASCII paths work)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ext = p.suffix or ".jpg"
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise SourceError(f"{p}: OpenCV cannot encode images as {ext!r}")
    buf.tofile(str(p))
