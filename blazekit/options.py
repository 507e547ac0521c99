"""Every config option blazekit reads, with its type, range and default, in one place.

A config is still a plain nested dict (see :mod:`blazekit.config`); this module only says what may be in it.
:func:`validate` is called once when a config is loaded, so a typo (``trian:``), a wrong type
(``train.epochs=ten``) or an impossible value (``batch_size=0``, ``model.input_size=[100,100]``) stops the run
with one line naming the key, what was given and what is expected, before any data is read.

Sections that are built from the registry (a ``type:`` dict such as ``model``, ``train.optimizer`` or a dataset)
keep their own argument checking (:class:`blazekit.registry.BuildError`); only the few arguments whose
range blazekit knows (``lr > 0``, the input size) are checked here as well.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from .errors import ConfigError, close_matches

#: a check returns None when the value is fine, else what was expected ("an integer >= 1")
Check = Callable[[Any], Optional[str]]


class _Missing:
    def __repr__(self) -> str:
        return "<no default>"


NO_DEFAULT = _Missing()


@dataclass(frozen=True)
class Opt:
    """One option: its check, its default (``NO_DEFAULT``: read by a builder with its own default) and what it does."""

    check: Check
    default: Any = NO_DEFAULT
    doc: str = ""


# ----------------------------------------------------------------------------- checks
def _is_int(v: Any) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def integer(lo: Optional[int] = None) -> Check:
    """An int (``1.5`` or ``"ten"`` is refused, never truncated) of at least ``lo``."""
    want = "an integer" + (f" >= {lo}" if lo is not None else "")

    def check(v: Any) -> Optional[str]:
        if not _is_int(v) or (lo is not None and v < lo):
            return want
        return None

    return check


def number(gt: Optional[float] = None, ge: Optional[float] = None, le: Optional[float] = None) -> Check:
    """A finite real number within the given bounds."""
    bounds = [f"> {gt:g}" if gt is not None else "", f">= {ge:g}" if ge is not None else "",
              f"<= {le:g}" if le is not None else ""]
    want = "a number" + ("" if not any(bounds) else " " + " and ".join(b for b in bounds if b))

    def check(v: Any) -> Optional[str]:
        if not isinstance(v, Real) or isinstance(v, bool) or not math.isfinite(v):
            return want
        if (gt is not None and v <= gt) or (ge is not None and v < ge) or (le is not None and v > le):
            return want
        return None

    return check


def boolean(v: Any) -> Optional[str]:
    return None if isinstance(v, bool) else "true or false"


def text(v: Any) -> Optional[str]:
    return None if isinstance(v, str) else "a string"


def one_of(*choices: Any) -> Check:
    want = "one of " + ", ".join("null" if c is None else repr(c) for c in choices)
    return lambda v: None if any(v is c or (type(v) is type(c) and v == c) for c in choices) else want


def optional(inner: Check) -> Check:
    """``null`` or a value ``inner`` accepts."""
    def check(v: Any) -> Optional[str]:
        if v is None:
            return None
        why = inner(v)
        return None if why is None else f"null or {why}"

    return check


def list_of(inner: Check, what: str) -> Check:
    def check(v: Any) -> Optional[str]:
        if not isinstance(v, (list, tuple)) or any(inner(x) is not None for x in v):
            return f"a list of {what}"
        return None

    return check


def mapping(v: Any) -> Optional[str]:
    return None if isinstance(v, Mapping) else "a mapping"


def size_hw(v: Any) -> Optional[str]:
    """``128`` or ``[H, W]`` of positive ints."""
    if _is_int(v) and v > 0:
        return None
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(x) and x > 0 for x in v):
        return None
    return "a positive integer or [H, W] of positive integers"


def eval_scale(v: Any) -> Optional[str]:
    ok = v is None or v == "original" or size_hw(v) is None
    return None if ok else "null, 'original', a positive integer or [H, W]"


def max_dets(v: Any) -> Optional[str]:
    ok = isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_int(x) and x > 0 for x in v)
    return None if ok else "a list of 3 positive integers"


def dataset_value(v: Any) -> Optional[str]:
    ok = isinstance(v, Mapping) or (isinstance(v, list) and all(isinstance(d, Mapping) for d in v))
    return None if ok else "a registry-built dataset (a mapping with type:) or a list of them"


# ----------------------------------------------------------------------------- the schema
#: ``train:`` (read by :class:`blazekit.engine.trainer.Trainer`); every key has a default
TRAIN: Dict[str, Opt] = {
    "epochs": Opt(integer(1), 1),
    "optimizer": Opt(mapping, {"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
                     "a registry-built optimizer (type: SGD | AdamW | ...)"),
    "lr_scheduler": Opt(mapping, {"type": "Constant"}, "a registry-built learning-rate schedule"),
    "no_decay_norm_bias": Opt(boolean, True, "no weight decay on BN weights and biases"),
    "clip_grad_norm": Opt(optional(number(gt=0)), None, "max global grad norm, or null"),
    "amp": Opt(one_of(None, False, "fp16", "bf16"), None, "null | fp16 | bf16 (CUDA only; ignored with a note on CPU)"),
    "ema": Opt(optional(mapping), None, "{decay: 0.9998, tau: 2000} or null"),
    "val_interval": Opt(integer(0), 1, "validate every N epochs (0: only at the end)"),
    "val_metric": Opt(text, "coco/AP50", "key of evaluate()'s dict that picks best.pt (e.g. wider/medium)"),
    "val_mode": Opt(one_of("max", "min"), "max"),
    "val_before_train": Opt(boolean, False, "evaluate the initial weights first (fine-tuning baselines)"),
    "val_vis": Opt(optional(integer(0)), 4, "val images drawn (GT green, detections red) per validation"),
    "checkpoint_interval": Opt(integer(0), 0, "also write last.pt every N iterations (0: only at epoch ends)"),
    "log_interval": Opt(integer(1), 20, "iterations between metrics.jsonl records"),
    "max_nonfinite_steps": Opt(integer(1), 10, "stop after this many non-finite losses in a row"),
    "distill": Opt(lambda v: None if v is None or isinstance(v, (bool, Mapping)) else "null, true or a mapping",
                   None, "keypoint self-distillation: true or {teacher: null (= model.init), weight: 1.0}"),
    "freeze": Opt(list_of(text, "parameter-name patterns"), [],
                  "parameter-name patterns (fnmatch or prefix) not to train"),
    "norm_eval": Opt(boolean, False, "keep BatchNorm in eval mode (running stats fixed; affine still trained)"),
    "calibrate_bn": Opt(integer(0), 0, "before training from model.init, measure BatchNorm statistics on this many "
                        "training batches (eval outputs unchanged) so train-mode BN starts from the pretrained model"),
    "keep_sparsity": Opt(boolean, False, "weights that start at zero in a pruned conv (>= 25 % zeros, MediaPipe full "
                         "range) stay zero, so the .tflite export keeps MediaPipe's sparse layout"),
    "fp16_weights": Opt(boolean, False, "round the BN-folded weights to fp16 at every epoch end, before validation "
                        "and the checkpoint, so they equal what the fp16 .tflite export stores"),
    "sync_bn": Opt(boolean, False, "convert BatchNorm to SyncBatchNorm under DDP"),
    "find_unused_parameters": Opt(boolean, False),
    "seed": Opt(integer(0), 0),
    "deterministic": Opt(boolean, False, "torch.use_deterministic_algorithms (slower on CUDA)"),
    "work_dir": Opt(optional(text), None),
    "progress_bar": Opt(boolean, True),
    "tensorboard": Opt(boolean, True),
    "init_strict": Opt(boolean, True, "model.init must match every parameter of the model"),
}

#: ``train.distill`` (:mod:`blazekit.engine.distill`): faces without keypoint labels learn the teacher's keypoints
DISTILL: Dict[str, Opt] = {
    "teacher": Opt(optional(text), None, "weights of the teacher (null: the model.init weights)"),
    "weight": Opt(number(gt=0), 1.0, "multiplies the distilled keypoints' loss"),
    "targets": Opt(one_of("face", "anchor"), "face",
                   "face: the teacher's blended keypoints per face, used like labels | anchor: its raw outputs per "
                   "matched anchor"),
    "min_score": Opt(number(ge=0, le=1), 0.5, "face targets: teacher anchors scoring below this are not used"),
    "min_iou": Opt(number(ge=0, le=1), 0.4, "face targets: teacher boxes overlapping the face less are not used"),
    "ignore_score": Opt(optional(number(ge=0, le=1)), None,
                        "anchors the teacher scores >= this are never negatives (faces the labels miss); null: off"),
    "score_weight": Opt(number(ge=0), 0.0, "> 0: anchors the matcher calls background learn the teacher's scores "
                        "(KL term loss_score); 0: off"),
    "positive_iou": Opt(optional(number(gt=0, le=1)), None,
                        "anchors the teacher scores >= min_score whose box has IoU >= this with a labelled face "
                        "become its positives; null: off"),
    "positive_mode": Opt(one_of("add", "replace"), "add",
                         "add: teacher positives join the matcher's | replace: for faces the teacher finds, the "
                         "matcher's other positives are ignored"),
}

#: arguments of registry-built ``train`` parts whose range is known (the registry checks the names)
OPTIMIZER_ARGS: Dict[str, Opt] = {
    "lr": Opt(number(gt=0)),
    "weight_decay": Opt(number(ge=0)),
    "momentum": Opt(number(ge=0)),
}
EMA: Dict[str, Opt] = {
    "decay": Opt(number(gt=0, le=1), 0.9998),
    "tau": Opt(number(ge=0), 2000.0),
}

#: ``eval:`` (read by :class:`blazekit.evaluation.evaluator.Evaluator`)
EVAL: Dict[str, Opt] = {
    "score_thr": Opt(optional(number(ge=0, le=1)), None, "null: the model's postprocess.score_thr"),
    "max_det": Opt(integer(1), 1000, "detections kept per image"),
    "test_scale": Opt(eval_scale, None,
                      "null: model.input_size; 'original': each image at its own size rounded up to the stride"),
    "max_dets": Opt(max_dets, [1, 10, 1000], "COCO maxDets"),
    "min_size": Opt(optional(number(ge=0)), None, "ground-truth faces smaller than this are ignored"),
    "batch_size": Opt(integer(1), 16),
    "wider_gt_dir": Opt(optional(text), None),
    "wider_iou_mode": Opt(one_of("matlab", "float"), "matlab"),
    "kpt_reference": Opt(optional(text), None, "weights (e.g. mediapipe_short_range) whose confident faces' keypoints "
                                              "the evaluated model's are compared with (kpt_agreement)"),
}

#: ``data.<split>:`` (read by :func:`blazekit.data.loader.build_dataloader` and the trainer's loader); the
#: defaults depend on the split (train: shuffled; evaluation: in order; 0 workers unless set), see there
LOADER: Dict[str, Opt] = {
    "dataset": Opt(dataset_value),
    "transforms": Opt(optional(list_of(mapping, "transforms (mappings with type:)"))),
    "batch_size": Opt(integer(1)),
    "num_workers": Opt(integer(0)),
    "shuffle": Opt(boolean),
    "drop_last": Opt(boolean),
    "pin_memory": Opt(boolean),
    "persistent_workers": Opt(boolean),
    "prefetch_factor": Opt(optional(integer(1))),
    "multi_scale": Opt(optional(mapping), NO_DEFAULT, "{sizes: [96, 112, 128], stride: 16, mode: bilinear}: each batch "
                       "is resized to one of sizes (see MULTI_SCALE)"),
}

#: ``data.<split>.multi_scale`` (:class:`blazekit.data.multiscale.MultiScaleCollate`)
MULTI_SCALE: Dict[str, Opt] = {
    "sizes": Opt(list_of(size_hw, "sizes (an integer or [H, W])"), NO_DEFAULT,
                 "input sizes a batch is resized to, each divisible by stride"),
    "stride": Opt(integer(1), 16, "the model's largest stride"),
    "mode": Opt(one_of("nearest", "nearest-exact", "bilinear", "bicubic", "area"), "bilinear",
                "torch.nn.functional.interpolate mode"),
}

#: ``model.preprocess:`` (the detector fills the defaults)
PREPROCESS: Dict[str, Opt] = {
    "resize": Opt(one_of("letterbox", "stretch", "mediapipe"), "letterbox",
                  "how predict and evaluation fit an image into the input (blazekit.preprocess.RESIZE_MODES); "
                  "mediapipe: MediaPipe's own pre-processing, for the detections of its FaceDetector"),
    "normalize": Opt(one_of("minus_one_one", "zero_one"), "minus_one_one"),
    "pad_value": Opt(lambda v: None if _is_int(v) and 0 <= v <= 255 else "an integer in 0..255", 0),
}


def coder_scale(v: Any) -> Optional[str]:
    ok = v is None or (isinstance(v, Real) and not isinstance(v, bool) and v > 0) or (
        isinstance(v, (list, tuple)) and len(v) == 4 and all(number(gt=0)(x) is None for x in v))
    return None if ok else "null, a positive number or 4 positive numbers [x_scale, y_scale, w_scale, h_scale]"


def positive_pair(v: Any) -> Optional[str]:
    ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(number(gt=0)(x) is None for x in v)
    return None if ok else "2 positive numbers"


#: ``model.postprocess`` (:mod:`blazekit.models.postprocess`, NMS and WeightedBlending)
POSTPROCESS: Dict[str, Opt] = {
    "score_thr": Opt(number(ge=0, le=1), 0.5, "faces scoring below this are dropped (scores are probabilities)"),
    "iou_thr": Opt(number(ge=0, le=1), 0.3, "boxes overlapping a kept one by more than this are suppressed/blended"),
    "max_det": Opt(optional(integer(1)), 100, "detections kept per image (null: all)"),
    "sigmoid_clip": Opt(optional(number(gt=0)), 100.0, "logits are clipped to +-this before the sigmoid (MediaPipe)"),
}
_LOSS_WEIGHTS: Dict[str, Opt] = {
    "cls_weight": Opt(number(ge=0), 1.0), "box_weight": Opt(number(ge=0), 1.0), "kpt_weight": Opt(number(ge=0), 1.0),
    "beta": Opt(number(ge=0), 1.0, "Smooth L1 beta (0: L1)"),
}

#: the arguments of the model's built-in parts, by section and ``type``: typed and ranged here so a bad value is
#: refused when the config is loaded; a ``type`` of your own is checked by its class when built. Each table lists
#: every argument its class takes (tests compare them with the signatures).
MODEL_PARTS: Dict[str, Dict[str, Dict[str, Opt]]] = {
    "postprocess": {"NMS": POSTPROCESS, "WeightedBlending": POSTPROCESS},
    "matcher": {
        "IoUMatcher": {"pos_iou": Opt(number(ge=0, le=1), 0.35, "anchors with IoU >= this are positives"),
                       "neg_iou": Opt(number(ge=0, le=1), 0.35, "anchors with IoU < this are negatives (<= pos_iou)"),
                       "force_best": Opt(boolean, True, "each face's best anchor is a positive")},
        "ATSSMatcher": {"topk": Opt(integer(1), 9), "force_best": Opt(boolean, True),
                        "ignore_iou": Opt(number(ge=0, le=1), 0.35), "neg_iou": Opt(optional(number(ge=0, le=1)))},
    },
    "loss": {
        "MultiBoxLoss": {"neg_pos_ratio": Opt(number(ge=0), 3.0, "hard negatives per positive"),
                         "min_negatives": Opt(integer(0), 16), **_LOSS_WEIGHTS},
        "FocalMultiBoxLoss": {"alpha": Opt(number(le=1), 0.25, "positive weight (< 0: none)"),
                              "gamma": Opt(number(ge=0), 2.0), **_LOSS_WEIGHTS},
    },
    "coder": {"MediaPipeCoder": {"scale": Opt(coder_scale, None)}, "SSDCoder": {"variances": Opt(positive_pair)}},
}

#: where the config holds registry-built parts (fnmatch patterns of the dotted path -> registry name): an argument
#: their class documents may be set with ``--set`` without the ``+`` that adds a key
REGISTRY_SECTIONS = {
    "model.backbone": "backbones", "model.neck": "necks", "model.head": "heads", "model.anchors": "anchor_generators",
    "model.coder": "box_coders", "model.matcher": "matchers", "model.loss": "losses",
    "model.postprocess": "postprocessors", "train.optimizer": "optimizers", "train.lr_scheduler": "lr_schedulers",
    "data.*.dataset": "datasets", "data.*.dataset.datasets.*": "datasets", "data.*.transforms.*": "transforms",
}

#: the top level of a config
TOP_LEVEL = ("model", "data", "train", "eval", "imports", "_source_")

#: the largest stride of BlazeFace's backbones (input sizes must be a multiple of the model's largest stride)
DEFAULT_STRIDE = 16


# ----------------------------------------------------------------------------- validation
class _Fail(Exception):
    """Internal: carries the message up to the public check, which raises it as a ConfigError."""


def _shown(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _bad(key: str, value: Any, expected: str) -> str:
    return f"{key} = {_shown(value)}: expected {expected}"


def _unknown(key: str, where: str, known: Sequence[str]) -> str:
    full = f"{where}.{key}" if where else str(key)
    hint = close_matches(str(key), [k for k in known if not k.startswith("_")])
    msg = f"unknown config key {full!r}"
    if hint:
        msg += f"; did you mean {' or '.join(f'{where}.{h}' if where else h for h in hint)}?"
    shown = ", ".join(k for k in known if not k.startswith("_"))
    return msg + ("" if hint else ".") + f" Known {'keys in ' + where if where else 'top-level keys'}: {shown}"


def check_section(section: Any, schema: Mapping[str, Opt], where: str, open_keys: bool = False) -> None:
    """Every key of ``section`` is in ``schema`` (unless ``open_keys``) and passes its check."""
    if not isinstance(section, Mapping):
        raise _Fail(_bad(where, section, "a mapping"))
    for k, v in section.items():
        if k not in schema:
            if open_keys:
                continue
            raise _Fail(_unknown(k, where, list(schema)))
        why = schema[k].check(v)
        if why is not None:
            raise _Fail(_bad(f"{where}.{k}", v, why))


def _check_model(model: Any) -> None:
    if not isinstance(model, Mapping):
        raise _Fail(_bad("model", model, "a mapping (type: BlazeFace, backbone: ..., input_size: ...)"))
    for k, check in (("num_keypoints", integer(0)), ("init", optional(text)), ("type", text)):
        if k in model and check(model[k]) is not None:
            raise _Fail(_bad(f"model.{k}", model[k], check(model[k])))
    if "preprocess" in model and model["preprocess"] is not None:
        check_section(model["preprocess"], PREPROCESS, "model.preprocess")
    for part, by_type in MODEL_PARTS.items():
        section = model.get(part)
        if not isinstance(section, Mapping):
            continue
        args = {k: v for k, v in section.items() if k != "type"}
        schema = by_type.get(section["type"]) if isinstance(section.get("type"), str) else None
        if schema is None:
            if part == "postprocess":  # a post-processor of your own: its score_thr is still a probability
                check_section(args, {"score_thr": POSTPROCESS["score_thr"]}, "model.postprocess", open_keys=True)
            continue
        check_section(args, schema, f"model.{part}")
        if part == "matcher" and section["type"] == "IoUMatcher":
            pos, neg = (args.get(k, schema[k].default) for k in ("pos_iou", "neg_iou"))
            if neg > pos:
                raise _Fail(_bad("model.matcher.neg_iou", neg, f"a number <= model.matcher.pos_iou ({pos:g})"))
    if "input_size" in model:
        size = model["input_size"]
        if size_hw(size) is not None:
            raise _Fail(_bad("model.input_size", size, size_hw(size)))
        stride = model_stride(model)
        hw = (size, size) if _is_int(size) else tuple(size)
        if hw[0] % stride or hw[1] % stride:
            near = [max(stride, int(round(x / stride)) * stride) for x in hw]
            raise _Fail(_bad("model.input_size", size, f"sizes divisible by {stride}, the model's largest stride "
                                                      f"(e.g. {near})"))


def model_stride(model: Mapping[str, Any]) -> int:
    """The largest stride of the model: ``model.anchors.strides`` when the config gives them, else 16."""
    strides = (model.get("anchors") or {}).get("strides") if isinstance(model.get("anchors"), Mapping) else None
    if isinstance(strides, (list, tuple)) and strides and all(_is_int(s) and s > 0 for s in strides):
        return int(max(strides))
    return DEFAULT_STRIDE


def _check_train(train: Any) -> None:
    check_section(train, TRAIN, "train")
    opt = train.get("optimizer")
    if isinstance(opt, Mapping):
        check_section(opt, OPTIMIZER_ARGS, "train.optimizer", open_keys=True)
    if isinstance(train.get("ema"), Mapping):
        check_section(train["ema"], EMA, "train.ema")
    if isinstance(train.get("distill"), Mapping):
        check_section(train["distill"], DISTILL, "train.distill")


def _check_data(data: Any) -> None:
    if not isinstance(data, Mapping):
        raise _Fail(_bad("data", data, "a mapping of splits (train:, val:, ...) to loader settings"))
    for split, split_cfg in data.items():
        if split_cfg is not None:
            _check_split(split_cfg, f"data.{split}")


def _check_split(split_cfg: Any, where: str) -> None:
    if not isinstance(split_cfg, Mapping):
        raise _Fail(_bad(where, split_cfg, "a mapping with dataset: and loader settings"))
    if "dataset" not in split_cfg:
        raise _Fail(f"{where} has no 'dataset' entry; expected dataset: {{type: ..., ...}} "
                    f"(keys given: {', '.join(map(str, split_cfg)) or 'none'})")
    unknown = sorted(set(split_cfg) - set(LOADER), key=str)
    if unknown:
        hints = "".join(f" ({k!r}: did you mean {m[0]!r}?)" for k in unknown
                        for m in [close_matches(str(k), sorted(LOADER))] if m)
        raise _Fail(f"{where}: unknown keys {unknown}{hints}; accepted: {sorted(LOADER)}")
    check_section(split_cfg, LOADER, where)
    if split_cfg.get("multi_scale") is not None:
        _check_multi_scale(split_cfg["multi_scale"], f"{where}.multi_scale")


def _check_multi_scale(multi_scale: Any, where: str) -> None:
    if not isinstance(multi_scale, Mapping):
        raise _Fail(f"{where}: expected a mapping like {{sizes: [96, 112, 128]}}, got {multi_scale!r}")
    if set(multi_scale) - set(MULTI_SCALE) or "sizes" not in multi_scale:
        raise _Fail(f"{where}: needs 'sizes' and takes only sizes/stride/mode, got keys {sorted(multi_scale)}")
    check_section(multi_scale, MULTI_SCALE, where)
    stride = multi_scale.get("stride", MULTI_SCALE["stride"].default)
    if not multi_scale["sizes"]:
        raise _Fail(f"{where}: multi_scale.sizes is empty; give e.g. [96, 112, 128]")
    for s in multi_scale["sizes"]:
        if any(x % stride for x in ((s, s) if _is_int(s) else s)):
            raise _Fail(f"{where}: multi_scale.sizes: {s!r} must be positive and divisible by {stride} (the largest "
                        "stride of the model)")


def check_split(split_cfg: Any, where: str = "data split") -> None:
    """Raise :class:`ConfigError` unless ``split_cfg`` is a usable ``data.<split>`` section (a dataset, only keys a
    loader reads, each of the right type, a valid ``multi_scale``): what :func:`validate` checks for each split, for
    a section given to :func:`blazekit.data.build_dataloader` directly."""
    try:
        _check_split(split_cfg, where)
    except _Fail as exc:
        raise ConfigError(str(exc)) from None


def check_multi_scale(multi_scale: Any, where: str = "data.train.multi_scale") -> None:
    """Raise :class:`ConfigError` unless ``multi_scale`` is a usable ``multi_scale:`` entry (see :data:`MULTI_SCALE`)."""
    try:
        _check_multi_scale(multi_scale, where)
    except _Fail as exc:
        raise ConfigError(str(exc)) from None


def _check_imports(imports: Any) -> None:
    if imports is not None and text(imports) is not None and list_of(text, "module names")(imports) is not None:
        raise _Fail(_bad("imports", imports, IMPORTS_EXPECTED))


IMPORTS_EXPECTED = "a list of module names, e.g. [my_faces] (or one name)"


def problems(cfg: Any, require: Sequence[str] = ()) -> Optional[str]:
    """The first problem of ``cfg`` as one line, or None. Only sections present are checked (tests build
    detectors from partial dicts); ``require`` names top-level sections that must be there (a tool's config)."""
    try:
        if not isinstance(cfg, Mapping):
            raise _Fail(_bad("<config>", cfg, "a mapping of sections (model:, data:, train:, ...)"))
        for k in cfg:
            if k not in TOP_LEVEL:
                raise _Fail(_unknown(k, "", TOP_LEVEL))
        for k in require:
            if cfg.get(k) is None:
                given = ", ".join(str(g) for g in cfg if not str(g).startswith("_")) or "none"
                raise _Fail(f"the config has no '{k}:' section; expected {REQUIRED_HINT.get(k, 'one')} "
                            f"(top-level keys given: {given})")
        if cfg.get("model") is not None:
            _check_model(cfg["model"])
        if cfg.get("train") is not None:
            _check_train(cfg["train"])
        if cfg.get("eval") is not None:
            check_section(cfg["eval"], EVAL, "eval")
        if cfg.get("data") is not None:
            _check_data(cfg["data"])
        _check_imports(cfg.get("imports"))
    except _Fail as exc:
        return str(exc)
    return None


REQUIRED_HINT = {
    "model": "e.g. '_base_: [blazeface_front.yml]' or model: {type: BlazeFace, ...}",
    "data": "data: {train: {dataset: {type: ..., ...}}}",
}


def _sections() -> Dict[tuple, Mapping[str, Opt]]:
    return {("train",): TRAIN, ("eval",): EVAL, ("train", "distill"): DISTILL, ("train", "ema"): EMA,
            ("model", "preprocess"): PREPROCESS}


def known_key(parts: Sequence[str]) -> bool:
    """Whether a dotted key (split in parts) names an option of this schema or a section holding some, so
    ``--set eval.kpt_reference=...`` works when the config file does not spell the key out (its default applies)."""
    sections = _sections()
    parts = tuple(parts)
    if len(parts) == 1:
        return parts[0] in ("train", "eval")
    if parts in sections:
        return True
    if len(parts) == 3 and parts[0] == "data":
        return parts[2] in LOADER
    return parts[:-1] in sections and parts[-1] in sections[parts[:-1]]


def default_of(parts: Sequence[str]) -> Any:
    """The default of the option at a dotted key (split in parts), or :data:`NO_DEFAULT`: a ``--set`` into a section
    the file leaves out starts from it (``--set train.optimizer.lr=0.1`` sets the default SGD's lr)."""
    schema = _sections().get(tuple(parts[:-1]))
    opt = schema.get(parts[-1]) if schema is not None and parts else None
    return NO_DEFAULT if opt is None else opt.default


def registry_arguments(where: Sequence[str], section: Any) -> List[str]:
    """The arguments documented by the class that ``section`` (the mapping at the dotted path ``where``, a
    registry-built part such as ``data.train.dataset``) names with its ``type``; empty elsewhere. Such a key may
    be set without ``+`` although the file does not spell it out (``--set data.train.dataset.on_bad_sample=skip``)."""
    import fnmatch

    path = ".".join(map(str, where))
    registry = next((r for pat, r in REGISTRY_SECTIONS.items() if fnmatch.fnmatchcase(path, pat)), None)
    if registry is None or not isinstance(section, Mapping) or not isinstance(section.get("type"), str):
        return []
    from .registry import ALL_REGISTRIES, RegistryError

    try:
        return ALL_REGISTRIES[registry].arguments(section["type"])
    except (RegistryError, ImportError, AttributeError, ValueError):  # unknown or unimportable type: nothing known
        return []


def validate(cfg: Any, require: Sequence[str] = (), source: Optional[str] = None) -> None:
    """Raise :class:`ConfigError` (one line: file, key, given, expected) on the first problem."""
    msg = problems(cfg, require)
    if msg is not None:
        src = source or (cfg.get("_source_") if isinstance(cfg, Mapping) else None)
        raise ConfigError(f"{src}: {msg}" if src else msg)


def defaults(schema: Mapping[str, Opt]) -> Dict[str, Any]:
    """A fresh copy of every default of ``schema``."""
    return {k: copy.deepcopy(o.default) for k, o in schema.items() if o.default is not NO_DEFAULT}


def with_defaults(schema: Mapping[str, Opt], section: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """A copy of ``section`` (already validated) with every default of ``schema`` filled in."""
    return {**defaults(schema), **copy.deepcopy(dict(section or {}))}


def train_options(cfg: Mapping[str, Any], require: Sequence[str] = ("model",)) -> Dict[str, Any]:
    """``train:`` of ``cfg`` with every default filled, after validating the whole config."""
    validate(cfg, require=require)
    return with_defaults(TRAIN, cfg.get("train"))


def eval_options(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """``eval:`` of ``cfg`` with every default filled (the section is validated)."""
    validate({"eval": cfg.get("eval")}, source=cfg.get("_source_"))
    return with_defaults(EVAL, cfg.get("eval"))
