"""The BlazeFace detector: built parts in, raw outputs / losses / detections out.

``BlazeFace`` takes *built* modules (torchvision SSD style) and knows no config, registry or engine:
:mod:`blazekit.models.build` turns a config into one. The network is fully convolutional: ``raw`` /
``decode`` / ``predict`` run at any input size divisible by the total stride, with anchors made (and
cached) for it.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..boxes import box_iou
from ..coder import MediaPipeCoder
from ..errors import UserError
from ..losses import MultiBoxLoss
from ..matcher import IoUMatcher
from ..postprocess import WeightedBlending
from ..preprocess import letterbox, normalize

Size = Tuple[int, int]


class InputSizeError(UserError, ValueError):
    """An input size the network cannot tile exactly (not a multiple of its total stride); says which sizes fit."""


class Teacher(NamedTuple):
    """A frozen starting model's raw outputs on the training batch, for faces without keypoint labels.

    ``targets="face"``: each such face gets the keypoints the teacher itself would report for it: the
    score-weighted blend of its anchors that score >= ``min_score`` with a decoded box of IoU >= ``min_iou``
    with the face (MediaPipe's weighted NMS in miniature). They are then encoded for every anchor matched to the
    face like real labels, so all of a face's anchors agree; faces the teacher does not find get no keypoint term.
    ``targets="anchor"``: each matched anchor copies the teacher's raw keypoint outputs at that anchor, also where
    the teacher's anchor does not see the face (kept for comparison; see RESULTS.md).

    ``ignore_score``: anchors the teacher scores at least this high are ignored instead of being negatives. Box
    sets leave faces unlabelled (FDDB skips most small background faces); hard negative mining would otherwise
    teach the model to miss exactly the faces the starting model finds. ``score_weight``: every anchor the
    matcher calls background also learns the teacher's face probability (``loss_score``, a KL term; learning
    without forgetting), so what the labels do not cover stays as the starting model had it.
    ``positive_iou``: the anchors where the teacher finds a labelled face (score >= ``min_score``, decoded box IoU
    >= ``positive_iou``) are that face's positives too (``positive_mode="add"``), or instead of the matcher's
    (``"replace"``, the matcher's others are ignored; faces the teacher misses keep the matcher's). A peaky
    model (MediaPipe full range fires one or two anchors per face) otherwise has to re-learn which anchors
    answer for a face, and forgets what its data does not show.
    """

    regressors: Tensor                  # [B, A, 4+2K]
    logits: Tensor                      # [B, A, 1]
    weight: float = 1.0                 # multiplies the taught keypoints' loss
    targets: str = "face"
    min_score: float = 0.5
    min_iou: float = 0.4
    ignore_score: Optional[float] = None
    score_weight: float = 0.0           # > 0: anchors the labels call background learn the teacher's scores (LwF)
    positive_iou: Optional[float] = None
    positive_mode: str = "add"
Detections = Dict[str, np.ndarray]

DEFAULT_PREPROCESS = {"resize": "letterbox", "normalize": "minus_one_one", "pad_value": 0}


def as_size(value: Union[int, Sequence[int]], where: str) -> Size:
    """``128`` or ``[H, W]`` -> (H, W) ints."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected an int or [H, W], got {value!r}") from None
    return h, w


def check_levels(features: nn.Module, anchor_generator: Any, input_size: Size) -> List[int]:
    """The strides of the feature levels, after checking they are the anchor generator's levels.

    ``features`` is the module whose outputs feed the head (neck or backbone); its ``out_channels`` /
    ``strides`` attributes are checked when it has them (a ready-made module may not).
    """
    num_anchors = list(anchor_generator.num_anchors_per_level(input_size))
    anchor_strides = list(anchor_generator.strides_per_level())
    out_channels = list(getattr(features, "out_channels", []) or [])
    strides = list(getattr(features, "strides", []) or [])
    if out_channels and len(out_channels) != len(num_anchors):
        raise ValueError(
            f"model: the backbone gives {len(out_channels)} feature levels (out_channels={out_channels}, "
            f"strides={strides}) but model.anchors describes {len(num_anchors)} levels (anchors per location "
            f"{num_anchors}, strides {anchor_strides}); make model.anchors.strides match the backbone")
    if strides and strides != anchor_strides:
        raise ValueError(f"model: backbone strides {strides} differ from the anchor strides {anchor_strides} "
                         "(model.anchors.strides); every level needs anchors on its own grid")
    return strides or anchor_strides


class BlazeFace(nn.Module):
    """Single-class (face) SSD detector with keypoints, MediaPipe compatible.

    Args:
        backbone: images ``[B, 3, H, W]`` -> feature levels (high resolution first).
        head: feature levels -> ``(regressors [B, A, 4+2K], logits [B, A, 1])``.
        anchor_generator: ``anchors(size)`` / ``priors(size)`` / ``num_anchors_per_level(size)`` /
            ``strides_per_level()`` (:class:`blazekit.anchors.SSDAnchorGenerator`).
        coder, matcher, loss, postprocess: default to MediaPipe's coder, the IoU matcher, the MultiBox loss
            and MediaPipe's weighted blending.
        neck: optional module between backbone and head.
        input_size: (H, W) the model is trained at; ``predict`` letterboxes to it by default.
        preprocess: ``resize`` / ``normalize`` / ``pad_value`` of ``predict``'s letterbox.
        cfg: the ``model`` config section this detector was built from (:func:`blazekit.models.build.build_detector`
            attaches it); checkpoints store it and loading compares architectures with it. None for a
            detector assembled by hand.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, anchor_generator: Any, coder: Any = None,
                 matcher: Any = None, loss: Optional[nn.Module] = None, postprocess: Any = None, *,
                 neck: Optional[nn.Module] = None, input_size: Union[int, Sequence[int]] = (128, 128),
                 num_keypoints: int = 6, preprocess: Optional[Mapping[str, Any]] = None,
                 cfg: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        self.input_size: Size = as_size(input_size, "model.input_size")
        self.num_keypoints = int(num_keypoints)
        self.preprocess_cfg: Dict[str, Any] = {**DEFAULT_PREPROCESS, **(preprocess or {})}
        self.cfg = cfg
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.anchor_generator = anchor_generator
        self.coder = coder if coder is not None else MediaPipeCoder()
        self.matcher = matcher if matcher is not None else IoUMatcher()
        self.loss = loss if loss is not None else MultiBoxLoss()
        self.postprocess = postprocess if postprocess is not None else WeightedBlending()
        self.strides = check_levels(neck if neck is not None else backbone, anchor_generator, self.input_size)
        # the backbone may go deeper than the levels the head sees (full range: stride 32 up to a stride-4 level)
        self.total_stride = max(self.strides + [int(s) for s in getattr(backbone, "strides", None) or []])

        self.check_input_size(self.input_size)
        a, p = self._make_anchors(self.input_size)
        self.register_buffer("anchors", a, persistent=False)
        self.register_buffer("priors", p, persistent=False)
        self._anchor_cache: Dict[Tuple[int, int, str], Tuple[Tensor, Tensor]] = {}

    # ------------------------------------------------------------------ anchors per input size
    def _make_anchors(self, size: Size) -> Tuple[Tensor, Tensor]:
        a = torch.as_tensor(self.anchor_generator.anchors(size), dtype=torch.float32)
        p = torch.as_tensor(self.anchor_generator.priors(size), dtype=torch.float32)
        return a, p

    def check_input_size(self, size: Size, where: str = "input size (H, W)") -> None:
        """Refuse sizes the backbone cannot tile exactly (every level's grid must match its anchors), naming the
        nearest sizes that fit; ``where`` names the setting in the message (``--input-size``)."""
        m = self.total_stride
        if size[0] % m or size[1] % m or min(size) <= 0:
            near = sorted({max(m, int(v) // m * m) for v in size} | {max(m, -(-int(v) // m) * m) for v in size})
            raise InputSizeError(
                f"{where} {size[0]} {size[1]}: expected H and W divisible by {m}, the total stride of this model "
                f"(near: {', '.join(map(str, near))}; the model's own size: {self.input_size[0]} {self.input_size[1]})")

    def anchors_for(self, size: Union[int, Sequence[int]]) -> Tuple[Tensor, Tensor]:
        """(anchors, priors) [A, 4] for an input size, on the model's device; cached per size."""
        size = as_size(size, "input_size")
        if size == self.input_size:
            return self.anchors, self.priors
        key = (size[0], size[1], str(self.anchors.device))
        if key not in self._anchor_cache:
            self.check_input_size(size)
            a, p = self._make_anchors(size)
            self._anchor_cache[key] = (a.to(self.anchors.device), p.to(self.anchors.device))
        return self._anchor_cache[key]

    def coding_anchors(self, size: Union[int, Sequence[int]]) -> Tensor:
        """What the coder encodes against: MediaPipe's anchors, or the real-scale priors (SSD coder)."""
        a, p = self.anchors_for(size)
        return p if getattr(self.coder, "uses_priors", False) else a

    # ------------------------------------------------------------------ network
    def nonfinite_layer(self) -> Optional[str]:
        """The first layer whose output is NaN/Inf on a fixed test input at ``input_size`` (eval mode), or None when
        the outputs are finite. Finite weights can still overflow (a diverged run), so loading weights and writing
        checkpoints ask this; every module's train/eval mode is left as it was."""
        found: List[str] = []

        def watch(name: str) -> Any:
            def hook(module: nn.Module, inputs: Any, output: Any) -> None:
                if not found and isinstance(output, Tensor) and output.is_floating_point() \
                        and not bool(torch.isfinite(output).all()):
                    found.append(name)
            return hook

        leaves = [(n, m) for n, m in self.named_modules() if n and next(m.children(), None) is None]
        handles = [m.register_forward_hook(watch(n)) for n, m in leaves]
        modes = [(m, m.training) for m in self.modules()]
        p = next(self.parameters())
        x = torch.rand(1, 3, *self.input_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
        try:
            self.eval()
            with torch.no_grad():
                reg, logits = self.raw(x.to(p.device, p.dtype))
        finally:
            for h in handles:
                h.remove()
            for m, mode in modes:
                m.training = mode
        if bool(torch.isfinite(reg).all()) and bool(torch.isfinite(logits).all()):
            return None
        return found[0] if found else "the head"

    def raw(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Normalised images [B, 3, H, W] -> (regressors [B, A, 4+2K], logits [B, A, 1]), MediaPipe layout."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"BlazeFace.raw: expected images [B, 3, H, W], got shape {tuple(x.shape)}")
        if not torch.jit.is_tracing():
            self.check_input_size((int(x.shape[-2]), int(x.shape[-1])))
        feats = self.backbone(x)
        if self.neck is not None:
            feats = self.neck(feats)
        return self.head(feats)

    def forward(self, images: Tensor, targets: Optional[Sequence[Mapping[str, Any]]] = None,
                teacher: Optional[Teacher] = None) -> Union[Tuple[Tensor, Tensor], Dict[str, Tensor]]:
        """Without targets: :meth:`raw`. With targets (collated list): the loss dict (see :meth:`compute_loss`)."""
        if targets is None:
            return self.raw(images)
        if len(targets) != images.shape[0]:
            raise ValueError(f"BlazeFace: {images.shape[0]} images but {len(targets)} targets")
        regressors, logits = self.raw(images)
        return self.compute_loss(regressors, logits, targets, (int(images.shape[-2]), int(images.shape[-1])),
                                 teacher=teacher)

    def compute_loss(self, regressors: Tensor, logits: Tensor, targets: Sequence[Mapping[str, Any]],
                     size: Size, teacher: Optional[Teacher] = None) -> Dict[str, Tensor]:
        """Match, encode and score. Target boxes / keypoints are in input pixels; normalised here.

        ``teacher`` (a frozen starting model's outputs on the same images, see :class:`Teacher`) gives the
        keypoint targets of faces whose keypoints are not labelled: box-only data then keeps the keypoints the
        model started with instead of letting them drift (self-distillation).
        """
        h, w = size
        dev, dt = regressors.device, regressors.dtype
        anchors, priors = self.anchors_for(size)
        k = self.num_keypoints
        norm = torch.tensor([w, h, w, h], dtype=dt, device=dev)
        boxes, ignore, kpts, vis = [], [], [], []
        for i, t in enumerate(targets):
            b = torch.as_tensor(t["boxes"], dtype=dt, device=dev).reshape(-1, 4)
            n = len(b)
            boxes.append(b / norm)
            ign = t.get("ignore")
            ignore.append(torch.zeros(n, dtype=torch.bool, device=dev) if ign is None
                          else torch.as_tensor(ign, dtype=torch.bool, device=dev).reshape(n))
            kp = t.get("keypoints")
            if kp is None or k == 0:
                kpts.append(torch.zeros(n, k, 2, dtype=dt, device=dev))
                vis.append(torch.zeros(n, k, dtype=torch.bool, device=dev))
                continue
            kp = torch.as_tensor(kp, dtype=dt, device=dev)
            if kp.numel() and kp.shape[-2:] != (k, 2) or (not kp.numel() and n):
                raise ValueError(f"targets[{i}]['keypoints'] has shape {tuple(kp.shape)}, expected [{n}, {k}, 2] "
                                 f"(model.num_keypoints={k})")
            kpts.append(kp.reshape(n, k, 2) / norm[:2])
            v = t.get("keypoints_visible")
            vis.append(torch.ones(n, k, dtype=torch.bool, device=dev) if v is None
                       else torch.as_tensor(v, dtype=torch.bool, device=dev).reshape(n, k))
        matches = self.matcher(priors, boxes, ignore)  # [B, A]
        b_pad, kp_pad, vis_pad = self._pad(boxes, kpts, vis)
        vis_w = vis_pad.to(dt)  # per-keypoint loss weights: 1 labelled, 0 none, teacher.weight taught
        face_mode = teacher is not None and k > 0 and teacher.targets == "face"
        background = matches == -1  # what the labels call background, before the teacher's ignores
        if teacher is not None and (face_mode or teacher.ignore_score is not None or teacher.positive_iou is not None):
            t_boxes, t_kpts, t_score = self._teacher_detections(teacher, size, dt)
            if face_mode or teacher.positive_iou is not None:
                t_iou = box_iou(b_pad, t_boxes)  # [B, N, A] labelled faces vs the teacher's boxes, used by both
            if teacher.positive_iou is not None:
                matches = self._teacher_positives(teacher, matches, ignore, t_iou, t_score)
                background = background & (matches < 0)
            if face_mode:
                kp_pad, vis_w = self._taught_face_keypoints(teacher, kp_pad, vis_pad, t_iou, t_kpts, t_score)
            if teacher.ignore_score is not None:
                matches = torch.where(background & (t_score >= teacher.ignore_score), torch.full_like(matches, -2),
                                      matches)
        idx = matches.clamp_min(0)
        gt_boxes = torch.gather(b_pad, 1, idx[..., None].expand(-1, -1, 4))
        gt_kpts = torch.gather(kp_pad, 1, idx[..., None, None].expand(-1, -1, k, 2))
        gt_vis = torch.gather(vis_w, 1, idx[..., None].expand(-1, -1, k))
        encoded = self.coder.encode(gt_boxes, gt_kpts, self.coding_anchors(size), input_size=size)
        if teacher is not None and k > 0 and not face_mode:
            learn = (matches >= 0)[..., None] & (gt_vis == 0)  # [B, A, K]: matched anchors, unlabelled keypoints
            taught = teacher.regressors.detach()[..., 4:].reshape(*learn.shape, 2).to(encoded.dtype)
            kp = torch.where(learn[..., None], taught, encoded[..., 4:].reshape(*learn.shape, 2))
            encoded = torch.cat([encoded[..., :4], kp.flatten(-2)], dim=-1)
            gt_vis = torch.where(learn, gt_vis.new_tensor(float(teacher.weight)), gt_vis)
        scale = self.coder.loss_scale(anchors, priors, input_size=size)
        out = self.loss(logits, regressors, matches, encoded, gt_vis, scale)
        if teacher is not None and teacher.score_weight > 0:
            out["loss_score"] = teacher.score_weight * self._score_distillation(logits, teacher.logits, matches,
                                                                                background)
            out["loss"] = out["loss"] + out["loss_score"]
        return out

    @staticmethod
    def _teacher_positives(teacher: Teacher, matches: Tensor, ignore: List[Tensor], iou: Tensor,
                           t_score: Tensor) -> Tensor:
        """``matches`` [B, A] with the anchors where the teacher finds a labelled face made its positives (see
        :class:`Teacher`); an anchor that fires for several faces goes to the one its box overlaps most. With
        ``add`` the matcher's positives keep their faces; with ``replace`` the teacher's assignment wins.
        ``iou`` [B, N, A]: the padded faces against the teacher's boxes (padding rows are all-zero boxes, IoU 0,
        so only ignored faces need masking)."""
        valid = torch.ones(iou.shape[:2], dtype=torch.bool, device=iou.device)  # [B, N] not ignored
        for i, ign in enumerate(ignore):
            valid[i, : len(ign)] = ~ign
        fire = (iou >= teacher.positive_iou) & (t_score[:, None, :] >= teacher.min_score) & valid[..., None]
        best, face = torch.where(fire, iou, torch.full_like(iou, -1.0)).max(1)  # [B, A]
        taught = best >= 0
        if teacher.positive_mode == "replace":
            found = fire.any(-1)  # [B, N] faces the teacher finds
            owner_found = torch.gather(found, 1, matches.clamp_min(0)) & (matches >= 0)
            matches = torch.where(owner_found & ~taught, torch.full_like(matches, -2), matches)
        take = taught if teacher.positive_mode == "replace" else taught & (matches < 0)
        return torch.where(take, face, matches)

    @staticmethod
    def _score_distillation(logits: Tensor, teacher_logits: Tensor, matches: Tensor, background: Tensor) -> Tensor:
        """Binary KL divergence from the teacher's face probability to the model's on the anchors the labels call
        background (``background``, the matcher's negatives, also those then ignored for the teacher), summed
        and divided by the positives like the other terms: away from labelled faces (background, and faces a
        box set leaves unlabelled) the model keeps the starting model's scores. Near a labelled face (positives
        and the matcher's ignore band) the labels decide: teacher scores there would keep the teacher's own
        peaks, whose boxes then blend into the face's box."""
        s = logits.reshape(matches.shape)
        t = teacher_logits.detach().reshape(matches.shape).to(s.dtype).sigmoid()
        entropy = F.binary_cross_entropy(t, t, reduction="none")  # the BCE's minimum: KL = BCE - entropy >= 0
        kl = F.binary_cross_entropy_with_logits(s, t, reduction="none") - entropy
        return torch.where(background, kl, torch.zeros_like(kl)).sum() / (matches >= 0).sum().clamp_min(1).to(s.dtype)

    def _teacher_detections(self, teacher: Teacher, size: Size, dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
        """The teacher's boxes [B, A, 4] and keypoints [B, A, K, 2], normalised like the targets, and scores
        [B, A] as this detector's post-processor reports them (one scoring path for training and inference), in
        the targets' ``dtype`` (under autocast the teacher's outputs may be half precision)."""
        h, w = size
        boxes, kpts, score = self.decode(teacher.regressors.detach().to(dtype), teacher.logits.detach().to(dtype),
                                         size)
        norm = boxes.new_tensor([w, h])
        return boxes / norm.repeat(2), kpts / norm, score

    @staticmethod
    def _taught_face_keypoints(teacher: Teacher, kp_pad: Tensor, vis_pad: Tensor, iou: Tensor, t_kpts: Tensor,
                               score: Tensor) -> Tuple[Tensor, Tensor]:
        """Fill the unlabelled keypoints of faces the teacher finds with its blended keypoints (normalised), and
        give them the weight ``teacher.weight``; returns (keypoints [B, N, K, 2], weights [B, N, K]).
        ``iou`` [B, N, A] is the faces' IoU with the teacher's decoded boxes, ``t_kpts`` [B, A, K, 2] and
        ``score`` [B, A] its decoded keypoints and scores."""
        dt = iou.dtype
        blend = torch.where((iou >= teacher.min_iou) & (score[:, None, :] >= teacher.min_score), score[:, None, :],
                            torch.zeros_like(iou))
        total = blend.sum(-1)  # [B, N]
        blended = torch.einsum("bna,bakc->bnkc", blend, t_kpts) / total.clamp_min(1e-12)[..., None, None]
        learn = (total > 0)[..., None] & ~vis_pad  # [B, N, K]
        kp = torch.where(learn[..., None], blended, kp_pad)
        weights = torch.where(learn, vis_pad.new_tensor(float(teacher.weight), dtype=dt), vis_pad.to(dt))
        return kp, weights

    @staticmethod
    def _pad(boxes: List[Tensor], kpts: List[Tensor], vis: List[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        n = max([len(b) for b in boxes] + [1])
        bsz, k = len(boxes), kpts[0].shape[1] if kpts else 0
        ref = boxes[0]
        b_pad = ref.new_zeros(bsz, n, 4)
        kp_pad = ref.new_zeros(bsz, n, k, 2)
        vis_pad = torch.zeros(bsz, n, k, dtype=torch.bool, device=ref.device)
        for i, (b, kp, v) in enumerate(zip(boxes, kpts, vis)):
            b_pad[i, : len(b)], kp_pad[i, : len(b)], vis_pad[i, : len(b)] = b, kp, v
        return b_pad, kp_pad, vis_pad

    # ------------------------------------------------------------------ inference
    def decode(self, regressors: Tensor, logits: Tensor,
               input_size: Optional[Union[int, Sequence[int]]] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Raw outputs -> (boxes [B, A, 4] xyxy, keypoints [B, A, K, 2], scores [B, A]) in input pixels.

        ``input_size`` defaults to ``model.input_size``; pass the actual size when running at another one.
        """
        size = self.input_size if input_size is None else as_size(input_size, "input_size")
        anchors = self.coding_anchors(size)
        if regressors.shape[-2] != anchors.shape[0]:
            raise ValueError(f"decode: {regressors.shape[-2]} anchors in the outputs but {anchors.shape[0]} for input "
                             f"size {size}; pass input_size=(H, W) of the images the outputs came from")
        boxes, kpts = self.coder.decode(regressors, anchors, input_size=size)
        h, w = size
        scale = boxes.new_tensor([w, h])
        scores = self.postprocess.scores(logits[..., 0]) if hasattr(self.postprocess, "scores") \
            else logits[..., 0].sigmoid()
        return boxes * scale.repeat(2), kpts * scale, scores

    @torch.no_grad()
    def predict(self, images: Union[np.ndarray, Sequence[np.ndarray]], score_thr: Optional[float] = None,
                max_det: Optional[int] = None, input_size: Optional[Union[int, Sequence[int]]] = None,
                batch_size: int = 32) -> List[Detections]:
        """HxWx3 uint8 RGB images -> per image ``{"boxes" [N, 4] xyxy, "scores" [N], "keypoints" [N, K, 2]}``
        in original-image pixels (numpy float32). Letterboxed to ``input_size`` (default ``model.input_size``)."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        size = self.input_size if input_size is None else as_size(input_size, "input_size")
        self.check_input_size(size)
        device = self.anchors.device
        pp = self.preprocess_cfg
        was_training = self.training
        self.eval()
        results: List[Detections] = []
        try:
            for start in range(0, len(images), max(1, int(batch_size))):
                chunk = images[start:start + batch_size]
                arrays, infos = [], []
                for j, img in enumerate(chunk):
                    if not isinstance(img, np.ndarray):
                        raise ValueError(f"predict: image {start + j} is {type(img).__name__}, expected an HxWx3 "
                                         "uint8 RGB numpy array")
                    try:
                        boxed, info = letterbox(img, size, pad_value=int(pp.get("pad_value", 0)),
                                                mode=pp.get("resize", "letterbox"))
                    except ValueError as exc:
                        raise ValueError(f"predict: image {start + j}: {exc}") from None
                    arrays.append(normalize(boxed, pp.get("normalize", "minus_one_one")))
                    infos.append(info)
                x = torch.from_numpy(np.stack(arrays)).to(device=device, dtype=self.anchors.dtype)
                regressors, logits = self.raw(x)
                boxes, kpts, scores = self.decode(regressors, logits, size)
                for i, info in enumerate(infos):
                    det = self.postprocess(boxes[i], scores[i], kpts[i], score_thr=score_thr, max_det=max_det)
                    kp = det["keypoints"].float().cpu().numpy()
                    results.append({
                        "boxes": info.to_original(det["boxes"].float().cpu().numpy()).reshape(-1, 4),
                        "scores": det["scores"].float().cpu().numpy().astype(np.float32),
                        "keypoints": info.to_original(kp.reshape(len(kp), -1 if len(kp) else 0)).reshape(kp.shape),
                    })
        finally:
            self.train(was_training)
        return results


def __getattr__(name: str) -> Any:
    """``build_detector`` / ``load_weights`` moved to :mod:`blazekit.models.build`; still importable from here."""
    if name in ("build_detector", "load_weights"):
        from . import build
        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BlazeFace", "as_size", "check_levels"]
