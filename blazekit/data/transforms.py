"""Sample transforms: ``sample dict -> sample dict``, built from YAML through ``TRANSFORMS``.

Every geometric transform moves ``boxes``, ``keypoints`` and ``keypoints_visible`` together; faces are only
removed when their box leaves the image (with all their per-face fields), while keypoints that leave the
image stay in place and become invisible. Randomness comes from one ``numpy.random.Generator`` per
:class:`Compose`, seeded by the loader per worker, so a run is reproducible. Albumentations transforms are
available by name (``type: MotionBlur``); blazekit's own names (``HorizontalFlip``) take precedence because
they know about keypoint identities.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from ..preprocess import NORMALIZATIONS, letterbox, normalize
from ..registry import TRANSFORMS, BuildError, build

Sample = Dict[str, Any]
PER_FACE_KEYS = ("boxes", "labels", "keypoints", "keypoints_visible", "ignore")

#: MediaPipe order (right eye, left eye, nose, mouth, right ear, left ear) mirrored; also RetinaFace's 5 points
DEFAULT_FLIP_PERMUTATIONS = {6: [1, 0, 2, 3, 5, 4], 5: [1, 0, 2, 4, 3], 4: [1, 0, 2, 3], 0: []}


def select_faces(sample: Sample, keep: np.ndarray) -> Sample:
    """Keep only faces where ``keep`` is True, in every per-face field (extras included)."""
    for k in PER_FACE_KEYS:
        if k in sample:
            sample[k] = sample[k][keep]
    if sample.get("extras"):
        sample["extras"] = {k: np.asarray(v)[keep] for k, v in sample["extras"].items()}
    return sample


def mark_outside_invisible(sample: Sample) -> Sample:
    """Keypoints outside the current image become invisible (their coordinates are kept)."""
    h, w = sample["image"].shape[:2]
    k = sample["keypoints"]
    inside = (k[..., 0] >= 0) & (k[..., 0] < w) & (k[..., 1] >= 0) & (k[..., 1] < h)
    sample["keypoints_visible"] = sample["keypoints_visible"] & inside
    return sample


class Transform:
    """Base class: ``rng`` is replaced by :class:`Compose` so one seeded stream drives the pipeline."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng()

    def __call__(self, sample: Sample) -> Sample:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "rng" and not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose:
    """Apply transforms in order; owns the random generator the random ones share."""

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]], seed: Optional[int] = None) -> None:
        self.transforms = list(transforms)
        self.reseed(seed)

    def reseed(self, seed: Optional[int]) -> None:
        """Restart the random stream (called per DataLoader worker with a seed derived from the run seed)."""
        self.rng = np.random.default_rng(seed)
        for t in self.transforms:
            if isinstance(t, Transform):
                t.rng = self.rng

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        return "Compose([\n  " + ",\n  ".join(repr(t) for t in self.transforms) + "\n])"


@TRANSFORMS.register()
class RandomFaceCrop(Transform):
    """RetinaFace/SSD-style random crop that keeps faces.

    A crop of side ``scale * min(h, w)`` (``scale`` uniform in ``scales``; square unless ``square: false``, then
    each side is scaled independently) is placed at random; it is accepted when at least ``min_faces`` non-ignored
    faces have their centre inside. Faces whose centre falls outside are removed, the others clipped; after
    ``max_tries`` failures the sample is returned unchanged. Images without faces are cropped freely.
    """

    def __init__(self, scales: Sequence[float] = (0.3, 1.0), square: bool = True, min_faces: int = 1,
                 max_tries: int = 50, p: float = 1.0) -> None:
        super().__init__()
        lo, hi = float(scales[0]), float(scales[1])
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"RandomFaceCrop: scales must satisfy 0 < min <= max <= 1, got {list(scales)}")
        self.scales, self.square, self.min_faces, self.max_tries, self.p = (lo, hi), square, min_faces, max_tries, p

    def __call__(self, sample: Sample) -> Sample:
        if self.rng.random() >= self.p:
            return sample
        h, w = sample["image"].shape[:2]
        boxes = sample["boxes"]
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        countable = ~sample.get("ignore", np.zeros(len(boxes), bool))
        need = min(self.min_faces, int(countable.sum()))
        for _ in range(self.max_tries):
            s = self.rng.uniform(*self.scales)
            cw = ch = max(1, int(round(s * min(h, w))))
            if not self.square:
                cw = max(1, int(round(s * w)))
                ch = max(1, int(round(self.rng.uniform(*self.scales) * h)))
            x0 = int(self.rng.integers(0, w - cw + 1))
            y0 = int(self.rng.integers(0, h - ch + 1))
            inside = ((centres[:, 0] > x0) & (centres[:, 0] < x0 + cw) &
                      (centres[:, 1] > y0) & (centres[:, 1] < y0 + ch))
            if int((inside & countable).sum()) >= need:
                return crop_sample(sample, x0, y0, cw, ch, keep=inside)
        return sample


def crop_sample(sample: Sample, x0: int, y0: int, cw: int, ch: int, keep: Optional[np.ndarray] = None) -> Sample:
    """Crop the image to ``[x0, x0+cw) x [y0, y0+ch)``; shift, clip and filter the faces consistently."""
    sample = dict(sample)
    sample["image"] = np.ascontiguousarray(sample["image"][y0:y0 + ch, x0:x0 + cw])
    boxes = sample["boxes"] - np.array([x0, y0, x0, y0], np.float32)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, cw)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, ch)
    sample["boxes"] = boxes
    sample["keypoints"] = sample["keypoints"] - np.array([x0, y0], np.float32)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if keep is not None:
        valid &= keep
    sample = select_faces(sample, valid)
    return mark_outside_invisible(sample)


Fill = Union[int, float, Sequence[float], str, None]


def fill_colour(image: np.ndarray, fill: Fill, pad_value: int = 0) -> Tuple[float, float, float]:
    """The RGB colour of new canvas area: ``fill`` (a grey level or [R, G, B]), ``"mean"`` (the image's
    per-channel mean, as SSD fills with the dataset mean), or None (the model's ``pad_value``)."""
    if fill is None:
        fill = pad_value
    if isinstance(fill, str):
        if fill != "mean":
            raise ValueError(f"fill must be a number, [R, G, B], 'mean' or null, got {fill!r}")
        return tuple(float(v) for v in image.reshape(-1, image.shape[-1]).mean(0))  # type: ignore[return-value]
    values = [float(v) for v in np.broadcast_to(np.asarray(fill, np.float32), (3,))]
    return values[0], values[1], values[2]


def place_sample(sample: Sample, scale: float, tx: float, ty: float, out_w: int, out_h: int,
                 fill: Tuple[float, float, float]) -> Sample:
    """Scale the image by ``scale``, put its top-left corner at ``(tx, ty)`` of a new ``out_w x out_h`` canvas
    painted ``fill``, and move the faces with it (one mapping ``x -> scale * x + t`` for pixels, boxes and
    keypoints). Faces whose box centre leaves the canvas are removed, the others clipped; keypoints that leave
    become invisible. Zoom-out, face-size crops and mosaic tiles are all this one operation.
    """
    image = sample["image"]
    h, w = image.shape[:2]
    if scale < 1:  # shrink with area averaging (no aliasing), then paste at a whole-pixel offset
        nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
        small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA) if (nw, nh) != (w, h) else image
        sx, sy, tx, ty = nw / w, nh / h, float(round(tx)), float(round(ty))
        canvas = np.empty((out_h, out_w, image.shape[2]), image.dtype)
        canvas[:] = np.asarray(fill, np.float32).round().astype(image.dtype)
        x0, y0 = int(tx), int(ty)
        xs, ys = max(0, -x0), max(0, -y0)
        xe, ye = min(nw, out_w - x0), min(nh, out_h - y0)
        if xe > xs and ye > ys:
            canvas[y0 + ys:y0 + ye, x0 + xs:x0 + xe] = small[ys:ye, xs:xe]
    else:  # only the output window is computed; OpenCV maps pixel indices, so shift by the half-pixel term
        sx = sy = float(scale)
        m = np.array([[sx, 0, tx + 0.5 * (sx - 1)], [0, sy, ty + 0.5 * (sy - 1)]], np.float64)
        whole = sx == 1 and float(tx).is_integer() and float(ty).is_integer()  # a pure shift: copy pixels
        interp = cv2.INTER_NEAREST if whole else cv2.INTER_LINEAR
        canvas = cv2.warpAffine(image, m, (out_w, out_h), flags=interp, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=tuple(float(v) for v in fill))
        if canvas.ndim == 2:
            canvas = canvas[..., None]
    sample = _scale_pad(dict(sample), sx, sy, tx, ty)
    sample["image"] = np.ascontiguousarray(canvas)
    boxes = sample["boxes"]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = (centres[:, 0] > 0) & (centres[:, 0] < out_w) & (centres[:, 1] > 0) & (centres[:, 1] < out_h)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, out_w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, out_h)
    keep = inside & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return mark_outside_invisible(select_faces(sample, keep))


@TRANSFORMS.register()
class Expand(Transform):
    """SSD zoom-out: put the image on a canvas ``ratio`` times larger (uniform in ``ratio``), at a random place.

    After the final Letterbox every face is ``ratio`` times smaller, which teaches the small faces a 128 px
    model mostly misses. ``fill``: grey level, [R, G, B], ``"mean"`` (the image's mean colour) or null (the
    model's ``pad_value``). Nothing leaves the canvas, so every face and keypoint visibility is kept.
    """

    def __init__(self, ratio: Sequence[float] = (1.0, 3.0), p: float = 0.5, fill: Fill = None,
                 pad_value: int = 0) -> None:
        super().__init__()
        lo, hi = float(ratio[0]), float(ratio[1])
        if not 1 <= lo <= hi:
            raise ValueError(f"Expand: ratio must satisfy 1 <= min <= max, got {list(ratio)}")
        fill_colour(np.zeros((1, 1, 3), np.uint8), fill)  # refuse a bad fill when building, not mid-epoch
        self.ratio, self.p, self.fill, self.pad_value = (lo, hi), p, fill, int(pad_value)

    def __call__(self, sample: Sample) -> Sample:
        if self.rng.random() >= self.p:
            return sample
        h, w = sample["image"].shape[:2]
        r = self.rng.uniform(*self.ratio)
        ow, oh = int(round(w * r)), int(round(h * r))
        x0, y0 = int(self.rng.integers(0, ow - w + 1)), int(self.rng.integers(0, oh - h + 1))
        return place_sample(sample, 1.0, x0, y0, ow, oh, fill_colour(sample["image"], self.fill, self.pad_value))


@TRANSFORMS.register()
class DataAnchorSampling(Transform):
    """PyramidBox data-anchor-sampling: rescale so one face gets an anchor's size, then crop the input window.

    A random non-ignored face of size ``s = sqrt(w * h)`` is picked; ``i`` is the index of the anchor size
    nearest to ``s`` and a target anchor ``a`` is drawn from ``anchor_sizes[0 .. i + 1]`` (so faces are
    shrunk freely but enlarged by at most one step: upscaled faces are blurry), the target size uniform in
    ``[a / 2, 2 a]`` but at most the window's shorter side (so the face fits). The image is scaled by
    ``target / s`` and an ``input_size`` window containing that face is cut out (inside the image where
    possible, else padded with ``fill``). ``anchor_sizes`` are pixels of the network input: run Letterbox
    after it (a no-op resize then) so the face keeps that size.
    """

    def __init__(self, anchor_sizes: Sequence[float] = (16, 32, 64, 128), p: float = 0.5,
                 input_size: Sequence[int] = (128, 128), fill: Fill = None, pad_value: int = 0) -> None:
        super().__init__()
        sizes = sorted(float(a) for a in anchor_sizes)
        if not sizes or sizes[0] <= 0:
            raise ValueError(f"DataAnchorSampling: anchor_sizes must be positive pixel sizes, got {list(anchor_sizes)}")
        fill_colour(np.zeros((1, 1, 3), np.uint8), fill)
        self.anchor_sizes, self.p, self.fill, self.pad_value = sizes, p, fill, int(pad_value)
        self.input_size = [int(v) for v in input_size]

    def __call__(self, sample: Sample) -> Sample:
        if self.rng.random() >= self.p:
            return sample
        boxes = sample["boxes"]
        wh = boxes[:, 2:] - boxes[:, :2]
        candidates = np.flatnonzero(~sample.get("ignore", np.zeros(len(boxes), bool)) & (wh > 0).all(1))
        if not len(candidates):
            return sample
        f = int(candidates[self.rng.integers(len(candidates))])
        size = float(np.sqrt(wh[f, 0] * wh[f, 1]))
        anchors = np.asarray(self.anchor_sizes)
        nearest = int(np.abs(anchors - size).argmin())
        a = anchors[int(self.rng.integers(0, min(len(anchors) - 1, nearest + 1) + 1))]
        oh, ow = self.input_size
        scale = min(self.rng.uniform(a / 2, a * 2), min(oh, ow)) / size
        h, w = sample["image"].shape[:2]
        x0 = self._window_start(boxes[f, 0] * scale, boxes[f, 2] * scale, w * scale, ow)
        y0 = self._window_start(boxes[f, 1] * scale, boxes[f, 3] * scale, h * scale, oh)
        return place_sample(sample, scale, -x0, -y0, ow, oh, fill_colour(sample["image"], self.fill, self.pad_value))

    def _window_start(self, f1: float, f2: float, extent: float, out: int) -> int:
        """Left (top) edge of an ``out``-wide window holding [f1, f2], inside [0, extent] where possible.

        In Python floats: numpy float32 scalars compare with Python floats at float32 precision (NEP 50), so a
        face touching the image edge could pass the overlap test below and then give ``uniform`` an empty range."""
        f1, f2, extent = float(f1), float(f2), float(extent)
        lo, hi = f2 - out, f1  # the face fits
        if lo > hi:  # face bigger than the window: centre it
            return int(np.floor((f1 + f2 - out) / 2))
        a, b = min(0.0, extent - out), max(0.0, extent - out)  # the window covers image only (or all of it)
        if max(lo, a) <= min(hi, b):
            lo, hi = max(lo, a), min(hi, b)
        return int(np.floor(self.rng.uniform(lo, hi)))


@TRANSFORMS.register()
class HorizontalFlip(Transform):
    """Mirror left-right; keypoints swap identities by ``flip_permutation`` (default for K=6: [1, 0, 2, 3, 5, 4])."""

    def __init__(self, p: float = 0.5, flip_permutation: Optional[Sequence[int]] = None, num_keypoints: int = 6) -> None:
        super().__init__()
        if flip_permutation is None:
            if num_keypoints not in DEFAULT_FLIP_PERMUTATIONS:
                raise ValueError(f"HorizontalFlip: no default flip_permutation for {num_keypoints} keypoints; "
                                 "give flip_permutation (index of each keypoint's mirror partner)")
            flip_permutation = DEFAULT_FLIP_PERMUTATIONS[num_keypoints]
        perm = [int(i) for i in flip_permutation]
        if sorted(perm) != list(range(len(perm))):
            raise ValueError(f"HorizontalFlip: flip_permutation {perm} is not a permutation of 0..{len(perm) - 1}")
        self.p, self.flip_permutation = p, perm

    def __call__(self, sample: Sample) -> Sample:
        if self.rng.random() >= self.p:
            return sample
        sample = dict(sample)
        w = sample["image"].shape[1]
        sample["image"] = np.ascontiguousarray(sample["image"][:, ::-1])
        b = sample["boxes"]
        sample["boxes"] = np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], axis=1).astype(np.float32)
        k = sample["keypoints"].copy()
        if k.shape[1] != len(self.flip_permutation):
            raise ValueError(f"HorizontalFlip: samples have {k.shape[1]} keypoints but flip_permutation has "
                             f"{len(self.flip_permutation)} entries")
        k[..., 0] = w - k[..., 0]
        sample["keypoints"] = k[:, self.flip_permutation]
        sample["keypoints_visible"] = sample["keypoints_visible"][:, self.flip_permutation]
        return sample


def _scale_pad(sample: Sample, sx: float, sy: float, px: float, py: float) -> Sample:
    sample["boxes"] = (sample["boxes"] * np.array([sx, sy, sx, sy], np.float32)
                       + np.array([px, py, px, py], np.float32)).astype(np.float32)
    sample["keypoints"] = (sample["keypoints"] * np.array([sx, sy], np.float32)
                           + np.array([px, py], np.float32)).astype(np.float32)
    return sample


@TRANSFORMS.register()
class Letterbox(Transform):
    """Resize keeping the aspect ratio and pad to ``input_size`` [H, W] (:func:`blazekit.preprocess.letterbox`).

    Stores the :class:`~blazekit.preprocess.LetterboxInfo` as ``sample["letterbox"]`` so predictions can be
    mapped back to the image this transform received.
    """

    def __init__(self, input_size: Sequence[int] = (128, 128), pad_value: int = 0) -> None:
        super().__init__()
        self.input_size, self.pad_value = [int(v) for v in input_size], int(pad_value)

    def __call__(self, sample: Sample) -> Sample:
        sample = dict(sample)
        sample["image"], info = letterbox(sample["image"], self.input_size, pad_value=self.pad_value)
        sample["letterbox"] = info
        return mark_outside_invisible(_scale_pad(sample, info.scale, info.scale, info.pad_x, info.pad_y))


@TRANSFORMS.register()
class Resize(Transform):
    """Stretch to ``input_size`` [H, W] ignoring the aspect ratio (training only: faces get distorted).

    ``sample["letterbox"]`` is set only when the aspect ratio already matches; use :class:`Letterbox` for
    evaluation so predictions map back exactly.
    """

    def __init__(self, input_size: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        self.input_size = [int(v) for v in input_size]

    def __call__(self, sample: Sample) -> Sample:
        sample = dict(sample)
        h, w = sample["image"].shape[:2]
        oh, ow = self.input_size
        sx, sy = ow / w, oh / h
        interp = cv2.INTER_AREA if sx * sy < 1 else cv2.INTER_LINEAR
        sample["image"] = cv2.resize(sample["image"], (ow, oh), interpolation=interp)
        if abs(sx - sy) < 1e-6:
            from ..preprocess import LetterboxInfo

            sample["letterbox"] = LetterboxInfo(scale=sx, pad_x=0.0, pad_y=0.0, orig_h=h, orig_w=w)
        else:
            sample["letterbox"] = None
        return _scale_pad(sample, sx, sy, 0.0, 0.0)


@TRANSFORMS.register()
class PhotometricJitter(Transform):
    """SSD-style colour jitter on uint8 RGB: brightness (additive, fraction of 255), contrast, saturation
    (multiplicative ranges ``1 +- x``) and hue (degrees), each applied with probability ``p``."""

    def __init__(self, brightness: float = 0.125, contrast: float = 0.5, saturation: float = 0.5,
                 hue: float = 18.0, p: float = 0.5) -> None:
        super().__init__()
        self.brightness, self.contrast, self.saturation, self.hue, self.p = brightness, contrast, saturation, hue, p

    def __call__(self, sample: Sample) -> Sample:
        img = sample["image"].astype(np.float32)
        r = self.rng
        if self.brightness and r.random() < self.p:
            img += r.uniform(-self.brightness, self.brightness) * 255
        if self.contrast and r.random() < self.p:
            img *= r.uniform(1 - self.contrast, 1 + self.contrast)
        do_sat = self.saturation and r.random() < self.p
        do_hue = self.hue and r.random() < self.p
        if do_sat or do_hue:
            hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
            if do_sat:
                hsv[..., 1] *= r.uniform(1 - self.saturation, 1 + self.saturation)
            if do_hue:
                hsv[..., 0] = (hsv[..., 0] + r.uniform(-self.hue, self.hue) / 2) % 180  # OpenCV hue is degrees / 2
            img = cv2.cvtColor(np.clip(hsv, 0, [179, 255, 255]).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
        sample = dict(sample)
        sample["image"] = np.clip(img, 0, 255).astype(np.uint8)
        return sample


@TRANSFORMS.register()
class Normalize(Transform):
    """uint8 HxWx3 RGB -> float32 tensor [3, H, W] as the model expects (:func:`blazekit.preprocess.normalize`)."""

    def __init__(self, normalization: str = "minus_one_one") -> None:
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"Normalize: unknown normalization {normalization!r}; expected one of {sorted(NORMALIZATIONS)}")
        self.normalization = normalization

    def __call__(self, sample: Sample) -> Sample:
        sample = dict(sample)
        sample["image"] = torch.from_numpy(normalize(sample["image"], self.normalization))
        return sample


@TRANSFORMS.register()
class Albumentations(Transform):
    """Any albumentations transform by name, with boxes and keypoints carried through it.

    ``{type: MotionBlur, blur_limit: 5}`` in a transform list becomes ``Albumentations(transform="MotionBlur",
    blur_limit=5)``. Faces whose box albumentations removes are removed with all their fields; keypoints are
    never removed, only marked invisible when they leave the image.
    """

    def __init__(self, transform: str, **kwargs: Any) -> None:
        super().__init__()
        import albumentations as A

        if not hasattr(A, transform):
            raise BuildError(f"Albumentations: albumentations has no transform {transform!r}")
        self.transform, self.kwargs = transform, kwargs
        try:
            t = getattr(A, transform)(**kwargs)
        except Exception as exc:
            raise BuildError(f"Albumentations: building {transform}({kwargs}) failed: {exc}") from exc
        self._image_only = isinstance(t, A.ImageOnlyTransform)  # pixels only: geometry untouched
        if self._image_only:
            self._compose = A.Compose([t])
        else:
            self._compose = A.Compose([t], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["face_index"],
                                                                    clip=True),
                                      keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))

    def __call__(self, sample: Sample) -> Sample:
        sample = dict(sample)
        self._compose.set_random_seed(int(self.rng.integers(0, 2**31 - 1)))
        if self._image_only:
            sample["image"] = self._compose(image=sample["image"])["image"]
            return sample
        boxes, kpts = sample["boxes"], sample["keypoints"]
        n, K = kpts.shape[:2]
        out = self._compose(image=sample["image"], bboxes=boxes.reshape(-1, 4), face_index=np.arange(len(boxes)),
                            keypoints=kpts.reshape(-1, 2))
        idx = np.asarray(out["face_index"], np.int64).reshape(-1)
        keep = np.zeros(len(boxes), bool)
        keep[idx] = True
        sample["image"] = out["image"]
        sample["keypoints"] = np.asarray(out["keypoints"], np.float32)[:, :2].reshape(n, K, 2)
        new_boxes = np.zeros_like(boxes)
        new_boxes[idx] = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        sample["boxes"] = new_boxes
        sample = select_faces(sample, keep)
        return mark_outside_invisible(sample)


def build_transforms(list_cfg: Optional[Sequence[Mapping[str, Any]]], input_size: Sequence[int] = (128, 128),
                     normalize: str = "minus_one_one", num_keypoints: int = 6, pad_value: int = 0,
                     where: str = "transforms") -> Compose:
    """Build a :class:`Compose` from a list of ``{type: ..., ...}``.

    ``input_size`` [H, W], ``normalize`` (as ``model.preprocess.normalize``), ``num_keypoints`` and ``pad_value``
    are offered to every transform that takes them, so ``{type: Letterbox}`` needs no arguments. A name that is
    not a blazekit transform but exists in albumentations is wrapped by :class:`Albumentations`.
    """
    defaults = dict(input_size=list(input_size), normalization=normalize, num_keypoints=num_keypoints,
                    pad_value=pad_value)
    out: List[Callable] = []
    for i, cfg in enumerate(list_cfg or []):
        here = f"{where}[{i}]"
        if not isinstance(cfg, Mapping) or "type" not in cfg:
            raise BuildError(f"{here}: expected a mapping with a 'type' key, got {cfg!r}")
        name = cfg["type"]
        args = {k: v for k, v in cfg.items() if k != "type"}
        if name == "Albumentations":  # takes **kwargs, so builder defaults must not leak into it
            out.append(Albumentations(**args))
        elif isinstance(name, str) and name not in TRANSFORMS and ":" not in name and _is_albumentations(name):
            out.append(Albumentations(transform=name, **args))
        else:
            out.append(build(TRANSFORMS, cfg, where=here, **defaults))
    return Compose(out)


def _is_albumentations(name: str) -> bool:
    import albumentations as A

    return isinstance(getattr(A, name, None), type)
