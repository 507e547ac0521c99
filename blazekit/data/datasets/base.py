"""What every face dataset shares: one record type, one validation policy, one summary, one image loader.

Formats only differ in how they *parse* annotations; everything after that (clipping, dropping empty or
inverted boxes, flagging small faces, counting what happened, reading the image) lives here so that a
WIDER, COCO, YOLO or user dataset behaves the same way and nothing silently disappears.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from torch.utils.data import Dataset

from ...errors import UserError
from ...io import images as image_io
from ...io.images import SourceError, jpeg_problem

logger = logging.getLogger("blazekit.data")

PathLike = Union[str, os.PathLike]
BAD_SAMPLE_POLICIES = ("raise", "skip")


class DataError(UserError, ValueError):
    """A dataset file, line or field that cannot be used; the message names the file and the place."""


@dataclass
class FaceRecord:
    """One image's annotations as a format parser produces them (pixels, xyxy, before validation).

    Only ``path`` is required; a record without ``boxes`` is an image without faces.
    ``size`` is (h, w) when the annotation file knows it; otherwise it is read from the image header.
    """

    path: PathLike
    boxes: Any = None  # [N, 4] xyxy pixels
    labels: Any = None  # [N] int
    keypoints: Any = None  # [N, K, 2] pixels
    keypoints_visible: Any = None  # [N, K] bool
    ignore: Any = None  # [N] bool
    extras: Dict[str, Any] = field(default_factory=dict)  # per-face arrays [N, ...]
    image_id: Any = None
    size: Optional[Tuple[int, int]] = None


@dataclass
class DatasetSummary:
    """Counts of what validation did to a dataset: ``str()`` is one log line, :meth:`report` the readable block
    the trainer writes to the console and train.log before training."""

    name: str = ""
    images: int = 0
    faces: int = 0
    ignored: int = 0
    clipped: int = 0
    dropped_zero_area: int = 0  # zero width/height after clipping: degenerate, or entirely outside the image
    dropped_inverted: int = 0
    images_all_dropped: int = 0  # annotated faces, none usable: the image serves as one without faces
    skipped_images: int = 0
    skipped_annotations: int = 0
    problems: List[str] = field(default_factory=list)  # first few skip reasons, for the log
    skipped_files: List[str] = field(default_factory=list)  # every image left out as unreadable/corrupt
    all_dropped_files: List[str] = field(default_factory=list)  # every image whose faces were all dropped

    def add(self, other: "DatasetSummary") -> None:
        """Add another dataset's counts (ConcatDataset's total); keeps the first few problems."""
        for f in fields(self):
            if isinstance(getattr(self, f.name), int):
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        self.problems.extend(other.problems[: max(0, 5 - len(self.problems))])
        self.skipped_files.extend(other.skipped_files)
        self.all_dropped_files.extend(other.all_dropped_files)

    def __str__(self) -> str:
        s = (f"{self.name}: {self.images} images, {self.faces} faces ({self.ignored} ignored); "
             f"clipped {self.clipped}, dropped {self.dropped_zero_area} zero-area and {self.dropped_inverted} inverted "
             f"boxes; skipped {self.skipped_images} images and {self.skipped_annotations} bad annotations")
        if self.images_all_dropped:
            s += f"; {self.images_all_dropped} images with every face dropped"
        if self.problems:
            s += "; e.g. " + " | ".join(self.problems[:3])
        return s

    def report(self, max_files: int = 10) -> str:
        """Several lines: what is used, what was changed and what was left out, with the file names."""
        def names(files: List[str]) -> str:
            more = f" (+{len(files) - max_files} more)" if len(files) > max_files else ""
            return ", ".join(files[:max_files]) + more

        lines = [f"dataset {self.name}: {self.images} images, {self.faces} faces ({self.ignored} ignored as small "
                 f"or invalid)",
                 f"  boxes clipped to the image: {self.clipped}",
                 f"  boxes dropped: {self.dropped_zero_area} zero-area or outside the image, "
                 f"{self.dropped_inverted} inverted (x2 < x1 or y2 < y1)"]
        if self.images_all_dropped:
            lines.append(f"  WARNING images with every face dropped (used as images without faces): "
                         f"{self.images_all_dropped}: "
                         f"{names(self.all_dropped_files)}")
        if self.skipped_images:
            lines.append(f"  WARNING images skipped as missing/corrupt (on_bad_sample: skip): {self.skipped_images}"
                         + (f": {names(self.skipped_files)}" if self.skipped_files else ""))
        if self.skipped_annotations:
            lines.append(f"  WARNING malformed annotations skipped: {self.skipped_annotations}")
        if self.problems:
            lines.append("  first problems: " + " | ".join(self.problems[:3]))
        return "\n".join(lines)


def select_labels(names: Dict[Any, str], wanted: Optional[Sequence[Any]], label_map: Optional[Dict[Any, int]],
                  fail: Callable[[str, str], Exception]) -> Dict[Any, int]:
    """Source class id -> training label, the one rule for every format.

    ``wanted`` (ids or names) filters the classes; ``label_map`` (keyed by id or name) remaps them, otherwise
    the kept classes are numbered 0..n-1 in id order. ``fail(field, message)`` makes the error that names the file.
    """
    keep = sorted(names)
    if wanted is not None:
        unknown = [w for w in set(wanted) if w not in names and w not in names.values()]
        if unknown:
            raise fail("categories", f"{unknown} not found; the file has {[f'{i}: {n}' for i, n in names.items()]}")
        keep = [i for i in keep if i in wanted or names[i] in wanted]
    if label_map is None:
        return {cid: label for label, cid in enumerate(keep)}
    out = {}
    for cid in keep:
        key = cid if cid in label_map else names[cid]
        if key not in label_map:
            raise fail("label_map", f"class {names[cid]!r} (id {cid}) is kept but has no label; "
                                    "add it to label_map or filter it out")
        out[cid] = int(label_map[key])
    return out


def read_image(path: PathLike) -> np.ndarray:
    """:func:`blazekit.io.images.read_image` (HxWx3 uint8 RGB; truncated JPEGs refused, non-ASCII paths read), its
    refusal raised as the :class:`DataError` dataset code and ``on_bad_sample`` handle."""
    try:
        return image_io.read_image(path)
    except SourceError as exc:
        raise DataError(str(exc)) from exc


def image_size(path: PathLike) -> Tuple[int, int]:
    """(h, w) from the file header without decoding the pixels (fast init on big datasets)."""
    from PIL import Image, UnidentifiedImageError

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise DataError(f"image file not found: {p}")
    try:
        with Image.open(p) as im:
            w, h = im.size
            try:
                orientation = im.getexif().get(274, 1)
            except Exception:  # broken EXIF block: OpenCV ignores it too
                orientation = 1
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image header of {p}: {exc}") from exc
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _as_array(value: Any, dtype: Any, shape_tail: Tuple[int, ...], n: Optional[int], what: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: {what} is not numeric: {exc}") from exc
    if arr.size == 0 and n in (None, 0):
        return arr.reshape((0,) + shape_tail)
    if arr.ndim != 1 + len(shape_tail) or arr.shape[1:] != shape_tail or (n is not None and arr.shape[0] != n):
        want = f"[{n if n is not None else 'N'}{''.join(', ' + str(s) for s in shape_tail)}]"
        raise DataError(f"{where}: {what} must have shape {want}, got {list(arr.shape)}")
    return arr


class FaceDataset(Dataset):
    """Base class: subclasses implement :meth:`load_records`; this class validates and serves samples.

    Args:
        transforms: callable ``sample -> sample`` (see :mod:`blazekit.data.transforms`), or None for raw samples.
        num_keypoints: K of every sample; formats without keypoints give K invisible points.
        on_bad_sample: ``raise`` (default) stops at the first missing/corrupt image or malformed annotation
            with a message naming the file and line/field; ``skip`` leaves it out and counts it in the summary.
        min_size: faces whose shorter side is below this many pixels are kept but flagged ``ignore``.
    """

    def __init__(self, transforms: Optional[Callable] = None, num_keypoints: int = 6,
                 on_bad_sample: str = "raise", min_size: float = 0) -> None:
        if on_bad_sample not in BAD_SAMPLE_POLICIES:
            raise DataError(f"{type(self).__name__}: on_bad_sample must be one of {BAD_SAMPLE_POLICIES}, "
                            f"got {on_bad_sample!r}")
        self.transforms = transforms
        self.num_keypoints = int(num_keypoints)
        self.on_bad_sample = on_bad_sample
        self.min_size = float(min_size)
        self.summary = DatasetSummary(name=self.describe())
        self.records: List[Dict[str, Any]] = []
        first_of: Dict[Any, str] = {}  # image id -> path: evaluation keys everything by image id
        for rec in self.load_records():
            try:
                out = self._validate(rec)
                twin = first_of.get(out["image_id"])
                if twin is not None:
                    raise DataError(f"{self.describe()}: image id {out['image_id']!r} is listed twice ({twin} and "
                                    f"{out['path']}); every image needs its own id")
            except DataError as exc:
                self.bad_sample(exc, kind="image", path=rec.path)
                continue
            first_of[out["image_id"]] = out["path"]
            self.records.append(out)
        self.summary.images = len(self.records)
        logger.info(str(self.summary))
        if self.summary.skipped_files:
            logger.warning("%s: skipped %d missing/corrupt images (on_bad_sample: skip): %s", self.describe(),
                           len(self.summary.skipped_files), ", ".join(self.summary.skipped_files[:3]))
        if self.summary.images_all_dropped:
            logger.warning("%s: %d images have annotated faces but every box was dropped (zero-area, outside the "
                           "image or inverted); they train as images without faces: %s", self.describe(),
                           self.summary.images_all_dropped, ", ".join(self.summary.all_dropped_files[:3]))
        if not self.records:
            why = (f"all {self.summary.skipped_images} were skipped as unreadable ({'; '.join(self.summary.problems[:2])})"
                   if self.summary.skipped_images else "the annotations list no images (empty file or filter?)")
            raise DataError(f"{self.describe()}: no usable images: {why}")

    # -- for subclasses -------------------------------------------------------------------------------------
    def load_records(self) -> Sequence[FaceRecord]:
        """Parse the annotation files once and return one :class:`FaceRecord` per image."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_records()")

    def describe(self) -> str:
        """Short name used in the summary and in errors."""
        return type(self).__name__

    def bad_sample(self, exc: Exception, kind: str = "annotation", path: Optional[PathLike] = None) -> None:
        """Raise ``exc`` or, with ``on_bad_sample: skip``, count it (parsers call this for malformed lines)."""
        if self.on_bad_sample == "raise":
            raise exc
        if kind == "image":
            self.summary.skipped_images += 1
            if path is not None:
                self.summary.skipped_files.append(os.fspath(path))
        else:
            self.summary.skipped_annotations += 1
        if len(self.summary.problems) < 5:
            self.summary.problems.append(str(exc))

    # -- validation -----------------------------------------------------------------------------------------
    def _validate(self, rec: FaceRecord) -> Dict[str, Any]:
        path = os.fspath(rec.path)
        where = f"{self.describe()} image {path}"
        h, w = rec.size if rec.size is not None else image_size(path)
        if rec.size is not None and not os.path.isfile(path):
            raise DataError(f"image file not found: {path} (listed by {self.describe()})")
        why = jpeg_problem(path)
        if why is not None:
            raise DataError(f"corrupt image {path} (listed by {self.describe()}): {why}")
        if not cv2.haveImageReader(path):  # reads the signature only: a text file named .jpg is caught here, not later
            raise DataError(f"cannot decode image {path} (listed by {self.describe()}): not an image format OpenCV "
                            "reads")
        K = self.num_keypoints
        boxes = _as_array([] if rec.boxes is None else rec.boxes, np.float32, (4,), None, "boxes", where)
        n = len(boxes)
        labels = _as_array(np.zeros(n) if rec.labels is None else rec.labels, np.int64, (), n, "labels", where)
        if rec.keypoints is None:
            kpts = np.zeros((n, K, 2), np.float32)
            vis = np.zeros((n, K), bool)
        else:
            kpts = _as_array(rec.keypoints, np.float32, (K, 2), n, "keypoints", where)
            vis = (np.ones((n, K), bool) if rec.keypoints_visible is None
                   else _as_array(rec.keypoints_visible, bool, (K,), n, "keypoints_visible", where))
        ignore = np.zeros(n, bool) if rec.ignore is None else _as_array(rec.ignore, bool, (), n, "ignore", where)
        extras = {}
        for k, v in (rec.extras or {}).items():
            arr = np.asarray(v)
            if arr.shape[:1] != (n,):
                raise DataError(f"{where}: extras[{k!r}] must have one entry per face ({n}), got shape {list(arr.shape)}")
            extras[k] = arr

        inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        clipped = boxes.copy()
        np.clip(clipped[:, 0::2], 0, w, out=clipped[:, 0::2])
        np.clip(clipped[:, 1::2], 0, h, out=clipped[:, 1::2])
        was_clipped = np.any(np.abs(clipped - boxes) > 1e-3, axis=1) & ~inverted
        zero = ~inverted & ((clipped[:, 2] - clipped[:, 0] <= 0) | (clipped[:, 3] - clipped[:, 1] <= 0))
        keep = ~inverted & ~zero
        if self.min_size > 0:
            side = np.minimum(clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1])
            ignore = ignore | (side < self.min_size)
        vis = vis & _inside(kpts, w, h)
        kpts = np.where(vis[..., None], kpts, 0).astype(np.float32)

        s = self.summary
        s.dropped_inverted += int(inverted.sum())
        s.dropped_zero_area += int(zero.sum())
        s.clipped += int((was_clipped & keep).sum())
        s.faces += int(keep.sum())
        s.ignored += int((ignore & keep).sum())
        if n and not keep.any():  # kept (WIDER marks some face-free images "1 face at 0 0 0 0") but said aloud
            s.images_all_dropped += 1
            s.all_dropped_files.append(path)
        return {
            "path": path, "image_id": rec.image_id if rec.image_id is not None else path, "orig_size": (int(h), int(w)),
            "boxes": clipped[keep], "labels": labels[keep], "keypoints": kpts[keep], "keypoints_visible": vis[keep],
            "ignore": ignore[keep], "extras": {k: v[keep] for k, v in extras.items()},
        }

    # -- serving --------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def get_raw(self, index: int) -> Dict[str, Any]:
        """The validated sample with its decoded image, before transforms."""
        rec = self.records[index]
        image = read_image(rec["path"])
        if image.shape[:2] != rec["orig_size"]:
            raise DataError(f"{self.describe()} image {rec['path']}: decoded size {image.shape[:2]} differs from the "
                            f"annotated (height, width) {rec['orig_size']}")
        sample = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in rec.items() if k != "extras"}
        sample["extras"] = {k: v.copy() for k, v in rec["extras"].items()}
        sample["image"] = image
        return sample

    def load_sample(self, index: int) -> Optional[Dict[str, Any]]:
        """Sample ``index`` after the transforms, or None when its image cannot be read and ``on_bad_sample`` is
        ``skip`` (counted and logged). Evaluation uses this: a stand-in image would be scored twice."""
        try:
            sample = self.get_raw(index)
        except DataError as exc:
            if self.on_bad_sample == "raise":
                raise
            self.summary.skipped_images += 1
            self.summary.skipped_files.append(self.records[index]["path"])
            logger.warning("skipping unreadable sample %d (%s): %s", index, self.describe(), exc)
            return None
        return self.transforms(sample) if self.transforms is not None else sample

    def __getitem__(self, index: int) -> Dict[str, Any]:
        """Training: an unreadable image under ``on_bad_sample: skip`` is replaced by the next readable one."""
        for attempt in range(len(self) if self.on_bad_sample == "skip" else 1):
            sample = self.load_sample((index + attempt) % len(self))
            if sample is not None:
                return sample
        raise DataError(f"{self.describe()}: no readable image left (on_bad_sample=skip skipped all {len(self)})")


def data_fingerprint(dataset: Any) -> Optional[Dict[str, Any]]:
    """``{"images": N, "sha1": ...}`` of what a dataset serves (each image's file name and size and every validated
    annotation), so a resumed run can tell that its data changed; None for a dataset that holds no
    :class:`FaceDataset` records (a user's own kind). Concat/Mosaic/seeded wrappers are looked through. File names
    without folders: moving the data keeps the fingerprint."""
    digest = hashlib.sha1()
    count = 0

    def walk(d: Any) -> bool:
        nonlocal count
        records = getattr(d, "records", None)
        if isinstance(d, FaceDataset) and isinstance(records, list):
            for r in records:
                digest.update(repr((os.path.basename(r["path"]), tuple(r["orig_size"]))).encode())
                for k in ("boxes", "labels", "keypoints", "keypoints_visible", "ignore"):
                    digest.update(np.ascontiguousarray(r[k]).tobytes())
            count += len(records)
            return True
        parts = getattr(d, "datasets", None) or ([d.dataset] if getattr(d, "dataset", None) is not None else [])
        return bool(parts) and all(walk(p) for p in parts)

    return {"images": count, "sha1": digest.hexdigest()} if walk(dataset) else None


def _inside(kpts: np.ndarray, w: float, h: float) -> np.ndarray:
    """[N, K] True where a keypoint lies inside the image (half-open [0, w) x [0, h), like pixel indices)."""
    x, y = kpts[..., 0], kpts[..., 1]
    return (x >= 0) & (x < w) & (y >= 0) & (y < h)
