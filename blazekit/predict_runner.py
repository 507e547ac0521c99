"""Running a detector over many inputs: batches of images and the frames of videos, with a progress bar, writing
annotated copies and one JSON per input. A bad file is reported and skipped, never fatal.

The app layer behind ``tools/predict.py``: reading is :mod:`blazekit.io`, drawing :mod:`blazekit.drawing`, the JSON
:mod:`blazekit.results`; this module only schedules them.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from .drawing import draw_detections
from .io.images import PathLike, SourceError, read_image, save_image
from .io.sources import Source
from .io.videos import iter_video_frames, open_video
from .results import detections_to_json, image_record, num_boxes, num_keypoints, video_record, write_json


@dataclass
class PredictSummary:
    """What :func:`predict_sources` did; ``failed`` lists ``(input, reason)`` of everything skipped."""

    images: int = 0
    videos: int = 0
    frames: int = 0
    detections: int = 0
    failed: List[Tuple[str, str]] = field(default_factory=list)
    outputs: List[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def _unique_stem(path: Path, used: set) -> str:
    """Output name for ``path``; a numeric suffix keeps ``a/x.jpg`` and ``b/x.jpg`` apart."""
    stem, i = path.stem, 1
    while stem in used:
        stem = f"{path.stem}_{i}"
        i += 1
    used.add(stem)
    return stem


def _batched(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _read(src: Source) -> Tuple[Source, Optional[np.ndarray], Optional[str]]:
    try:
        return src, read_image(src.path), None
    except SourceError as exc:
        return src, None, str(exc)


def predict_sources(detector: Any, sources: Sequence[Source], out_dir: PathLike, *, batch_size: int = 16,
                    save_images: bool = True, save_json: bool = True, progress: bool = True,
                    draw: Callable[..., np.ndarray] = draw_detections, num_readers: int = 2,
                    summary: Optional[PredictSummary] = None) -> PredictSummary:
    """Run ``detector.predict`` over ``sources`` and write results into ``out_dir``.

    Images: ``out_dir/<stem>.jpg`` (annotated, original size) and ``out_dir/<stem>.json``
    (``{"source", "width", "height", "keypoint_names", "detections": [{box, score, keypoints}]}``).
    Videos: ``out_dir/<stem>.mp4`` (annotated) and ``out_dir/<stem>.json`` with one entry per frame.
    Unreadable inputs are recorded in ``summary.failed`` and skipped. Images are decoded by a small
    thread pool while the previous batch runs (OpenCV releases the GIL). ``summary``: filled as results are
    written (pass one to know what was done when the run is interrupted); a new one by default.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summary if summary is not None else PredictSummary()
    used: set = set()
    images = [s for s in sources if s.kind != "video"]
    videos = [s for s in sources if s.kind == "video"]
    bar = tqdm(total=len(images), desc="images", unit="img", disable=not progress or not images)
    unknown_as_video: List[Source] = []
    with ThreadPoolExecutor(max(1, num_readers)) as pool:
        for chunk in _batched(images, batch_size):
            ok = []
            for src, img, err in pool.map(_read, chunk):
                if img is not None:
                    ok.append((src, img))
                elif src.kind == "unknown":
                    unknown_as_video.append(Source(src.path, "video"))  # maybe a video with an odd extension
                else:
                    summary.failed.append((str(src.path), err or "unreadable"))
            if ok:
                for (src, img), det in zip(ok, detector.predict([img for _, img in ok])):
                    _write_image_result(out, _unique_stem(src.path, used), src, img, det, save_images, save_json,
                                        draw, summary)
            bar.update(len(chunk))
    bar.close()
    for src in videos + unknown_as_video:
        try:
            _predict_video(detector, src, out, _unique_stem(src.path, used), batch_size, save_images, save_json,
                           progress, draw, summary)
        except SourceError as exc:
            reason = str(exc)
            if src.kind == "video" and src in unknown_as_video:
                reason = f"{src.path}: neither a readable image nor a video"
            summary.failed.append((str(src.path), reason))
    return summary


def _write_image_result(out: Path, stem: str, src: Source, img: np.ndarray, det: Mapping[str, Any],
                        save_images: bool, save_json: bool, draw: Callable[..., np.ndarray],
                        summary: PredictSummary) -> None:
    """``<stem>.jpg`` (annotated) and ``<stem>.json`` in ``out``; the image is counted once written, so an
    interrupted run reports what is on disk."""
    if save_images:
        p = out / f"{stem}.jpg"
        save_image(p, draw(img, det))
        summary.outputs.append(p)
    if save_json:
        p = out / f"{stem}.json"
        write_json(p, image_record(src.path, img, det), indent=1)
        summary.outputs.append(p)
    summary.images += 1
    summary.detections += num_boxes(det)


def _predict_video(detector: Any, src: Source, out: Path, stem: str, batch_size: int, save_images: bool,
                   save_json: bool, progress: bool, draw: Callable[..., np.ndarray], summary: PredictSummary) -> None:
    from tqdm import tqdm

    cap, info = open_video(src.path)
    writer = None
    frames_json: List[Dict[str, Any]] = []
    index = 0
    k = 0
    try:
        if save_images:
            vp = out / f"{stem}.mp4"
            writer = cv2.VideoWriter(str(vp), cv2.VideoWriter_fourcc(*"mp4v"), info.fps, (info.width, info.height))
            if not writer.isOpened():
                raise SourceError(f"{vp}: OpenCV cannot write an mp4 video here")
        bar = tqdm(total=info.num_frames or None, desc=src.path.name, unit="frame", disable=not progress)
        frames = iter_video_frames(cap)
        while True:
            batch = [f for _, f in zip(range(batch_size), frames)]
            if not batch:
                break
            for frame, det in zip(batch, detector.predict(batch)):
                k = k or num_keypoints(det)
                summary.detections += num_boxes(det)
                if writer is not None:
                    writer.write(cv2.cvtColor(draw(frame, det), cv2.COLOR_RGB2BGR))
                if save_json:
                    frames_json.append({"frame": index, "detections": detections_to_json(det)})
                index += 1
            bar.update(len(batch))
        bar.close()
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if index == 0:
        raise SourceError(f"{src.path}: video has no readable frames")
    summary.videos += 1
    summary.frames += index
    if writer is not None:
        summary.outputs.append(out / f"{stem}.mp4")
    if save_json:
        p = out / f"{stem}.json"
        write_json(p, video_record(src.path, info.width, info.height, info.fps, k, frames_json))
        summary.outputs.append(p)
