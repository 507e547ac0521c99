"""WIDER FACE in its official layout, or the RetinaFace ``label.txt`` files with 5 landmarks.

Official: ``<root>/WIDER_<split>/images/<event>/<name>.jpg`` and
``<root>/wider_face_split/wider_face_<split>_bbx_gt.txt`` (name, count, then per face
``x1 y1 w h blur expression illumination invalid occlusion pose``; a count of 0 is followed by one dummy line).
RetinaFace: ``<root>/<split>/label.txt`` (``# <name>`` then ``x y w h`` + 5 x (x, y, flag) + score per face,
landmarks -1 when absent) with images in ``<root>/<split>/images/``.
Faces marked ``invalid`` stay in the sample with ``ignore=True``: the official evaluation treats them as
regions that neither count as misses nor as false positives.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ...registry import DATASETS
from .base import DataError, FaceDataset, FaceRecord, PathLike

WIDER_ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


def retinaface_to_blazeface(points5: np.ndarray, visible5: np.ndarray,
                            num_keypoints: int = 6) -> Tuple[np.ndarray, np.ndarray]:
    """RetinaFace's 5 points (eye on image left, eye on image right, nose, mouth corners) -> BlazeFace's 6.

    RetinaFace lists the subject's right eye first, like MediaPipe; the mouth centre is the mean of the two
    corners; the ear tragions do not exist in the 5-point scheme and stay invisible. ``num_keypoints=5``
    keeps RetinaFace's own layout (mouth corners included), which is what the 5-point flip order expects.
    """
    if num_keypoints == 5:
        return points5.astype(np.float32, copy=True), visible5.astype(bool, copy=True)
    n = len(points5)
    kpts = np.zeros((n, num_keypoints, 2), np.float32)
    vis = np.zeros((n, num_keypoints), bool)
    k = min(num_keypoints, 3)
    kpts[:, :k] = points5[:, :k]
    vis[:, :k] = visible5[:, :k]
    if num_keypoints > 3:
        kpts[:, 3] = points5[:, 3:5].mean(axis=1)
        vis[:, 3] = visible5[:, 3] & visible5[:, 4]
    return kpts, vis


@DATASETS.register()
class WiderFace(FaceDataset):
    """WIDER FACE (official bbx_gt.txt or RetinaFace label.txt).

    Args:
        root: dataset folder.
        split: ``train`` | ``val`` | ``test``.
        ann_file: annotation file; default found from ``root`` and ``split`` (official first, then RetinaFace).
        image_root: folder the image names are relative to; default from the layout.
        ignore_invalid: flag faces with ``invalid=1`` as ``ignore`` (default) instead of treating them as faces.
    """

    def __init__(self, root: PathLike, split: str = "train", ann_file: Optional[PathLike] = None,
                 image_root: Optional[PathLike] = None, ignore_invalid: bool = True, **kwargs) -> None:
        self.root = Path(root)
        self.split = split
        self.ignore_invalid = ignore_invalid
        self.ann_file, self.format, default_images = self._locate(ann_file)
        self.image_root = Path(image_root) if image_root is not None else default_images
        super().__init__(**kwargs)

    def describe(self) -> str:
        return f"WiderFace({self.split}, {self.ann_file})"

    def _locate(self, ann_file: Optional[PathLike]):
        official = self.root / "wider_face_split" / f"wider_face_{self.split}_bbx_gt.txt"
        retina = self.root / self.split / "label.txt"
        if ann_file is not None:
            ann = Path(ann_file)
            if not ann.is_absolute() and not ann.exists():
                ann = self.root / ann
        else:
            ann = official if official.exists() else retina
        if not ann.is_file():
            raise DataError(f"WiderFace: annotation file not found: {ann if ann_file else official} "
                            f"(also looked for {retina}); expected the official layout "
                            f"<root>/wider_face_split/wider_face_<split>_bbx_gt.txt or RetinaFace's <root>/<split>/label.txt")
        with open(ann, "r", encoding="utf-8") as f:
            first = f.readline()
        fmt = "retinaface" if first.startswith("#") else "official"
        images = (self.root / f"WIDER_{self.split}" / "images") if fmt == "official" else ann.parent / "images"
        return ann, fmt, images

    def load_records(self) -> List[FaceRecord]:
        with open(self.ann_file, "r", encoding="utf-8") as f:
            lines = [ln.strip() for ln in f]
        return self._parse_official(lines) if self.format == "official" else self._parse_retinaface(lines)

    def _err(self, lineno: int, msg: str) -> DataError:
        return DataError(f"{self.ann_file}:{lineno}: {msg}")

    def _parse_official(self, lines: Sequence[str]) -> List[FaceRecord]:
        records, i = [], 0
        while i < len(lines):
            if not lines[i]:
                i += 1
                continue
            name, name_line = lines[i], i + 1
            if i + 1 >= len(lines):
                self.bad_sample(self._err(i + 2, f"missing face count after image name {name!r}"))
                break
            try:
                count = int(lines[i + 1])
                if count < 0:
                    raise ValueError
            except ValueError:
                self.bad_sample(self._err(i + 2, f"expected the face count of {name!r} (an integer >= 0), "
                                                  f"got {lines[i + 1]!r}"))
                i = self._next_name(lines, i + 1)
                continue
            body = lines[i + 2:i + 2 + max(count, 1)]  # count 0 is followed by one all-zero line
            i += 2 + max(count, 1)
            if len(body) < count:  # a file cut short must not quietly lose the last image's faces
                self.bad_sample(self._err(len(lines) + 1, f"file ends after {len(body)} of the {count} faces of "
                                                          f"{name!r} (truncated annotation file?)"))
                continue
            rows, bad = [], False
            for j, line in enumerate(body[:count]):
                parts = line.split()
                try:
                    vals = [float(p) for p in parts]
                    if len(vals) < 4:
                        raise ValueError
                except ValueError:
                    self.bad_sample(self._err(name_line + 2 + j, f"face {j} of {name!r}: expected "
                                                                  "'x1 y1 w h blur expression illumination invalid "
                                                                  f"occlusion pose', got {line!r}"))
                    bad = True
                    continue
                rows.append((vals + [0.0] * 10)[:10])
            if bad and not rows and count:  # every face line malformed: the image would train as background
                self.summary.skipped_images += 1
                continue
            arr = np.asarray(rows, np.float32).reshape(-1, 10)
            boxes = np.concatenate([arr[:, :2], arr[:, :2] + arr[:, 2:4]], axis=1)
            attrs = {k: arr[:, 4 + a].astype(np.int64) for a, k in enumerate(WIDER_ATTRIBUTES)}
            ignore = attrs["invalid"].astype(bool) if self.ignore_invalid else None
            records.append(FaceRecord(path=self.image_root / name, boxes=boxes, ignore=ignore, extras=attrs,
                                      image_id=os.path.splitext(name)[0]))
        return records

    @staticmethod
    def _next_name(lines: Sequence[str], i: int) -> int:
        while i < len(lines) and not lines[i].lower().endswith((".jpg", ".jpeg", ".png")):
            i += 1
        return i

    def _parse_retinaface(self, lines: Sequence[str]) -> List[FaceRecord]:
        groups = []
        for lineno, line in enumerate(lines, 1):
            if line.startswith("#"):
                groups.append((line[1:].strip(), []))
            elif line:
                if not groups:
                    self.bad_sample(self._err(lineno, "face line before the first '# <image name>' line"))
                    continue
                groups[-1][1].append((lineno, line))
        records = []
        for name, faces in groups:
            boxes, pts, pvis = [], [], []
            for lineno, line in faces:
                try:
                    vals = [float(p) for p in line.split()]
                    if len(vals) < 4 or (len(vals) > 4 and len(vals) < 19):
                        raise ValueError
                except ValueError:
                    self.bad_sample(self._err(lineno, f"face of {name!r}: expected 'x y w h' optionally followed by "
                                                      f"5 x 'px py flag' and a score, got {line!r}"))
                    continue
                x, y, w, h = vals[:4]
                boxes.append([x, y, x + w, y + h])
                if len(vals) >= 19:
                    lm = np.asarray(vals[4:19], np.float32).reshape(5, 3)
                    pts.append(lm[:, :2])
                    pvis.append(np.repeat(lm[0, 0] >= 0, 5) & (lm[:, 0] >= 0))
                else:
                    pts.append(np.zeros((5, 2), np.float32))
                    pvis.append(np.zeros(5, bool))
            n = len(boxes)
            kpts, vis = retinaface_to_blazeface(np.asarray(pts, np.float32).reshape(n, 5, 2),
                                                np.asarray(pvis, bool).reshape(n, 5), self.num_keypoints)
            records.append(FaceRecord(path=self.image_root / name, boxes=np.asarray(boxes, np.float32).reshape(n, 4),
                                      keypoints=kpts, keypoints_visible=vis, image_id=os.path.splitext(name)[0]))
        return records
