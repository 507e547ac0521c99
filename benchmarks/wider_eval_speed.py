"""WIDER FACE evaluation speed and exactness on the full official val ground truth.

Makes seeded synthetic predictions (jittered faces, misses, duplicates, false positives, random
scores), then evaluates them with blazekit (vectorized numpy) and with ``reference_wider_eval``, a
plain-loop, line-by-line port of the official MATLAB code written for this benchmark, in the same run.

    OMP_NUM_THREADS=1 python benchmarks/wider_eval_speed.py [--gt DIR] [--seed 0] [--repeat 3]

Prints both AP triples, their largest difference and the speed ratio, then the whole-process time of
``tools/wider_eval.py`` (a fresh interpreter reading the predictions as official files, evaluating and plotting)
as a ratio to the reference's evaluation time alone.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from blazekit.evaluation.wider import WiderGroundTruth, evaluate_wider, load_wider_gt  # noqa: E402

DEFAULT_GT = Path(os.environ.get("BLAZEKIT_SHARED", Path(__file__).resolve().parent.parent.parent / "shared")) \
    / "data" / "wider_annotations"


def make_synthetic_predictions(gt: WiderGroundTruth, seed: int = 0) -> Dict[Tuple[str, str], np.ndarray]:
    """Per image: 80% of faces found with jitter, 10% of those duplicated, a few false positives,
    scores higher for better boxes (rounded to 3 decimals so ties happen), rows shuffled."""
    rng = np.random.default_rng(seed)
    preds = {}
    for key, boxes in zip(gt.keys, gt.boxes):
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        found = b[rng.random(len(b)) < 0.8]
        size = np.tile(found[:, 2:4], 2)  # jitter proportional to the face size
        det = found + rng.normal(0, 0.12, size=found.shape) * size
        dup = det[rng.random(len(det)) < 0.1]
        dup = dup + rng.normal(0, 2.0, size=dup.shape)
        n_fp = rng.poisson(3)
        fp = np.column_stack([rng.uniform(0, 900, n_fp), rng.uniform(0, 700, n_fp),
                              rng.uniform(5, 120, n_fp), rng.uniform(5, 120, n_fp)])
        all_boxes = np.concatenate([det, dup, fp])
        quality = np.concatenate([np.full(len(det), 0.7), np.full(len(dup), 0.4), np.full(len(fp), 0.2)])
        scores = np.round(np.clip(quality + rng.normal(0, 0.2, len(all_boxes)), 0.0, 1.0), 3)
        rows = np.column_stack([all_boxes, scores])
        preds[key] = rows[rng.permutation(len(rows))]
    return preds


# ---------------------------------------------------------------------------------------------
# Reference: the official MATLAB code, transliterated with plain loops (1-based logic kept as 0-based).

def _mround(v: float) -> float:
    """MATLAB round / double->int32 conversion (half away from zero)."""
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def _boxoverlap_int32(a: np.ndarray, b: List[float]) -> List[float]:
    """boxoverlap.m with ``a`` int32 (the .mat ground truth) and ``b`` double: integer results."""
    out = []
    for row in a:
        x1 = _mround(max(float(row[0]), b[0]))
        y1 = _mround(max(float(row[1]), b[1]))
        x2 = _mround(min(float(row[2]), b[2]))
        y2 = _mround(min(float(row[3]), b[3]))
        w = x2 - x1 + 1
        h = y2 - y1 + 1
        inter = w * h
        aarea = (row[2] - row[0] + 1) * (row[3] - row[1] + 1)
        barea = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
        union = _mround(float(aarea) + barea) - inter
        o = 0.0 if union <= 0 else float(_mround(inter / union))
        if w <= 0 or h <= 0:
            o = 0.0
        out.append(o)
    return out


def _norm_score(pred_list: List[np.ndarray]) -> List[np.ndarray]:
    max_score = np.float32(np.finfo(np.float32).tiny)  # realmin('single')
    min_score = np.float32(np.finfo(np.float32).max)  # realmax('single')
    for p in pred_list:
        if len(p) == 0:
            continue
        max_score = np.float32(max(max_score, np.float32(p[:, 4].max())))
        min_score = np.float32(min(min_score, np.float32(p[:, 4].min())))
    out = []
    for p in pred_list:
        p = p.copy()
        if len(p):
            if max_score == min_score:
                p[:, 4] = 1.0
            else:
                p[:, 4] = [float((np.float32(s) - min_score) / np.float32(max_score - min_score)) for s in p[:, 4]]
        out.append(p)
    return out


def _image_evaluation(pred_info, gt_bbx, ignore, iou_thresh):
    pred_recall = [0] * len(pred_info)
    recall_list = [0] * len(gt_bbx)
    proposal_list = [1] * len(pred_info)
    gt = np.asarray(gt_bbx, dtype=np.int64).copy()
    gt[:, 2] += gt[:, 0]
    gt[:, 3] += gt[:, 1]
    for h, p in enumerate(pred_info):
        box = [p[0], p[1], p[0] + p[2], p[1] + p[3]]
        overlap = _boxoverlap_int32(gt, box)
        max_overlap = max(overlap)
        idx = overlap.index(max_overlap)
        if max_overlap >= iou_thresh:
            if ignore[idx] == 0:
                recall_list[idx] = -1
                proposal_list[h] = -1
            elif recall_list[idx] == 0:
                recall_list[idx] = 1
        pred_recall[h] = sum(1 for r in recall_list if r == 1)
    return pred_recall, proposal_list


def _image_pr_info(thresh_num, pred_info, proposal_list, pred_recall):
    info = [[0, 0] for _ in range(thresh_num)]
    scores = [p[4] for p in pred_info]
    for t in range(1, thresh_num + 1):
        thresh = 1 - t / thresh_num
        r_index = -1
        for k in range(len(scores) - 1, -1, -1):  # find(score >= thresh, 1, 'last')
            if scores[k] >= thresh:
                r_index = k
                break
        if r_index >= 0:
            info[t - 1][0] = sum(1 for q in proposal_list[:r_index + 1] if q == 1)
            info[t - 1][1] = pred_recall[r_index]
    return info


def _voc_ap(rec, prec):
    mrec = [0.0] + list(rec) + [1.0]
    mpre = [0.0] + list(prec) + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        a, b = mpre[i], mpre[i + 1]
        mpre[i] = b if math.isnan(a) else (a if math.isnan(b) else max(a, b))  # MATLAB max skips NaN
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


def reference_wider_eval(preds, gt: WiderGroundTruth, iou_thresh=0.5, thresh_num=1000) -> Dict[str, float]:
    """The official MATLAB pipeline (read_pred sort, norm_score, evaluation, VOCap) with plain loops."""
    pred_list = []
    for key in gt.keys:  # read_pred: sort each image by score, descending (stable)
        p = np.asarray(preds.get(key, np.zeros((0, 5))), dtype=np.float64).reshape(-1, 5)
        order = sorted(range(len(p)), key=lambda k: -p[k, 4])
        pred_list.append(p[order])
    pred_list = _norm_score(pred_list)
    aps = {}
    for setting in gt.settings:
        org = [[0.0, 0.0] for _ in range(thresh_num)]
        count_face = 0
        for j, key in enumerate(gt.keys):
            gt_bbx, pred_info, keep = gt.boxes[j], pred_list[j], gt.keep[setting][j]
            count_face += len(keep)
            if len(gt_bbx) == 0 or len(pred_info) == 0:
                continue
            ignore = [0] * len(gt_bbx)
            for k in keep:
                ignore[k] = 1
            pred_recall, proposal_list = _image_evaluation(pred_info, gt_bbx, ignore, iou_thresh)
            info = _image_pr_info(thresh_num, pred_info, proposal_list, pred_recall)
            for t in range(thresh_num):
                org[t][0] += info[t][0]
                org[t][1] += info[t][1]
        prec = [o[1] / o[0] if o[0] else float("nan") for o in org]
        rec = [o[1] / count_face for o in org]
        aps[setting] = _voc_ap(rec, prec)
    return aps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", default=str(DEFAULT_GT), help="folder with wider_face_val.mat and wider_{easy,medium,hard}_val.mat")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="blazekit runs (best time is reported)")
    ap.add_argument("--skip-reference", action="store_true", help="time blazekit only")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    gt = load_wider_gt(args.gt)
    t_load = time.perf_counter() - t0
    preds = make_synthetic_predictions(gt, args.seed)
    n_pred = sum(len(p) for p in preds.values())
    print(f"ground truth: {len(gt.keys)} images, {gt.num_faces()} faces "
          f"({', '.join(f'{s} {gt.num_faces(s)}' for s in gt.settings)}), loaded in {t_load:.2f} s")
    print(f"synthetic predictions: {n_pred} boxes (seed {args.seed})")

    times = []
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        res = evaluate_wider(preds, gt)
        times.append(time.perf_counter() - t0)
    t_fast = min(times)
    print(f"blazekit  : easy {res.ap['easy']:.6f}  medium {res.ap['medium']:.6f}  hard {res.ap['hard']:.6f}  "
          f"time {t_fast:.3f} s (best of {len(times)})")
    if args.skip_reference:
        return 0
    t0 = time.perf_counter()
    ref = reference_wider_eval(preds, gt)
    t_ref = time.perf_counter() - t0
    print(f"reference : easy {ref['easy']:.6f}  medium {ref['medium']:.6f}  hard {ref['hard']:.6f}  time {t_ref:.3f} s")
    diff = max(abs(res.ap[s] - ref[s]) for s in ref)
    print(f"max |AP difference| = {diff:.2e}; speed ratio = {t_ref / t_fast:.1f}x")
    ok = diff <= 1e-6
    print("identical to 1e-6" if ok else "MISMATCH")
    t_tool = whole_tool_seconds(preds, args.gt)
    print(f"tools/wider_eval.py whole process (start-up, reading files, plot): {t_tool:.2f} s; "
          f"ratio to the reference's evaluation alone = {t_ref / t_tool:.1f}x")
    return 0 if ok else 1


def whole_tool_seconds(preds: Dict[Tuple[str, str], np.ndarray], gt_dir: str) -> float:
    """Wall time of ``python tools/wider_eval.py`` on ``preds`` written as official prediction files."""
    import subprocess
    import tempfile

    from blazekit.evaluation.wider import write_predictions

    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        write_predictions(preds, Path(tmp) / "pred")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(repo / "tools" / "wider_eval.py"), "--pred", str(Path(tmp) / "pred"),
                        "--gt", gt_dir, "--out", str(Path(tmp) / "r.json")], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
