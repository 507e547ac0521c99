"""Run a detector over the evaluation dataset(s) and compute COCO AP, WIDER AP and keypoint NME.

``evaluate(detector, cfg, split="val")`` is what the trainer calls for periodic validation and what
``tools/eval.py`` calls once. It reads the *raw* dataset (no transforms: ``detector.predict`` does its
own letterbox), predicts in batches with a progress bar, and returns flat metric keys::

    coco/AP coco/AP50 coco/AP75 coco/APs coco/APm coco/APl coco/AR ...   every dataset
    wider/easy wider/medium wider/hard                                   WIDER FACE with its .mat ground truth
    nme nme/faces_matched nme/faces                                      datasets with keypoints
    nme/common nme/common_reference nme/common_faces   ... and eval.kpt_reference: both NMEs on the faces both find
    kpt_agreement kpt_agreement/mean ...        with eval.kpt_reference: median keypoint distance (inter-eye
                                                units) to the reference model's faces scoring >= 0.5

Options live in the config's ``eval:`` section (all optional)::

    eval:
      score_thr: 0.02        # detection score threshold during evaluation (model.postprocess.score_thr otherwise)
      max_det: 1000          # detections kept per image during evaluation
      test_scale: null       # network input: null = model.input_size, [H, W], or "original" (each image's own size)
      max_dets: [1, 10, 1000]  # COCO maxDets (100 caps recall on crowded WIDER images)
      min_size: null         # faces smaller than this (px, max side) are ignored regions
      batch_size: 16
      wider_gt_dir: null     # default <dataset root>/eval_tools/ground_truth
      wider_iou_mode: matlab # official integer IoU; "float" = the Python port

Speed: images load in a background thread while the network runs, and a BlazeFace-style detector (MediaPipe
coder, ``WeightedBlending``/``NMS``) runs through :class:`blazekit.deploy.fastpath.FastDetector`: numpy pre/post-processing
that thresholds the logits before decoding, around the network in onnxruntime (``backend="onnxruntime"``) or in
PyTorch with BatchNorm folded and channels-last (``backend="torch"``). ``backend="auto"`` takes onnxruntime when it is
installed and the model is on the CPU (:mod:`blazekit.deploy.backends`, shared with ``tools/predict.py``). The metrics equal ``detector.predict``'s to float rounding (tested to 1e-4 AP);
any other detector is evaluated through its own ``predict``.

Dataset paths may use ``${BLAZEKIT_SHARED}`` (default: ``shared/`` beside the checkout) or any other
environment variable; `blazekit.config.expand_env` expands them.
"""
from __future__ import annotations

import math
import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .. import options
from ..config import ConfigError, expand_env
from ..deploy.backends import BACKENDS, onnx_predictor, resolve_backend
from .coco import CocoDetections, CocoImage, evaluate_coco
from .keypoints import NMEAccumulator, common_nme
from .wider import (WiderGroundTruth, WiderResult, evaluate_wider, key_from_path, load_wider_gt, write_predictions,
                    xyxy_to_wider)

#: the reference model's detections that count as faces for ``kpt_agreement`` (MediaPipe's own threshold)
REFERENCE_SCORE = 0.5

Predict = Callable[..., List[Dict[str, np.ndarray]]]

DEFAULT_EVAL = options.defaults(options.EVAL)  # the schema lives in blazekit.options


def _dataset_cfgs(cfg: Mapping[str, Any], split: str) -> List[Tuple[str, Dict[str, Any]]]:
    data = cfg.get("data") or {}
    if split not in data or not data[split]:
        raise ConfigError(f"config has no data.{split} section to evaluate (has: {', '.join(data) or 'nothing'})")
    ds = data[split].get("dataset") if isinstance(data[split], Mapping) else None
    if ds is None:
        raise ConfigError(f"data.{split}.dataset is missing")
    if isinstance(ds, Mapping) and ds.get("type") == "ConcatDataset":
        ds = ds.get("datasets", [])
    if isinstance(ds, Mapping):
        return [("", expand_env(dict(ds)))]
    out = []
    for i, d in enumerate(ds):
        name = d.get("name") or f"{str(d.get('type', 'dataset')).lower()}{i}"
        out.append((name, expand_env({k: v for k, v in d.items() if k != "name"})))
    return out


def eval_datasets(cfg: Mapping[str, Any], split: str = "val") -> List[Tuple[str, Dict[str, Any], Any]]:
    """``(name, dataset config, dataset)`` of each dataset of ``data.<split>``, raw (no transforms), as the evaluator
    scores them. Building one checks it (repeated image ids, unreadable files), so the trainer builds its
    validation sets once before training instead of failing at the first validation."""
    from ..data import build_dataset

    return [(name, ds_cfg, build_dataset(ds_cfg)) for name, ds_cfg in _dataset_cfgs(cfg, split)]


@dataclass
class DatasetPredictions:
    """Everything one dataset's evaluation needs, collected in one pass over the images."""

    gt: List[CocoImage] = field(default_factory=list)
    dets: Dict[Any, CocoDetections] = field(default_factory=dict)
    wider: Dict[Tuple[str, str], np.ndarray] = field(default_factory=dict)
    nme: Optional[NMEAccumulator] = None
    agreement: Optional[NMEAccumulator] = None  # keypoints against eval.kpt_reference's confident faces
    nme_reference: Optional[NMEAccumulator] = None  # eval.kpt_reference's own NME, for nme/common


class Evaluator:
    """Evaluates ``detector`` on ``cfg['data'][split]``; call :meth:`run` (or use :func:`evaluate`)."""

    def __init__(self, detector: Any, cfg: Mapping[str, Any], split: str = "val", progress: bool = True,
                 max_images: Optional[int] = None, save_preds: Optional[Union[str, os.PathLike]] = None,
                 vis_dir: Optional[Union[str, os.PathLike]] = None, num_vis: int = 8, vis_score_thr: float = 0.5,
                 backend: str = "auto", datasets: Optional[List[Tuple[str, Dict[str, Any], Any]]] = None) -> None:
        """``vis_dir``: write the first ``num_vis`` images of each dataset as PNGs with the ground truth
        (green; ignored faces grey) and the detections scoring at least ``vis_score_thr`` (red) drawn.
        ``backend``: one of :data:`BACKENDS` (see the module docstring). ``datasets``: :func:`eval_datasets` of
        ``cfg`` already built (the trainer's, reused every validation); built from ``cfg`` by default."""
        if backend not in BACKENDS:
            raise ValueError(f"Evaluator: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.detector = detector
        self.cfg = cfg
        self.split = split
        self.progress = progress
        self.max_images = max_images
        self.save_preds = Path(save_preds) if save_preds else None
        self.vis_dir = Path(vis_dir) if vis_dir else None
        self.num_vis, self.vis_score_thr = int(num_vis), float(vis_score_thr)
        self.vis_written: List[Path] = []
        self.datasets = datasets
        self.opts = options.eval_options(cfg)
        self.wider_results: Dict[str, WiderResult] = {}
        self.backend = resolve_backend(backend, detector, self.opts["test_scale"])
        self._predictors: Dict[Optional[Tuple[int, int]], Predict] = {}
        self._fused: Any = None
        self._tmp: Optional[tempfile.TemporaryDirectory] = None
        self.reference = self._reference_evaluator(backend)

    def _reference_evaluator(self, backend: str) -> Optional["Evaluator"]:
        """``eval.kpt_reference``: the same model with other weights (the starting model of a fine-tune), run on
        the same images, so keypoints can be checked where the data has no keypoint labels."""
        weights = self.opts["kpt_reference"]
        if not weights:
            return None
        from ..models.build import build_detector

        param = next(self.detector.parameters(), None) if hasattr(self.detector, "parameters") else None
        ref = build_detector(self.cfg, weights=weights, device=param.device if param is not None else "cpu")
        ref_cfg = {**self.cfg, "eval": {**self.opts, "kpt_reference": None}}  # same blending as the evaluated model
        return Evaluator(ref, ref_cfg, split=self.split, progress=False, backend=backend)

    # -- settings --------------------------------------------------------------------------------
    def _input_size(self, image: np.ndarray) -> Optional[Tuple[int, int]]:
        scale = self.opts["test_scale"]
        if scale is None:
            return None
        if isinstance(scale, str):
            if scale != "original":
                raise ConfigError(f"eval.test_scale must be null, [H, W] or 'original', got {scale!r}")
            stride = max(getattr(getattr(self.detector, "backbone", None), "strides", None) or [16])
            h, w = image.shape[:2]
            return int(math.ceil(h / stride) * stride), int(math.ceil(w / stride) * stride)
        if isinstance(scale, (int, float)):
            return int(scale), int(scale)
        return int(scale[0]), int(scale[1])

    @property
    def settings(self) -> Dict[str, Any]:
        """What the numbers were measured at (printed and written next to the metrics)."""
        post = getattr(self.detector, "postprocess", None)
        thr = self.opts["score_thr"] if self.opts["score_thr"] is not None else getattr(post, "score_thr", None)
        scale = self.opts["test_scale"]
        if scale is None:
            size = (self.cfg.get("model") or {}).get("input_size")
            scale = f"{size[0]}x{size[1]} (model input)" if size else "model input"
        elif not isinstance(scale, str):
            scale = f"{scale[0]}x{scale[1]}" if isinstance(scale, (list, tuple)) else f"{scale}x{scale}"
        return {"settings/score_thr": thr, "settings/test_scale": scale, "settings/max_det": self.opts["max_det"],
                "settings/coco_max_dets": list(self.opts["max_dets"]), "settings/split": self.split,
                "settings/wider_iou_mode": self.opts["wider_iou_mode"], "settings/backend": self.backend}

    # -- running ---------------------------------------------------------------------------------
    def run(self) -> Dict[str, float]:
        results: Dict[str, float] = {}
        was_training = getattr(self.detector, "training", False)
        if hasattr(self.detector, "eval"):
            self.detector.eval()
        try:
            for name, ds_cfg, dataset in self.datasets or eval_datasets(self.cfg, self.split):
                prefix = f"{name}/" if name else ""
                metrics = self._evaluate_dataset(name, ds_cfg, dataset)
                results.update({prefix + k: v for k, v in metrics.items()})
        finally:
            if was_training and hasattr(self.detector, "train"):
                self.detector.train()
            self._predictors.clear()  # the fused copy / ONNX session hold the weights of this call only
            self._fused = None
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
        return results

    def _predict(self, images: List[np.ndarray]) -> List[Dict[str, np.ndarray]]:
        """Predictions per input size, with the evaluation score threshold and detection cap."""
        import torch

        kwargs = {k: self.opts[k] for k in ("score_thr", "max_det") if self.opts[k] is not None}
        sizes = [self._input_size(im) for im in images]
        outs: List[Optional[Dict[str, np.ndarray]]] = [None] * len(images)
        with torch.no_grad():
            for size in dict.fromkeys(sizes):  # one call per input size
                idx = [i for i, s in enumerate(sizes) if s == size]
                for i, r in zip(idx, self._predictor(size)([images[i] for i in idx], **kwargs)):
                    outs[i] = r
        return outs  # type: ignore[return-value]

    def _predictor(self, size: Optional[Tuple[int, int]]) -> Predict:
        if size not in self._predictors:
            self._predictors[size] = self._build_predictor(size)
        return self._predictors[size]

    def _build_predictor(self, size: Optional[Tuple[int, int]]) -> Predict:
        """The fast path for this input size (see the module docstring), else ``detector.predict``."""
        from ..deploy.fastpath import FastDetector, LeanPostprocessor
        from ..deploy.runtime import preprocessor_for

        det = self.detector
        full = tuple(size) if size is not None else tuple(getattr(det, "input_size", ()) or ())
        try:
            post = LeanPostprocessor.from_detector(det, full) if full and hasattr(det, "raw") else None
        except (ValueError, AttributeError):  # another coder or post-processor: its own predict knows it
            post = None
        if post is not None and hasattr(det, "check_input_size"):
            det.check_input_size(full)  # the same refusal as detector.predict's (e.g. not a multiple of the stride)
        if post is None:
            import inspect

            extra = {} if size is None else {"input_size": size}
            takes = inspect.signature(det.predict).parameters

            def own_predict(images: Sequence[np.ndarray], **kwargs: Any) -> List[Dict[str, np.ndarray]]:
                return det.predict(images, **{k: v for k, v in kwargs.items() if k in takes}, **extra)

            return own_predict
        if self.backend == "onnxruntime":
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="blazekit_eval_")
            return onnx_predictor(det, Path(self._tmp.name) / f"raw_{full[0]}x{full[1]}.onnx", input_size=full).predict
        bs = max(1, int(self.opts["batch_size"]))
        return FastDetector(self._torch_runner(), preprocessor_for(det, input_size=full), post, micro_batch=bs).predict

    def _torch_runner(self) -> Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]:
        """``detector.raw`` with BatchNorm folded, channels-last on the CPU (faster depthwise convs there; measured
        by benchmarks/eval_speed.py)."""
        import torch

        from ..deploy.fuse import fuse_bn

        if self._fused is None:
            try:
                self._fused = fuse_bn(self.detector)  # a copy: the caller's model keeps its BN and memory format
            except RuntimeError:  # folding not verifiable, e.g. NaN weights after a diverged run: keep BN
                import copy

                self._fused = copy.deepcopy(self.detector).eval()
        fused = self._fused
        param = next(fused.parameters())
        device, dtype = param.device, param.dtype
        layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        fused.to(memory_format=layout)

        def run(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
            with torch.no_grad():
                t = torch.from_numpy(x).to(device=device, dtype=dtype).contiguous(memory_format=layout)
                reg, logits = fused.raw(t)
            return reg.float().cpu().numpy(), logits.float().cpu().numpy()

        return run

    def _evaluate_dataset(self, name: str, ds_cfg: Dict[str, Any], dataset: Any) -> Dict[str, float]:
        from tqdm import tqdm

        n = len(dataset) if self.max_images is None else min(len(dataset), int(self.max_images))
        collected = DatasetPredictions()
        score_thr = self.opts["score_thr"]
        bs = max(1, int(self.opts["batch_size"]))
        bar = tqdm(total=n, desc=f"eval {name or ds_cfg.get('type', '')}".strip(), disable=not self.progress,
                   unit="img", leave=False)

        # an unreadable image under on_bad_sample: skip is left out (load_sample gives None), never replaced by
        # another image, which would then be scored twice
        get = getattr(dataset, "load_sample", None) or dataset.__getitem__

        def load(start: int) -> List[Dict[str, Any]]:
            return [s for s in (get(i) for i in range(start, min(n, start + bs))) if s is not None]

        with ThreadPoolExecutor(1, thread_name_prefix="eval-load") as pool:  # the next batch loads meanwhile
            pending = pool.submit(load, 0)
            for start in range(0, n, bs):
                samples = pending.result()
                if start + bs < n:
                    pending = pool.submit(load, start + bs)
                preds = self._predict([s["image"] for s in samples])
                refs = self.reference._predict([s["image"] for s in samples]) if self.reference else [None] * len(preds)
                for s, p, r in zip(samples, preds, refs):
                    self._collect(collected, s, p, score_thr, r)
                    if self.vis_dir is not None and len(collected.gt) <= self.num_vis:
                        self._draw(name, s, p, collected.gt[-1].ignore)
                bar.update(min(n, start + bs) - start)
        bar.close()
        return self._metrics(name, ds_cfg, collected)

    def _collect(self, c: DatasetPredictions, sample: Mapping[str, Any], pred: Mapping[str, Any],
                 score_thr: Optional[float], ref: Optional[Mapping[str, Any]] = None) -> None:
        boxes = np.asarray(pred["boxes"], np.float64).reshape(-1, 4)
        scores = np.asarray(pred["scores"], np.float64).reshape(-1)
        kpts = pred.get("keypoints")
        if score_thr is not None:  # in case the post-processor has no score_thr to set
            keep = scores >= score_thr
            boxes, scores = boxes[keep], scores[keep]
            kpts = None if kpts is None else np.asarray(kpts)[keep]
        h, w = sample["image"].shape[:2]
        gt_boxes = np.asarray(sample["boxes"], np.float64).reshape(-1, 4)
        ignore = np.zeros(len(gt_boxes), bool)
        if sample.get("ignore") is not None:
            ignore |= np.asarray(sample["ignore"], bool).reshape(-1)
        extras = sample.get("extras") or {}
        if isinstance(extras, Mapping) and extras.get("invalid") is not None:
            ignore |= np.asarray(extras["invalid"], bool).reshape(-1)
        if self.opts["min_size"]:
            side = np.maximum(gt_boxes[:, 2] - gt_boxes[:, 0], gt_boxes[:, 3] - gt_boxes[:, 1])
            ignore |= side < float(self.opts["min_size"])
        image_id = sample.get("image_id", len(c.gt))
        c.gt.append(CocoImage(image_id=image_id, width=w, height=h, boxes=gt_boxes, ignore=ignore))
        c.dets[image_id] = CocoDetections(boxes=boxes, scores=scores)
        if sample.get("path"):
            c.wider[key_from_path(sample["path"])] = xyxy_to_wider(boxes, scores)
        vis = sample.get("keypoints_visible")
        if kpts is not None and vis is not None and np.asarray(vis).any():
            if c.nme is None:
                c.nme = NMEAccumulator()
            c.nme.add(gt_boxes, sample["keypoints"], vis, boxes, scores, kpts, gt_ignore=ignore)
            if ref is not None:
                if c.nme_reference is None:
                    c.nme_reference = NMEAccumulator()
                c.nme_reference.add(gt_boxes, sample["keypoints"], vis, np.asarray(ref["boxes"]).reshape(-1, 4),
                                    ref["scores"], ref["keypoints"], gt_ignore=ignore)
        if ref is not None and kpts is not None:
            if c.agreement is None:
                c.agreement = NMEAccumulator()
            face = np.asarray(ref["scores"]) >= REFERENCE_SCORE
            ref_kpts = np.asarray(ref["keypoints"], np.float64)[face]
            c.agreement.add(np.asarray(ref["boxes"])[face], ref_kpts, np.ones(ref_kpts.shape[:2], bool), boxes, scores,
                            kpts)

    def _draw(self, name: str, sample: Mapping[str, Any], pred: Mapping[str, Any], ignore: np.ndarray) -> None:
        """One PNG: ground truth green (ignored faces grey), detections >= vis_score_thr red with scores."""
        from ..drawing import draw_detections
        from ..io.images import save_image

        gt = np.asarray(sample["boxes"], np.float64).reshape(-1, 4)
        img = draw_detections(sample["image"], {"boxes": gt[~ignore]}, color=(0, 220, 0), draw_scores=False)
        img = draw_detections(img, {"boxes": gt[ignore]}, color=(160, 160, 160), draw_scores=False, copy=False)
        img = draw_detections(img, pred, score_thr=self.vis_score_thr, color=(255, 40, 40), copy=False)
        stem = Path(str(sample.get("path") or sample.get("image_id", len(self.vis_written)))).stem
        out = (self.vis_dir / name if name else self.vis_dir) / f"{len(self.vis_written):03d}_{stem}.png"
        save_image(out, img)
        self.vis_written.append(out)

    def _wider_gt_dir(self, ds_cfg: Mapping[str, Any]) -> Optional[Path]:
        if self.opts["wider_gt_dir"]:
            return Path(expand_env(self.opts["wider_gt_dir"]))
        if str(ds_cfg.get("type", "")).lower().replace("_", "") != "widerface" or not ds_cfg.get("root"):
            return None
        return Path(ds_cfg["root"]) / "eval_tools" / "ground_truth"

    def _metrics(self, name: str, ds_cfg: Mapping[str, Any], c: DatasetPredictions) -> Dict[str, float]:
        out = {f"coco/{k}": v for k, v in evaluate_coco(c.gt, c.dets, max_dets=self.opts["max_dets"]).items()}
        if self.save_preds is not None:  # every dataset: <event>/<name>.txt from each image's folder and name
            write_predictions(c.wider, self.save_preds / name if name else self.save_preds)
        gt_dir = self._wider_gt_dir(ds_cfg)
        if gt_dir is not None:
            if (gt_dir / "wider_face_val.mat").is_file():
                gt = load_wider_gt(gt_dir)
                if self.max_images is not None or len(c.wider) < len(gt.keys):
                    gt = subset_ground_truth(gt, c.wider.keys())
                res = evaluate_wider(c.wider, gt, iou_mode=self.opts["wider_iou_mode"])
                self.wider_results[name] = res
                out.update({f"wider/{k}": v for k, v in res.ap.items()})
            else:
                warnings.warn(f"WIDER ground truth {gt_dir}/wider_face_val.mat not found: no wider/easy|medium|hard "
                              "(set eval.wider_gt_dir to the official eval_tools/ground_truth folder)")
        if c.nme is not None:
            out.update(c.nme.result())
            if c.nme_reference is not None:
                out.update(common_nme(c.nme, c.nme_reference))
        if c.agreement is not None:
            errors = c.agreement.errors
            out.update({"kpt_agreement": float(np.median(errors)) if errors else float("nan"),
                        "kpt_agreement/mean": float(np.mean(errors)) if errors else float("nan"),
                        "kpt_agreement/faces_matched": float(len(errors)),
                        "kpt_agreement/faces": float(c.agreement.faces)})
        return out


def subset_ground_truth(gt: WiderGroundTruth, keys) -> WiderGroundTruth:
    """The ground truth of the evaluated images only (e.g. a quick run over the first N images)."""
    wanted = set(keys)
    idx = [i for i, k in enumerate(gt.keys) if k in wanted]
    return WiderGroundTruth(keys=[gt.keys[i] for i in idx], boxes=[gt.boxes[i] for i in idx],
                            keep={s: [v[i] for i in idx] for s, v in gt.keep.items()})


def evaluate(detector: Any, cfg: Mapping[str, Any], split: str = "val", progress: bool = True,
             max_images: Optional[int] = None, save_preds: Optional[Union[str, os.PathLike]] = None,
             vis_dir: Optional[Union[str, os.PathLike]] = None, num_vis: int = 8, backend: str = "torch",
             datasets: Optional[List[Tuple[str, Dict[str, Any], Any]]] = None) -> Dict[str, float]:
    """Evaluate ``detector`` on ``cfg['data'][split]``; flat ``{metric: value}`` (see the module docstring).

    ``cfg['eval']`` ``score_thr``/``max_det`` are passed to ``detector.predict`` (the model's own settings
    are untouched) and its train/eval mode is restored, so the trainer can call this between epochs.
    ``vis_dir``: also draw the first ``num_vis`` images of each dataset there (see :class:`Evaluator`);
    ``backend``: how the network runs (:data:`BACKENDS`, see the module docstring); ``torch`` by default because
    the trainer calls this with new weights every time, and an ONNX export per call costs more than it saves on
    a small validation set (``tools/eval.py`` defaults to ``auto``).
    """
    return Evaluator(detector, cfg, split=split, progress=progress, max_images=max_images, save_preds=save_preds,
                     vis_dir=vis_dir, num_vis=num_vis, backend=backend, datasets=datasets).run()


def format_table(results: Mapping[str, Any]) -> str:
    """Two-column text table of metrics (numbers to 4 decimals)."""
    rows = [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in results.items()]
    width = max((len(k) for k, _ in rows), default=6)
    line = "-" * (width + 12)
    return "\n".join([line, *(f"{k:<{width}}  {v:>8}" for k, v in rows), line])
