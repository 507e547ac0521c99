"""Running a detector on what people have: image files, folders, globs and videos.

Three small pieces that tools and notebooks share:

- :func:`expand_sources` turns command-line style inputs into a list of :class:`Source` (and a list of the
  inputs that matched nothing, so a typo is reported instead of silently ignored);
- :func:`draw_detections` draws boxes, scores and keypoints on an RGB image (any detection dict with
  ``boxes`` and optionally ``scores`` / ``keypoints`` / ``labels``, ground truth included);
- :func:`predict_sources` runs ``detector.predict`` in batches over the sources with a progress bar and
  writes annotated images/videos and one JSON per image. A bad file is reported and skipped, never fatal.
"""
from __future__ import annotations

import glob
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .errors import UserError

PathLike = Union[str, os.PathLike]

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".pgm", ".ppm"})
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif"})

#: MediaPipe keypoint order (K=6); other K get numbered names
KEYPOINT_NAMES_6 = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")
#: one RGB colour per keypoint index (cycled for K > 6)
KEYPOINT_COLORS = ((255, 64, 64), (64, 160, 255), (255, 220, 0), (255, 64, 255), (0, 230, 230), (160, 255, 64))


class SourceError(UserError, ValueError):
    """An input that could not be read; the message names the file and the reason."""


@dataclass(frozen=True)
class Source:
    """One input file. ``kind`` is ``image`` or ``video`` (by extension; ``unknown`` is tried as both)."""

    path: Path
    kind: str


def _kind(path: Path) -> str:
    ext = path.suffix.lower()
    if ext in IMAGE_EXTS:
        return "image"
    if ext in VIDEO_EXTS:
        return "video"
    return "unknown"


def expand_sources(inputs: Iterable[PathLike], recursive: bool = False) -> Tuple[List[Source], List[Tuple[str, str]]]:
    """Files, folders (their images and videos, sorted) and globs -> ``(sources, unmatched)``.

    ``unmatched`` lists ``(input, reason)`` for inputs that exist nowhere or hold nothing usable, so
    the caller can report them and still process the rest. Explicit files with an unknown extension
    are kept (tried as image, then video); inside folders such files (``.txt``, ``.json``) are skipped.
    Duplicates are removed, order of first appearance is kept.
    """
    out: List[Source] = []
    seen = set()
    unmatched: List[Tuple[str, str]] = []

    def add(p: Path, explicit: bool) -> bool:
        kind = _kind(p)
        if kind == "unknown" and not explicit:
            return False
        key = str(p.resolve())
        if key not in seen:
            seen.add(key)
            out.append(Source(p, kind))
        return True

    def add_folder(d: Path) -> int:
        files = sorted(d.rglob("*") if recursive else d.iterdir())
        return sum(add(f, explicit=False) for f in files if f.is_file())

    for item in inputs:
        text = os.fspath(item)
        p = Path(text).expanduser()
        if p.is_file():
            add(p, explicit=True)
        elif p.is_dir():
            if add_folder(p) == 0:
                unmatched.append((text, f"folder holds no image ({', '.join(sorted(IMAGE_EXTS))}) or video file"))
        elif any(c in text for c in "*?["):
            hits = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            n = 0
            for h in hits:
                hp = Path(h)
                n += add(hp, explicit=False) if hp.is_file() else add_folder(hp) if hp.is_dir() else 0
            if n == 0:
                unmatched.append((text, "glob matched no image or video file"))
        else:
            unmatched.append((text, "no such file or folder"))
    return out, unmatched


def load_image(path: PathLike) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (EXIF orientation applied, gray/alpha made RGB).

    Raises :class:`SourceError` naming the file when it is missing, empty or not a decodable image.
    Reads bytes with numpy so non-ASCII paths work on every platform.
    """
    p = Path(path)
    try:
        data = np.fromfile(str(p), dtype=np.uint8)
    except OSError as exc:
        raise SourceError(f"{p}: cannot read file: {exc}") from exc
    if data.size == 0:
        raise SourceError(f"{p}: file is empty, expected an image")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise SourceError(f"{p}: not a decodable image (OpenCV could not read it; expected one of "
                          f"{', '.join(sorted(IMAGE_EXTS))})")
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


# ----------------------------------------------------------------------------------------------- drawing

def _np(x: Any) -> Optional[np.ndarray]:
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


#: drawing coordinates are clipped to +-2**15 px: far outside any image, and inside the int range OpenCV takes
#: (a finite blow-up such as boxes at 1e20 px from diverged weights would otherwise raise cv2.error)
_DRAW_LIMIT = float(2 ** 15)


def _px(v: Any) -> int:
    """A finite coordinate as an int pixel position OpenCV accepts, however far outside the image."""
    return int(round(min(max(float(v), -_DRAW_LIMIT), _DRAW_LIMIT)))


def draw_detections(image: np.ndarray, det: Mapping[str, Any], *, score_thr: float = 0.0,
                    color: Tuple[int, int, int] = (0, 255, 0), thickness: Optional[int] = None,
                    keypoint_colors: Optional[Sequence[Tuple[int, int, int]]] = KEYPOINT_COLORS,
                    draw_scores: bool = True, draw_keypoints: bool = True, copy: bool = True) -> np.ndarray:
    """Draw ``det`` (``boxes`` [N,4] xyxy px, optional ``scores`` [N], ``keypoints`` [N,K,2],
    ``keypoints_visible`` [N,K], ``labels`` [N] of str/int) on an HxWx3 uint8 RGB ``image``.

    Works for predictions and ground truth alike (pass another ``color`` and ``draw_scores=False`` to
    overlay both). Line width and font scale follow the image size so small and 4K images stay readable.
    Boxes below ``score_thr`` are skipped. Returns a new image unless ``copy=False``.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"draw_detections: expected an HxWx3 uint8 image, got shape {image.shape} "
                         f"dtype {image.dtype}")
    out = image.copy() if copy else image
    boxes = _np(det.get("boxes"))
    if boxes is None or boxes.size == 0:
        return out
    boxes = boxes.reshape(-1, 4)
    n = len(boxes)
    scores = _np(det.get("scores"))
    kpts = _np(det.get("keypoints"))
    vis = _np(det.get("keypoints_visible"))
    labels = det.get("labels")
    if scores is not None and len(scores) != n:
        raise ValueError(f"draw_detections: {n} boxes but {len(scores)} scores")
    if kpts is not None and len(kpts) != n:
        raise ValueError(f"draw_detections: {n} boxes but keypoints for {len(kpts)}")
    h, w = out.shape[:2]
    t = thickness or max(1, int(round(min(h, w) / 320)))
    font_scale = max(0.35, min(h, w) / 900)
    for i in range(n):
        if scores is not None and float(scores[i]) < score_thr:
            continue
        if not np.all(np.isfinite(boxes[i])):
            continue
        x1, y1, x2, y2 = (_px(v) for v in boxes[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), color, t, cv2.LINE_AA)
        text = []
        if labels is not None:
            text.append(str(labels[i]))
        if draw_scores and scores is not None:
            text.append(f"{float(scores[i]):.2f}")
        if text:
            msg = " ".join(text)
            (tw, th), base = cv2.getTextSize(msg, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(1, t // 2))
            ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + base + 2  # inside the box at the top edge
            cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 2, ty + base // 2), color, -1)
            cv2.putText(out, msg, (x1 + 1, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0),
                        max(1, t // 2), cv2.LINE_AA)
        if draw_keypoints and kpts is not None:
            radius = max(1, t + 1)
            for k, (kx, ky) in enumerate(kpts[i].reshape(-1, 2)):
                if (vis is not None and not bool(vis[i][k])) or not (np.isfinite(kx) and np.isfinite(ky)):
                    continue
                kc = keypoint_colors[k % len(keypoint_colors)] if keypoint_colors else color
                cv2.circle(out, (_px(kx), _px(ky)), radius, kc, -1, cv2.LINE_AA)
    return out


# ---------------------------------------------------------------------------------------------- results

def keypoint_names(k: int) -> List[str]:
    return list(KEYPOINT_NAMES_6) if k == 6 else [f"kp{i}" for i in range(k)]


def detections_to_json(det: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """One image's detections as plain JSON-able dicts: ``box`` [x1,y1,x2,y2] px, ``score``, ``keypoints``."""
    boxes = _np(det.get("boxes"))
    boxes = np.zeros((0, 4), np.float32) if boxes is None else boxes.reshape(-1, 4)
    scores = _np(det.get("scores"))
    kpts = _np(det.get("keypoints"))
    out = []
    for i in range(len(boxes)):
        d: Dict[str, Any] = {"box": [round(float(v), 2) for v in boxes[i]]}
        if scores is not None:
            d["score"] = round(float(scores[i]), 5)
        if kpts is not None:
            d["keypoints"] = [[round(float(x), 2), round(float(y), 2)] for x, y in kpts[i].reshape(-1, 2)]
        out.append(d)
    return out


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

    def read(src: Source) -> Tuple[Source, Optional[np.ndarray], Optional[str]]:
        try:
            return src, load_image(src.path), None
        except SourceError as exc:
            return src, None, str(exc)

    unknown_as_video: List[Source] = []
    with ThreadPoolExecutor(max(1, num_readers)) as pool:
        for chunk in _batched(images, batch_size):
            loaded = list(pool.map(read, chunk))
            ok = []
            for src, img, err in loaded:
                if img is not None:
                    ok.append((src, img))
                elif src.kind == "unknown":
                    unknown_as_video.append(Source(src.path, "video"))  # maybe a video with an odd extension
                else:
                    summary.failed.append((str(src.path), err or "unreadable"))
            if ok:
                dets = detector.predict([img for _, img in ok])
                for (src, img), det in zip(ok, dets):
                    stem = _unique_stem(src.path, used)
                    if save_images:
                        p = out / f"{stem}.jpg"
                        save_image(p, draw(img, det))
                        summary.outputs.append(p)
                    if save_json:
                        p = out / f"{stem}.json"
                        record = {"source": str(src.path), "width": int(img.shape[1]), "height": int(img.shape[0]),
                                  "keypoint_names": keypoint_names(_kpt_count(det)),
                                  "detections": detections_to_json(det)}
                        p.write_text(json.dumps(record, indent=1), encoding="utf-8")
                        summary.outputs.append(p)
                    summary.images += 1  # counted once written: an interrupted run reports what is on disk
                    summary.detections += len(_np(det["boxes"]).reshape(-1, 4))
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


def _kpt_count(det: Mapping[str, Any]) -> int:
    k = _np(det.get("keypoints"))
    return int(k.shape[1]) if k is not None and k.ndim == 3 else 0


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
                k = k or _kpt_count(det)
                summary.detections += len(_np(det["boxes"]).reshape(-1, 4))
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
        p.write_text(json.dumps({"source": str(src.path), "width": info.width, "height": info.height,
                                 "fps": info.fps, "keypoint_names": keypoint_names(k), "frames": frames_json}),
                     encoding="utf-8")
        summary.outputs.append(p)
