"""Faces from a COCO-format json (detection or keypoints), with a category filter and label remap."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from ...registry import DATASETS
from .base import DataError, FaceDataset, FaceRecord, PathLike, select_labels


@DATASETS.register()
class CocoFaces(FaceDataset):
    """COCO json: ``images[]`` (id, file_name, width, height), ``annotations[]`` (image_id, category_id,
    bbox [x, y, w, h], optional ``keypoints`` [x, y, v] * K and ``iscrowd``), ``categories[]``.

    Args:
        ann_file: the json file.
        image_root: folder ``file_name`` is relative to; default the json's folder.
        categories: keep only these categories (names or ids); default all.
        label_map: category name or id -> label; default categories in id order -> 0, 1, ...
        min_visibility: COCO keypoint ``v`` at or above which a keypoint counts as visible (1: labelled,
            2: labelled and visible).
        split: keep only images whose ``split`` field equals this (e.g. the bundled demo set); None keeps all.
            Shorthand for ``image_filter={"split": [split]}``, except that a file without ``split`` fields is
            simply empty (kept for backward compatibility).
        image_filter: keep only images whose fields take one of the listed values, e.g. ``{fold: [1, 2, 3]}``
            for FDDB's folds (a scalar means a one-value list; several fields must all match). A field that
            no image has is an error naming the fields the file does have, so a typo cannot select nothing.
        extra_fields: per-annotation fields copied into ``extras`` (e.g. ``[mask]`` for facemask).
        crowd_as_ignore: ``iscrowd=1`` boxes become ``ignore`` regions (default) instead of faces.
    """

    def __init__(self, ann_file: PathLike, image_root: Optional[PathLike] = None,
                 categories: Optional[Sequence[Union[str, int]]] = None,
                 label_map: Optional[Mapping[Union[str, int], int]] = None, min_visibility: int = 1,
                 split: Optional[str] = None, image_filter: Optional[Mapping[str, Any]] = None,
                 extra_fields: Sequence[str] = (), crowd_as_ignore: bool = True, **kwargs) -> None:
        self.ann_file = Path(ann_file)
        self.image_root = Path(image_root) if image_root is not None else self.ann_file.parent
        self.categories = categories
        self.label_map = label_map
        self.min_visibility = int(min_visibility)
        self.split = split
        self.image_filter = self._check_image_filter(image_filter)
        self.extra_fields = list(extra_fields)
        self.crowd_as_ignore = crowd_as_ignore
        super().__init__(**kwargs)

    def describe(self) -> str:
        parts = [str(self.ann_file)] + ([self.split] if self.split else [])
        parts += [f"{k} in {v}" for k, v in self.image_filter.items()]
        return f"CocoFaces({', '.join(parts)})"

    def _check_image_filter(self, image_filter: Optional[Mapping[str, Any]]) -> Dict[str, List[Any]]:
        """``{field: value | [values]}`` -> ``{field: [values]}``; anything else is a clear error."""
        if image_filter is None:
            return {}
        if not isinstance(image_filter, Mapping):
            raise DataError(f"CocoFaces({self.ann_file}): image_filter must be a mapping {{field: [values]}}, "
                            f"e.g. {{fold: [1, 2, 3]}}, got {image_filter!r}")
        out = {}
        for key, values in image_filter.items():
            values = list(values) if isinstance(values, (list, tuple, set)) else [values]
            if not values:
                raise DataError(f"CocoFaces({self.ann_file}): image_filter.{key} is an empty list (selects nothing)")
            out[str(key)] = values
        return out

    def _image_filter_keep(self, images: List[Any]) -> List[bool]:
        """Which images pass ``image_filter`` (all when there is none)."""
        valid = [img for img in images if isinstance(img, Mapping)]
        present = set().union(*(img.keys() for img in valid)) if valid else set()
        for key in self.image_filter:
            if key not in present:
                raise self._field_error(f"image_filter.{key}", f"no image has a {key!r} field; image fields are "
                                        f"{sorted(present)}")
        return [not isinstance(img, Mapping) or all(img.get(k) in vals for k, vals in self.image_filter.items())
                for img in images]

    def _field_error(self, where: str, msg: str) -> DataError:
        return DataError(f"{self.ann_file}: {where}: {msg}")

    def _category_names(self, cats: List[Dict[str, Any]]) -> Dict[Any, str]:
        """category id -> name of every category the file lists."""
        by_id = {}
        for i, c in enumerate(cats):
            if not isinstance(c, Mapping) or "id" not in c:
                raise self._field_error(f"categories[{i}]", f"expected an object with 'id' and 'name', got {c!r}")
            by_id[c["id"]] = c.get("name", str(c["id"]))
        return by_id

    def load_records(self) -> List[FaceRecord]:
        if not self.ann_file.is_file():
            raise DataError(f"CocoFaces: annotation file not found: {self.ann_file}")
        try:
            with open(self.ann_file, "r", encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as exc:
            raise DataError(f"{self.ann_file}: not valid json: {exc}") from exc
        for key in ("images", "annotations"):
            if not isinstance(data.get(key), list):
                raise self._field_error(key, "missing or not a list (a COCO file needs 'images' and 'annotations')")
        names = self._category_names(data.get("categories") or [{"id": 1, "name": "face"}])
        labels = select_labels(names, self.categories, self.label_map, self._field_error)
        K = self.num_keypoints
        faces: Dict[Any, List[Dict[str, Any]]] = defaultdict(list)
        for i, ann in enumerate(data["annotations"]):
            where = f"annotations[{i}]" + (f" (id {ann.get('id')})" if isinstance(ann, Mapping) else "")
            try:
                face = self._parse_annotation(ann, where, names, labels, K)
            except DataError as exc:
                self.bad_sample(exc)
                continue
            if face is not None:
                faces[ann["image_id"]].append(face)
        records = []
        passes = self._image_filter_keep(data["images"])
        for i, img in enumerate(data["images"]):
            if not isinstance(img, Mapping) or "id" not in img or "file_name" not in img:
                self.bad_sample(self._field_error(f"images[{i}]", f"needs 'id' and 'file_name', got {img!r}"), "image")
                continue
            if (self.split is not None and img.get("split") != self.split) or not passes[i]:
                continue
            fs = faces.get(img["id"], [])
            size = None
            if "width" in img and "height" in img:
                try:
                    size = (int(img["height"]), int(img["width"]))
                except (TypeError, ValueError):
                    self.bad_sample(self._field_error(f"images[{i}] (id {img['id']})", "width/height must be integers, "
                                                      f"got {img['width']!r}/{img['height']!r}"), "image")
                    continue
            n = len(fs)
            extras = {k: np.asarray([f["extras"].get(k) for f in fs], dtype=object if n == 0 else None)
                      for k in self.extra_fields}
            records.append(FaceRecord(
                path=self.image_root / img["file_name"], image_id=img["id"], size=size,
                boxes=np.asarray([f["box"] for f in fs], np.float32).reshape(n, 4),
                labels=np.asarray([f["label"] for f in fs], np.int64),
                keypoints=np.asarray([f["kpts"] for f in fs], np.float32).reshape(n, K, 2),
                keypoints_visible=np.asarray([f["vis"] for f in fs], bool).reshape(n, K),
                ignore=np.asarray([f["ignore"] for f in fs], bool), extras=extras))
        return records

    def _parse_annotation(self, ann: Any, where: str, names: Dict[Any, str], labels: Dict[Any, int],
                          K: int) -> Optional[Dict[str, Any]]:
        if not isinstance(ann, Mapping) or "image_id" not in ann:
            raise self._field_error(where, f"expected an object with 'image_id', got {ann!r}")
        cid = ann.get("category_id", 1)
        if cid not in names:  # a labelling mistake: dropping the face would train it as background
            raise self._field_error(where, f"category_id {cid!r} is not one of the file's categories "
                                           f"({', '.join(f'{i}: {n}' for i, n in names.items())})")
        if cid not in labels:
            return None  # a category left out on purpose (``categories``)
        bbox = ann.get("bbox")
        if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in bbox)):
            raise self._field_error(where, f"'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        kpts = np.zeros((K, 2), np.float32)
        vis = np.zeros(K, bool)
        raw = ann.get("keypoints")
        if raw:
            if not isinstance(raw, (list, tuple)) or len(raw) % 3 or not all(isinstance(v, (int, float)) for v in raw):
                raise self._field_error(where, f"'keypoints' must be numbers [x, y, v] * K, got {raw!r}")
            arr = np.asarray(raw, np.float32).reshape(-1, 3)
            if len(arr) != K:
                raise self._field_error(where, f"'keypoints' has {len(arr)} points but num_keypoints is {K}")
            kpts = arr[:, :2]
            vis = arr[:, 2] >= self.min_visibility
        extras = {k: ann.get(k) for k in self.extra_fields}
        return {"box": [x, y, x + w, y + h], "label": labels[ann.get("category_id", 1)], "kpts": kpts, "vis": vis,
                "ignore": bool(ann.get("iscrowd", 0)) and self.crowd_as_ignore, "extras": extras}
