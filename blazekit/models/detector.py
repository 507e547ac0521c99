"""The BlazeFace detector: built parts in, raw outputs / losses / detections out.

``BlazeFace`` takes *built* modules (torchvision SSD style) and knows no config, registry or engine:
:mod:`blazekit.models.build` turns a config into one. Its loss is SSD's (match, encode, score); what a distillation
teacher adds to it lives beside it, in :mod:`blazekit.models.teacher`. The network is fully convolutional: ``raw`` /
``decode`` / ``predict`` run at any input size divisible by the total stride, with anchors made (and
cached) for it.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .. import options
from ..errors import UserError
from ..preprocess import letterbox, normalize
from .coder import MediaPipeCoder
from .losses import MultiBoxLoss
from .matcher import IoUMatcher
from .postprocess import WeightedBlending
from .teacher import TeacherOutputs, score_distillation, teach_anchor_keypoints, teach_targets

Teacher = TeacherOutputs  # the name it had when it lived here
Size = Tuple[int, int]
Detections = Dict[str, np.ndarray]

#: the parts a detector gets when its caller or its config names none (:mod:`blazekit.models.build` fills a
#: missing config section with ``{"type": <class name>}``, the name each is registered under): MediaPipe's box
#: coder, the IoU matcher, the SSD MultiBox loss and MediaPipe's weighted blending
DEFAULT_PARTS: Dict[str, type] = {"coder": MediaPipeCoder, "matcher": IoUMatcher, "loss": MultiBoxLoss,
                                  "postprocess": WeightedBlending}
#: ``predict``'s letterbox when ``model.preprocess`` leaves a key out: the defaults of its schema
DEFAULT_PREPROCESS: Dict[str, Any] = options.defaults(options.PREPROCESS)


class InputSizeError(UserError, ValueError):
    """An input size the network cannot tile exactly (not a multiple of its total stride); says which sizes fit."""


class FaceTargets(NamedTuple):
    """A batch's labelled faces, normalised to [0, 1]: per image for the matcher, padded to the most faces of an
    image (N, all-zero padding) for encoding."""

    boxes: List[Tensor]       # per image [N_i, 4] xyxy
    ignore: List[Tensor]      # per image [N_i] bool: neither positive nor negative
    padded_boxes: Tensor      # [B, N, 4]
    keypoints: Tensor         # [B, N, K, 2]
    keypoint_weights: Tensor  # [B, N, K] 1 labelled, 0 not (a teacher may give its own keypoints a weight)


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
            ``strides_per_level()`` (:class:`blazekit.models.anchors.SSDAnchorGenerator`).
        coder, matcher, loss, postprocess: None takes the part of :data:`DEFAULT_PARTS`.
        neck: optional module between backbone and head.
        input_size: (H, W) the model is trained at; ``predict`` letterboxes to it by default.
        preprocess: ``resize`` / ``normalize`` / ``pad_value`` of ``predict``'s letterbox (missing keys:
            :data:`DEFAULT_PREPROCESS`).
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
        given = {"coder": coder, "matcher": matcher, "loss": loss, "postprocess": postprocess}
        for name, part in given.items():
            setattr(self, name, part if part is not None else DEFAULT_PARTS[name]())
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
                teacher: Optional[TeacherOutputs] = None) -> Union[Tuple[Tensor, Tensor], Dict[str, Tensor]]:
        """Without targets: :meth:`raw`. With targets (collated list): the loss dict (see :meth:`compute_loss`)."""
        if targets is None:
            return self.raw(images)
        if len(targets) != images.shape[0]:
            raise ValueError(f"BlazeFace: {images.shape[0]} images but {len(targets)} targets")
        regressors, logits = self.raw(images)
        return self.compute_loss(regressors, logits, targets, (int(images.shape[-2]), int(images.shape[-1])),
                                 teacher=teacher)

    # ------------------------------------------------------------------ loss: match, encode, score
    def compute_loss(self, regressors: Tensor, logits: Tensor, targets: Sequence[Mapping[str, Any]],
                     size: Size, teacher: Optional[TeacherOutputs] = None) -> Dict[str, Tensor]:
        """SSD's loss: match the anchors to the labelled faces, encode each anchor's face, score the outputs against
        it (``loss``, ``loss_cls``, ``loss_box``, ``loss_kpt``, ``num_pos``). Target boxes / keypoints are in input
        pixels of ``size`` (H, W).

        ``teacher`` (a frozen starting model's outputs on the same images, see
        :class:`~blazekit.models.teacher.TeacherOutputs`) speaks where the labels are silent: keypoints of faces
        without keypoint labels, its own positives and ignored anchors, and ``loss_score`` on the background.
        """
        anchors, priors = self.anchors_for(size)
        gt = self.prepare_targets(targets, size, regressors.dtype, regressors.device)
        matches = self.matcher(priors, gt.boxes, gt.ignore)  # [B, A]: face index, -1 background, -2 ignored
        if teacher is not None:
            taught = teach_targets(teacher, matches, gt.padded_boxes, gt.ignore, gt.keypoints, gt.keypoint_weights,
                                   self.decode, size)
            matches = taught.matches
            gt = gt._replace(keypoints=taught.keypoints, keypoint_weights=taught.keypoint_weights)
        encoded, kpt_weights = self.encode_targets(gt, matches, size)
        if teacher is not None:
            encoded, kpt_weights = teach_anchor_keypoints(teacher, matches, encoded, kpt_weights)
        out = self.loss(logits, regressors, matches, encoded, kpt_weights,
                        self.coder.loss_scale(anchors, priors, input_size=size))
        if teacher is not None and teacher.score_weight > 0:
            out["loss_score"] = teacher.score_weight * score_distillation(logits, teacher.logits, matches,
                                                                          taught.background)
            out["loss"] = out["loss"] + out["loss_score"]
        return out

    def prepare_targets(self, targets: Sequence[Mapping[str, Any]], size: Size, dtype: torch.dtype,
                        device: torch.device) -> FaceTargets:
        """Collated targets (``boxes`` [N, 4] xyxy and ``keypoints`` [N, K, 2] in input pixels of ``size``,
        optional ``ignore`` [N] and ``keypoints_visible`` [N, K]) -> :class:`FaceTargets`, normalised."""
        h, w = size
        k = self.num_keypoints
        norm = torch.tensor([w, h, w, h], dtype=dtype, device=device)
        boxes, ignore, kpts, vis = [], [], [], []
        for i, t in enumerate(targets):
            b = torch.as_tensor(t["boxes"], dtype=dtype, device=device).reshape(-1, 4)
            n = len(b)
            boxes.append(b / norm)
            ign = t.get("ignore")
            ignore.append(torch.zeros(n, dtype=torch.bool, device=device) if ign is None
                          else torch.as_tensor(ign, dtype=torch.bool, device=device).reshape(n))
            kp = t.get("keypoints")
            if kp is None or k == 0:
                kpts.append(torch.zeros(n, k, 2, dtype=dtype, device=device))
                vis.append(torch.zeros(n, k, dtype=torch.bool, device=device))
                continue
            kp = torch.as_tensor(kp, dtype=dtype, device=device)
            if kp.numel() and kp.shape[-2:] != (k, 2) or (not kp.numel() and n):
                raise ValueError(f"targets[{i}]['keypoints'] has shape {tuple(kp.shape)}, expected [{n}, {k}, 2] "
                                 f"(model.num_keypoints={k})")
            kpts.append(kp.reshape(n, k, 2) / norm[:2])
            v = t.get("keypoints_visible")
            vis.append(torch.ones(n, k, dtype=torch.bool, device=device) if v is None
                       else torch.as_tensor(v, dtype=torch.bool, device=device).reshape(n, k))
        n = max([len(b) for b in boxes] + [1])
        padded_boxes = norm.new_zeros(len(boxes), n, 4)
        padded_kpts = norm.new_zeros(len(boxes), n, k, 2)
        weights = norm.new_zeros(len(boxes), n, k)
        for i, (b, kp, v) in enumerate(zip(boxes, kpts, vis)):
            padded_boxes[i, : len(b)], padded_kpts[i, : len(b)], weights[i, : len(b)] = b, kp, v
        return FaceTargets(boxes, ignore, padded_boxes, padded_kpts, weights)

    def encode_targets(self, gt: FaceTargets, matches: Tensor, size: Size) -> Tuple[Tensor, Tensor]:
        """Each anchor's matched face, encoded by the coder ([B, A, 4+2K]; any value on unmatched anchors), and its
        keypoint weights [B, A, K]."""
        k = self.num_keypoints
        idx = matches.clamp_min(0)
        boxes = torch.gather(gt.padded_boxes, 1, idx[..., None].expand(-1, -1, 4))
        kpts = torch.gather(gt.keypoints, 1, idx[..., None, None].expand(-1, -1, k, 2))
        weights = torch.gather(gt.keypoint_weights, 1, idx[..., None].expand(-1, -1, k))
        return self.coder.encode(boxes, kpts, self.coding_anchors(size), input_size=size), weights

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


__all__ = ["BlazeFace", "DEFAULT_PARTS", "DEFAULT_PREPROCESS", "FaceTargets", "InputSizeError", "Teacher",
           "TeacherOutputs", "as_size", "check_levels"]
