"""Faces from an Ultralytics/Roboflow YOLO export: ``data.yaml`` + ``<split>/images`` + ``<split>/labels``.

Labels are ``class cx cy w h`` normalised to [0, 1] (one file per image, same stem, ``images`` -> ``labels``
in the path; a missing file means no faces, as in Ultralytics). YOLO-pose rows append K x (x, y[, v]).
Split paths are resolved the way Ultralytics does: relative to ``path:`` or the yaml's folder, and a
Roboflow-style ``../train/images`` that does not exist is retried inside the yaml's folder.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import yaml

from ...io.images import IMAGE_EXTS
from ...registry import DATASETS
from .base import DataError, FaceDataset, FaceRecord, PathLike, image_size, select_labels

SPLIT_ALIASES = {"valid": "val", "validation": "val"}


def label_path_for(image: Path) -> Path:
    """Ultralytics' rule: the last ``/images/`` in the path becomes ``/labels/``, the suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


@DATASETS.register()
class YoloFaces(FaceDataset):
    """Args:
        data_yaml: the dataset's ``data.yaml`` (``train``/``val``/``test`` entries, ``names``, optional ``path``).
        split: ``train`` | ``val`` (alias ``valid``) | ``test``.
        classes: keep only these classes (names or indices); default all.
        label_map: class name or index -> label; default kept classes in index order -> 0, 1, ...
    """

    def __init__(self, data_yaml: PathLike, split: str = "train",
                 classes: Optional[Sequence[Union[str, int]]] = None,
                 label_map: Optional[Mapping[Union[str, int], int]] = None, **kwargs) -> None:
        self.data_yaml = Path(data_yaml)
        self.split = SPLIT_ALIASES.get(split, split)
        self.classes = classes
        self.label_map = label_map
        super().__init__(**kwargs)

    def describe(self) -> str:
        return f"YoloFaces({self.data_yaml}, {self.split})"

    def _read_yaml(self) -> Dict:
        if not self.data_yaml.is_file():
            raise DataError(f"YoloFaces: data yaml not found: {self.data_yaml}")
        try:
            data = yaml.safe_load(self.data_yaml.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise DataError(f"{self.data_yaml}: not valid YAML: {exc}") from exc
        if self.split not in data:
            raise DataError(f"{self.data_yaml}: no {self.split!r} entry (has {sorted(k for k in data if isinstance(data[k], (str, list)))})")
        return data

    def _resolve(self, data: Dict, entry: str) -> Path:
        base = self.data_yaml.parent
        if data.get("path"):
            base = Path(data["path"]) if Path(data["path"]).is_absolute() else (self.data_yaml.parent / data["path"])
        p = Path(entry)
        p = p if p.is_absolute() else (base / p)
        if not p.exists() and entry.startswith("../"):
            p = base / entry[3:]  # Roboflow exports write ../train/images relative to a sibling folder
        return p.resolve()

    def _image_files(self, data: Dict) -> List[Path]:
        entries = data[self.split]
        entries = entries if isinstance(entries, list) else [entries]
        files: List[Path] = []
        for entry in entries:
            p = self._resolve(data, str(entry))
            if p.is_dir():
                files += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTS)
            elif p.is_file() and p.suffix == ".txt":
                for line in p.read_text(encoding="utf-8").splitlines():
                    if line.strip():
                        q = Path(line.strip())
                        files.append(q if q.is_absolute() else (p.parent / q).resolve())
            else:
                raise DataError(f"{self.data_yaml}: {self.split}: {entry!r} resolves to {p}, which is neither an "
                                "image folder nor a .txt list of images")
        return files

    def _class_labels(self, names: Dict[int, str]) -> Dict[int, int]:
        return select_labels(names, self.classes, self.label_map,
                             lambda field, msg: DataError(f"{self.data_yaml}: {field.replace('categories', 'classes')}: {msg}"))

    @staticmethod
    def _class_names(names) -> Dict[int, str]:
        """class index -> name of every class ``names:`` lists (a list or an index mapping; default one face)."""
        if isinstance(names, Mapping):
            return {int(k): str(v) for k, v in names.items()}
        return dict(enumerate(names or ["face"]))

    def load_records(self) -> List[FaceRecord]:
        data = self._read_yaml()
        names = self._class_names(data.get("names"))
        labels = self._class_labels(names)
        K = self.num_keypoints
        records = []
        for img in self._image_files(data):
            try:
                h, w = image_size(img)
            except DataError as exc:
                self.bad_sample(exc, "image")
                continue
            boxes, labs, kpts, vis = [], [], [], []
            lab_file = label_path_for(img)
            lines = lab_file.read_text(encoding="utf-8").splitlines() if lab_file.is_file() else []
            for lineno, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    vals = [float(v) for v in line.split()]
                    if len(vals) not in (5, 5 + 2 * K, 5 + 3 * K) or vals[0] != int(vals[0]):
                        raise ValueError
                    if not all(-0.01 <= v <= 1.01 for v in vals[1:5]):
                        raise ValueError
                except ValueError:
                    self.bad_sample(DataError(
                        f"{lab_file}:{lineno}: expected 'class cx cy w h' (normalised to [0, 1]) optionally followed by "
                        f"{K} x 'x y [v]', got {line.strip()!r}"))
                    continue
                c = int(vals[0])
                if c not in names:  # a labelling mistake: dropping the face would train it as background
                    self.bad_sample(DataError(
                        f"{lab_file}:{lineno}: class {c} is not one of the classes of {self.data_yaml} "
                        f"({', '.join(f'{i}: {n}' for i, n in names.items())}), got {line.strip()!r}"))
                    continue
                if c not in labels:
                    continue  # a class left out on purpose (``classes``)
                cx, cy, bw, bh = vals[1] * w, vals[2] * h, vals[3] * w, vals[4] * h
                boxes.append([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
                labs.append(labels[c])
                if len(vals) > 5:
                    step = 2 if len(vals) == 5 + 2 * K else 3
                    pts = np.asarray(vals[5:], np.float32).reshape(K, step)
                    kpts.append(pts[:, :2] * [w, h])
                    vis.append(pts[:, 2] > 0 if step == 3 else (pts[:, 0] > 0) | (pts[:, 1] > 0))
                else:
                    kpts.append(np.zeros((K, 2), np.float32))
                    vis.append(np.zeros(K, bool))
            n = len(boxes)
            records.append(FaceRecord(path=img, size=(h, w), image_id=os.path.splitext(img.name)[0],
                                      boxes=np.asarray(boxes, np.float32).reshape(n, 4), labels=np.asarray(labs, np.int64),
                                      keypoints=np.asarray(kpts, np.float32).reshape(n, K, 2),
                                      keypoints_visible=np.asarray(vis, bool).reshape(n, K)))
        return records
