"""WIDER FACE easy / medium / hard AP, exactly as the official MATLAB ``eval_tools`` compute it.

The official protocol (``wider_eval.m``: ``read_pred``, ``norm_score``, ``evaluation``,
``image_evaluation``, ``image_pr_info``, ``dataset_pr_info``, ``VOCap``), vectorized with numpy:

- ground truth from the official ``.mat`` files: ``wider_face_val.mat`` (boxes) and
  ``wider_{easy,medium,hard}_val.mat`` (``gt_list``: 1-based indices of the faces each setting counts);
- one min-max score normalization over the *whole* set, then each image's predictions sorted by
  score (descending, stable: MATLAB ``sort``), whatever order they were given in;
- every prediction is matched to one face; a match to a face that is not in the setting's ``gt_list``
  marks the prediction "ignored" (neither TP nor FP), a first match to a listed face recalls it,
  anything else is a proposal that recalls nothing (FP); images without faces or without predictions
  are skipped, but every listed face counts in the recall denominator;
- 1000 score thresholds ``1 - t/1000``, precision/recall summed over images, VOC AP (``VOCap``).

Where MATLAB's arithmetic is subtle we follow it, not the popular Python port
(biubug6/Pytorch_Retinaface ``widerface_evaluate``), which differs in these ways:

1. It reads predictions in file order; MATLAB sorts each image by score. Unsorted files give wrong AP.
2. It keys images by the first line of the file (and ``rstrip('.jpg')`` eats trailing j/p/g letters);
   MATLAB opens ``<event>/<name>.txt`` for each ground-truth image. A missing file crashes it;
   MATLAB (and we) count it as no detections, with a warning.
3. ``norm_score`` starts from min 1 / max 0, so scores above 1 are clipped wrongly, and it divides by
   zero when all scores are equal. MATLAB starts from ``realmax/realmin('single')``, which makes the
   normalization single precision (``single OP double -> single``): we reproduce that. All-equal
   scores (NaN in MATLAB) normalize to 1 here.
4. ``face_bbx_list`` is stored as ``int32``; in MATLAB ``boxoverlap(int32 gt, double pred)`` therefore
   works in integers: the intersection corners are rounded, the union is rounded and the IoU itself
   is an integer division, i.e. 0 or 1. A prediction matches the *first* face with IoU >= 0.5 (after
   that rounding), not the best one. ``iou_mode="matlab"`` (default) reproduces this;
   ``iou_mode="float"`` gives the Python port's float IoU with arg-max face (same +1 pixel convention).
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import UserError

PathLike = Union[str, os.PathLike]
ImageKey = Tuple[str, str]  # (event, image name without extension)
Predictions = Dict[ImageKey, np.ndarray]  # [N, 5] x y w h score, pixels of the original image

SETTINGS = ("easy", "medium", "hard")
GT_FILES = {"face": "wider_face_val.mat", **{s: f"wider_{s}_val.mat" for s in SETTINGS}}
_F32_TINY = np.float32(np.finfo(np.float32).tiny)  # MATLAB realmin('single')
_F32_MAX = np.float32(np.finfo(np.float32).max)  # MATLAB realmax('single')


class WiderFormatError(UserError, ValueError):
    """A prediction file or ground-truth file that does not follow the official format."""


@dataclass
class WiderGroundTruth:
    """Official WIDER ground truth, flattened to one entry per image in the official order."""

    keys: List[ImageKey]
    boxes: List[np.ndarray]  # per image [G, 4] x y w h (int32 in the official files)
    keep: Dict[str, List[np.ndarray]]  # setting -> per image 0-based indices of the faces it counts

    def __post_init__(self) -> None:
        if len(self.boxes) != len(self.keys):
            raise ValueError(f"WiderGroundTruth: {len(self.keys)} keys but {len(self.boxes)} box arrays")
        for s, lists in self.keep.items():
            if len(lists) != len(self.keys):
                raise ValueError(f"WiderGroundTruth: setting {s!r} has {len(lists)} gt_lists for {len(self.keys)} images")

    @property
    def settings(self) -> List[str]:
        return list(self.keep)

    def num_faces(self, setting: Optional[str] = None) -> int:
        if setting is None:
            return int(sum(len(b) for b in self.boxes))
        return int(sum(len(k) for k in self.keep[setting]))


def _cell(mat: Mapping, name: str, path: Path) -> np.ndarray:
    if name not in mat:
        raise WiderFormatError(f"{path}: no variable {name!r} (has {', '.join(k for k in mat if not k.startswith('__'))})")
    return mat[name]


def _mat_str(x: np.ndarray) -> str:
    return str(np.asarray(x).ravel()[0])


def load_wider_gt(gt_dir: PathLike, settings: Sequence[str] = SETTINGS) -> WiderGroundTruth:
    """Read the official eval-tool ``.mat`` files from ``gt_dir`` (``eval_tools/ground_truth``)."""
    from scipy.io import loadmat

    gt_dir = Path(gt_dir)
    paths = {k: gt_dir / GT_FILES[k] for k in ("face", *settings)}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"WIDER ground truth incomplete in {gt_dir}: missing {', '.join(missing)}. Expected the official "
            f"eval_tools/ground_truth files {', '.join(GT_FILES[k] for k in ('face', *settings))}")
    face = loadmat(str(paths["face"]))
    events = [_mat_str(e) for e in _cell(face, "event_list", paths["face"]).ravel()]
    file_cells = _cell(face, "file_list", paths["face"]).ravel()
    box_cells = _cell(face, "face_bbx_list", paths["face"]).ravel()
    keys: List[ImageKey] = []
    boxes: List[np.ndarray] = []
    for ev, files, bxs in zip(events, file_cells, box_cells):
        files, bxs = np.asarray(files).ravel(), np.asarray(bxs).ravel()
        for f, b in zip(files, bxs):
            keys.append((ev, _mat_str(f)))
            b = np.asarray(b)
            boxes.append(b.reshape(-1, 4) if b.size else np.zeros((0, 4), b.dtype if b.dtype != object else np.int32))
    keep: Dict[str, List[np.ndarray]] = {}
    for s in settings:
        mat = loadmat(str(paths[s]))
        s_events = [_mat_str(e) for e in _cell(mat, "event_list", paths[s]).ravel()]
        s_files = [(_mat_str(e), _mat_str(f)) for e, fl in zip(s_events, _cell(mat, "file_list", paths[s]).ravel())
                   for f in np.asarray(fl).ravel()]
        if s_files != keys:
            raise WiderFormatError(f"{paths[s]}: event/file lists differ from {paths['face']}; use files of one release")
        lists = []
        for i, g in enumerate(x for cell in _cell(mat, "gt_list", paths[s]).ravel() for x in np.asarray(cell).ravel()):
            idx = np.asarray(g).ravel().astype(np.int64) - 1
            if idx.size and (idx.min() < 0 or idx.max() >= len(boxes[i])):
                raise WiderFormatError(f"{paths[s]}: gt_list of {keys[i][0]}/{keys[i][1]} indexes faces outside 1..{len(boxes[i])}")
            lists.append(idx)
        keep[s] = lists
    return WiderGroundTruth(keys=keys, boxes=boxes, keep=keep)


# ----------------------------------------------------------------------------------------------
# Prediction files: <dir>/<event>/<name>.txt = name, count, then count lines "x y w h score"


def read_prediction_file(path: PathLike) -> np.ndarray:
    """One official prediction file -> [N, 5] float64; malformed content raises naming file and line."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if len(lines) < 2:
        raise WiderFormatError(f"{path}: expected an image name line and a count line, got {len(lines)} line(s)")
    try:
        count = int(float(lines[1].strip()))
    except ValueError:
        raise WiderFormatError(f"{path}:2: expected the number of boxes, got {lines[1]!r}") from None
    if count < 0:
        raise WiderFormatError(f"{path}:2: negative box count {count}")
    body = lines[2:]
    if len(body) < count:
        raise WiderFormatError(f"{path}: header says {count} boxes but only {len(body)} box line(s) follow")
    out = np.zeros((count, 5), dtype=np.float64)
    for k in range(count):
        parts = body[k].replace(",", " ").split()
        try:
            vals = [float(v) for v in parts[:5]]
        except ValueError:
            vals = []
        if len(vals) < 5 or not all(math.isfinite(v) for v in vals):
            raise WiderFormatError(f"{path}:{k + 3}: expected 'x y w h score' (5 finite numbers), got {body[k]!r}")
        out[k] = vals
    if any(line.strip() for line in body[count:]):
        warnings.warn(f"{path}: lines after the {count} announced boxes are ignored (as the official tool does)")
    return out


def read_predictions(pred_dir: PathLike, gt: Optional[WiderGroundTruth] = None) -> Predictions:
    """Read ``<pred_dir>/<event>/<name>.txt``.

    With ``gt``, exactly the ground-truth images are looked up (as MATLAB ``read_pred`` does); a missing
    file is an image without detections and is reported in one warning. Without ``gt``, every
    ``*.txt`` two levels down is read.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction directory {pred_dir} does not exist")
    preds: Predictions = {}
    if gt is None:
        for f in sorted(pred_dir.glob("*/*.txt")):
            preds[(f.parent.name, f.stem)] = read_prediction_file(f)
        return preds
    missing = []
    for ev, name in gt.keys:
        f = pred_dir / ev / f"{name}.txt"
        if f.is_file():
            preds[(ev, name)] = read_prediction_file(f)
        else:
            missing.append(f"{ev}/{name}.txt")
            preds[(ev, name)] = np.zeros((0, 5))
    if missing:
        warnings.warn(f"{len(missing)} of {len(gt.keys)} prediction files missing in {pred_dir} "
                      f"(counted as no detections): {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return preds


def write_predictions(preds: Mapping[ImageKey, np.ndarray], out_dir: PathLike) -> int:
    """Write the official format (``<event>/<name>.txt``: name, count, ``x y w h score`` lines); returns files written."""
    out_dir = Path(out_dir)
    n = 0
    for (ev, name), arr in preds.items():
        arr = np.asarray(arr, dtype=np.float64).reshape(-1, 5)
        d = out_dir / ev
        d.mkdir(parents=True, exist_ok=True)
        # shortest exact float64 text: reading the files back gives bit-identical numbers (and APs)
        rows = "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in arr)
        (d / f"{name}.txt").write_text(f"{name}\n{len(arr)}\n{rows}", encoding="utf-8")
        n += 1
    return n


# ----------------------------------------------------------------------------------------------
# The protocol


def normalize_scores(scores: np.ndarray) -> np.ndarray:
    """MATLAB ``norm_score`` over all scores of the set: single-precision min-max to [0, 1] (float64 out).

    The running max/min start at ``realmin/realmax('single')`` so the result is single precision, as
    in MATLAB. All-equal scores (a division by zero there) become 1, with a warning: the official code
    ends with AP 0 on them, so the two numbers differ and a user comparing them must know why.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s.copy()
    hi = np.float32(max(_F32_TINY, np.float32(s.max())))
    lo = np.float32(min(_F32_MAX, np.float32(s.min())))
    if hi == lo:
        what = f"all {s.size} prediction scores are equal" if s.size > 1 else "there is a single prediction score"
        warnings.warn(f"WIDER: {what} ({float(s[0]):g}); the official "
                      "wider_eval.m divides 0 by 0 in norm_score and reports AP 0 here, blazekit normalizes them to 1 "
                      "and reports the AP of the predictions in their given order", UserWarning, stacklevel=2)
        return np.ones_like(s)
    return ((s.astype(np.float32) - lo) / np.float32(hi - lo)).astype(np.float64)


def _mround(x: np.ndarray) -> np.ndarray:
    """MATLAB ``round``/integer conversion: half away from zero (numpy rounds half to even)."""
    r = np.floor(x)
    frac = x - r  # exact for |x| < 2**52
    return r + np.where(x >= 0, frac >= 0.5, frac > 0.5)


def _corners(xywh: np.ndarray, iou_mode: str) -> Tuple[np.ndarray, np.ndarray]:
    """x y w h -> (x1 y1 x2 y2 as MATLAB compares them, +1-pixel area from the unrounded box).

    In ``matlab`` mode ``max``/``min`` of the int32 ground truth and a double prediction return int32,
    i.e. rounded corners. The gt corners are integers, so rounding the prediction's corners once
    gives the same intersection as rounding every pairwise max/min.
    """
    b = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    c = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:4]], axis=1)
    area = (c[:, 2] - c[:, 0] + 1) * (c[:, 3] - c[:, 1] + 1)
    if iou_mode == "matlab":
        c = _mround(c)
    elif iou_mode != "float":
        raise ValueError(f"iou_mode must be 'matlab' or 'float', got {iou_mode!r}")
    return c, area


def _match(pc: np.ndarray, parea: np.ndarray, gc: np.ndarray, garea: np.ndarray, iou_thresh: float,
           iou_mode: str) -> Tuple[np.ndarray, np.ndarray]:
    """For each prediction (corners ``pc`` [P, 4]): the face ``image_evaluation`` picks and whether it matched."""
    w = np.minimum(gc[None, :, 2], pc[:, 2:3]) - np.maximum(gc[None, :, 0], pc[:, 0:1]) + 1
    h = np.minimum(gc[None, :, 3], pc[:, 3:4]) - np.maximum(gc[None, :, 1], pc[:, 1:2]) + 1
    inter = w * h
    s = garea[None, :] + parea[:, None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if iou_mode == "matlab":
            # aarea (int32) + barea (double) -> int32, rounded (positive wherever the boxes intersect);
            # int32 ./ int32 rounds to nearest, so the IoU is 0 or 1 and the *first* face >= 0.5 wins.
            rs = np.floor(s)
            rs += (s - rs) >= 0.5
            o = np.floor(inter / (rs - inter) + 0.5)
        else:
            o = inter / (s - inter)
    o[(w <= 0) | (h <= 0) | np.isnan(o)] = 0.0
    best = o.argmax(axis=1)  # first maximum, like MATLAB max
    return best, o[np.arange(len(o)), best] >= iou_thresh


@dataclass
class WiderResult:
    """APs, PR curves (``[thresh_num, 2]`` precision, recall per threshold) and face counts per setting."""

    ap: Dict[str, float]
    pr_curves: Dict[str, np.ndarray]
    count_face: Dict[str, int]
    num_predictions: int = 0
    missing: List[ImageKey] = field(default_factory=list)

    def as_dict(self, prefix: str = "") -> Dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in self.ap.items()}


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """MATLAB ``VOCap``: area under the precision envelope; NaN precisions (0/0) are skipped like MATLAB ``max``."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.fmax.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def evaluate_wider(preds: Mapping[ImageKey, np.ndarray], gt: WiderGroundTruth, iou_thresh: float = 0.5,
                   thresh_num: int = 1000, iou_mode: str = "matlab") -> WiderResult:
    """Official WIDER AP of ``preds`` (``{(event, name): [N, 5] x y w h score}``, any order) on ``gt``."""
    key_set = set(gt.keys)
    extra = [k for k in preds if k not in key_set]
    if extra:
        warnings.warn(f"{len(extra)} predicted images are not in the WIDER ground truth and are ignored, "
                      f"e.g. {extra[0][0]}/{extra[0][1]}")
    missing = [k for k in gt.keys if k not in preds]

    arrays = []
    for key in gt.keys:
        a = preds.get(key)
        a = np.zeros((0, 5)) if a is None else np.asarray(a, dtype=np.float64)
        if a.size and (a.ndim != 2 or a.shape[1] < 5):
            raise WiderFormatError(f"predictions for {key[0]}/{key[1]}: expected [N, 5] x y w h score, got {a.shape}")
        a = a.reshape(-1, a.shape[1] if a.ndim == 2 else 5)[:, :5]
        if not np.isfinite(a).all():
            raise WiderFormatError(f"predictions for {key[0]}/{key[1]}: non-finite values")
        arrays.append(a)
    num_pred = int(sum(len(a) for a in arrays))
    all_scores = np.concatenate([a[:, 4] for a in arrays]) if num_pred else np.zeros(0)
    norm_all = normalize_scores(all_scores)

    # Per image (setting-independent): sort by score, match each prediction to one face.
    offsets = np.cumsum([0] + [len(b) for b in gt.boxes])
    gt_all = np.concatenate([np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in gt.boxes]) \
        if offsets[-1] else np.zeros((0, 4))
    gcorners, garea = _corners(gt_all, iou_mode)
    starts = np.cumsum([0] + [len(a) for a in arrays])
    order = np.concatenate([s0 + np.argsort(-norm_all[s0:s1], kind="stable") for s0, s1 in zip(starts[:-1], starts[1:])]) \
        if num_pred else np.zeros(0, np.int64)
    scores = norm_all[order]
    pcorners, parea = _corners(np.concatenate(arrays)[order, :4] if num_pred else np.zeros((0, 4)), iou_mode)
    face = np.full(num_pred, -1, dtype=np.int64)
    ok = np.zeros(num_pred, dtype=bool)
    for i in range(len(arrays)):
        p0, p1, g0, g1 = starts[i], starts[i + 1], offsets[i], offsets[i + 1]
        if p1 == p0 or g1 == g0:
            continue  # MATLAB: isempty(gt_bbx) || isempty(pred_info) -> image skipped
        best, matched = _match(pcorners[p0:p1], parea[p0:p1], gcorners[g0:g1], garea[g0:g1], iou_thresh, iou_mode)
        face[p0:p1] = best + g0
        ok[p0:p1] = matched
    evaluated = np.repeat([len(b) > 0 for b in gt.boxes], np.diff(starts))
    scores, face, ok = scores[evaluated], face[evaluated], ok[evaluated]

    # Threshold t (0-based) = 1 - (t+1)/thresh_num; a prediction counts from the first t with score >= it.
    thresholds = 1 - np.arange(1, thresh_num + 1) / thresh_num
    first_t = thresh_num - np.searchsorted(thresholds[::-1], scores, side="right")
    counted = first_t < thresh_num

    ap, curves, counts = {}, {}, {}
    for setting in gt.settings:
        kept = np.zeros(offsets[-1], dtype=bool)
        for i, idx in enumerate(gt.keep[setting]):
            kept[offsets[i] + idx] = True
        on_kept = kept[face] if len(face) else np.zeros(0, bool)
        proposal = ~(ok & ~on_kept)  # a match to an unlisted face is not a proposal
        hit = np.flatnonzero(ok & on_kept)
        first_hit = np.zeros(len(face))
        if hit.size:
            _, first = np.unique(face[hit], return_index=True)
            first_hit[hit[first]] = 1
        n_prop = np.cumsum(np.bincount(first_t[counted], weights=proposal[counted].astype(float), minlength=thresh_num))
        n_rec = np.cumsum(np.bincount(first_t[counted], weights=first_hit[counted], minlength=thresh_num))
        count_face = gt.num_faces(setting)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = n_rec / n_prop
            recall = n_rec / count_face if count_face else np.full(thresh_num, np.nan)
        curves[setting] = np.stack([precision, recall], axis=1)
        counts[setting] = count_face
        ap[setting] = voc_ap(recall, precision) if count_face else float("nan")
    return WiderResult(ap=ap, pr_curves=curves, count_face=counts, num_predictions=num_pred, missing=missing)


def evaluate_wider_dir(pred_dir: PathLike, gt_dir: PathLike, **kwargs) -> WiderResult:
    """``read_predictions`` + ``evaluate_wider`` for an official prediction folder."""
    gt = load_wider_gt(gt_dir)
    return evaluate_wider(read_predictions(pred_dir, gt), gt, **kwargs)


def xyxy_to_wider(boxes_xyxy: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Detector output (xyxy px) -> official rows ``x y w h score``."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2], s], axis=1)


def key_from_path(path: PathLike) -> ImageKey:
    """``.../<event>/<name>.jpg`` -> ``(event, name)``, the key the official tool uses."""
    p = Path(path)
    return p.parent.name, p.stem


__all__ = [
    "SETTINGS", "WiderFormatError", "WiderGroundTruth", "WiderResult", "load_wider_gt", "read_prediction_file",
    "read_predictions", "write_predictions", "normalize_scores", "voc_ap", "evaluate_wider", "evaluate_wider_dir",
    "xyxy_to_wider", "key_from_path",
]
