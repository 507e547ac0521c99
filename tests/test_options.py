"""The one option schema: every bad value is one ConfigError naming the key, what was given and what is expected."""
import subprocess
import sys

import pytest

from blazekit import config as C
from blazekit import options

from tests.conftest import REPO

QUICKSTART = REPO / "configs" / "quickstart.yml"


@pytest.mark.parametrize("override, message", [
    ("train.epochs=ten", "train.epochs = 'ten': expected an integer >= 1"),
    ("train.distill={targets: box}", "train.distill.targets = 'box': expected one of 'face', 'anchor'"),
    ("train.distill={min_score: 1.5}", "train.distill.min_score = 1.5: expected a number >= 0 and <= 1"),
    ("train.distill={ignore_score: -0.1}", "train.distill.ignore_score = -0.1: expected"),
    ("train.distill={score_weight: -1}", "train.distill.score_weight = -1: expected a number >= 0"),
    ("train.distill={positive_iou: 0}", "train.distill.positive_iou = 0: expected"),
    ("train.distill={positive_mode: all}", "train.distill.positive_mode = 'all': expected one of 'add', 'replace'"),
    ("train.epochs=1.5", "train.epochs = 1.5: expected an integer >= 1"),   # never silently cut to 1
    ("train.epochs=0", "train.epochs = 0: expected an integer >= 1"),
    ("train.optimizer.lr=fast", "train.optimizer.lr = 'fast': expected a number > 0"),
    ("train.optimizer.lr=0", "train.optimizer.lr = 0: expected a number > 0"),
    ("train.optimizer.lr=-1e-3", "train.optimizer.lr = -0.001: expected a number > 0"),
    ("+train.val_mode=best", "train.val_mode = 'best': expected one of 'max', 'min'"),
    ("train.amp=fp8", "train.amp = 'fp8': expected one of null, False, 'fp16', 'bf16'"),
    ("train.freeze=backbone", "train.freeze = 'backbone': expected a list of parameter-name patterns"),
    ("train.ema.decay=2", "train.ema.decay = 2: expected a number > 0 and <= 1"),
    ("+train.ema.decya=0.9", "unknown config key 'train.ema.decya'; did you mean train.ema.decay?"),
    ("data.train.batch_size=0", "data.train.batch_size = 0: expected an integer >= 1"),
    ("data.train.batch_size=-4", "data.train.batch_size = -4: expected an integer >= 1"),
    ("data.train.num_workers=two", "data.train.num_workers = 'two': expected an integer >= 0"),
    ("data.train.shuffle=maybe", "data.train.shuffle = 'maybe': expected true or false"),
    ("+data.val.prefetch_factor=0", "data.val.prefetch_factor = 0: expected null or an integer >= 1"),
    ("model.input_size=[100,100]", "model.input_size = [100, 100]: expected sizes divisible by 16"),
    ("model.input_size=[0,128]", "model.input_size = [0, 128]: expected a positive integer or [H, W]"),
    ("model.input_size=big", "model.input_size = 'big': expected a positive integer or [H, W]"),
    ("model.preprocess.normalize=unit", "model.preprocess.normalize = 'unit': expected one of 'minus_one_one', "
                                        "'zero_one'"),
    ("model.preprocess.resize=opencv", "model.preprocess.resize = 'opencv': expected one of 'letterbox', 'stretch', "
                                       "'mediapipe'"),
    ("model.preprocess.pad_value=300", "model.preprocess.pad_value = 300: expected an integer in 0..255"),
    ("+model.preprocess.resise=stretch", "unknown config key 'model.preprocess.resise'; did you mean "
                                         "model.preprocess.resize?"),
    ("model.num_keypoints=-1", "model.num_keypoints = -1: expected an integer >= 0"),
    ("eval.max_det=0", "eval.max_det = 0: expected an integer >= 1"),
    ("eval.score_thr=1.5", "eval.score_thr = 1.5: expected null or a number >= 0 and <= 1"),
    ("eval.test_scale=huge", "eval.test_scale = 'huge': expected null, 'original', a positive integer or [H, W]"),
    ("+eval.maxdet=5", "unknown config key 'eval.maxdet'; did you mean eval.max_det"),
    ("+trian.epochs=3", "unknown config key 'trian'; did you mean train? Known top-level keys: model, data, "
                        "train, eval, imports"),
    ("+imports=5", "imports = 5: expected a list of module names"),
    ("+imports=[a, 5]", "imports = ['a', 5]: expected a list of module names"),
    ("model.postprocess.score_thr=1.5", "model.postprocess.score_thr = 1.5: expected a number >= 0 and <= 1"),
    ("model.postprocess.score_thr=-0.1", "model.postprocess.score_thr = -0.1: expected a number >= 0 and <= 1"),
    # the model's own parts (issue #21: these were ValueError tracebacks from the classes)
    ("model.postprocess.iou_thr=-1", "model.postprocess.iou_thr = -1: expected a number >= 0 and <= 1"),
    ("model.postprocess.max_det=0", "model.postprocess.max_det = 0: expected null or an integer >= 1"),
    ("model.postprocess.sigmoid_clip=-1", "model.postprocess.sigmoid_clip = -1: expected null or a number > 0"),
    ("+model.postprocess.iou_th=0.5", "unknown config key 'model.postprocess.iou_th'; did you mean "
                                      "model.postprocess.iou_thr or"),
    ("model.matcher.pos_iou=2", "model.matcher.pos_iou = 2: expected a number >= 0 and <= 1"),
    ("model.matcher.neg_iou=0.5", "model.matcher.neg_iou = 0.5: expected a number <= model.matcher.pos_iou (0.35)"),
    ("model.matcher.force_best=yes please", "model.matcher.force_best = 'yes please': expected true or false"),
    ("model.loss.neg_pos_ratio=-3", "model.loss.neg_pos_ratio = -3: expected a number >= 0"),
    ("model.loss.min_negatives=1.5", "model.loss.min_negatives = 1.5: expected an integer >= 0"),
    ("model.coder.scale=[1, 2]", "model.coder.scale = [1, 2]: expected null, a positive number or 4 positive"),
])
def test_bad_value_is_one_config_error_naming_key_given_and_expected(override, message):
    with pytest.raises(C.ConfigError) as err:
        C.load(QUICKSTART, overrides=[override])
    msg = str(err.value)
    assert msg.startswith(f"{QUICKSTART}: ") and message in msg and "\n" not in msg


def test_valid_shipped_configs_pass_and_the_stride_comes_from_the_anchors(tmp_path):
    for name in ("quickstart", "blazeface_front", "blazeface_back", "finetune_shared"):
        C.load(name)
    assert options.model_stride(C.load("blazeface_front")["model"]) == 16
    assert options.model_stride(C.load("blazeface_back")["model"]) == 32
    with pytest.raises(C.ConfigError, match=r"model.input_size = \[240, 240\]: expected sizes divisible by 32"):
        C.load("blazeface_back", overrides=["model.input_size=[240,240]"])
    assert options.model_stride({"anchors": {"strides": [8, 32]}}) == 32
    assert options.problems({"model": {"input_size": 80, "anchors": {"strides": [8, 32]}}}).startswith(
        "model.input_size = 80: expected sizes divisible by 32")
    assert options.problems({"model": {"input_size": [64, 32]}}) is None


def test_top_level_typo_in_a_file_empty_file_and_missing_model(tmp_path):
    (tmp_path / "typo.yml").write_text("_base_: [blazeface_front.yml]\ntrian: {epochs: 3}\n")
    with pytest.raises(C.ConfigError, match=r"typo.yml: unknown config key 'trian'; did you mean train\?"):
        C.load(tmp_path / "typo.yml")
    (tmp_path / "empty.yml").write_text("# nothing yet\n")
    with pytest.raises(C.ConfigError, match=r"empty.yml: the config file is empty; expected at least a model:"):
        C.load(tmp_path / "empty.yml")
    (tmp_path / "nomodel.yml").write_text("train: {epochs: 1}\n")
    cfg = C.load(tmp_path / "nomodel.yml")  # a partial config loads (tests, bases) ...
    from blazekit.engine.trainer import Trainer

    with pytest.raises(C.ConfigError, match=r"nomodel.yml: the config has no 'model:' section; expected e.g. "
                                            r"'_base_: \[blazeface_front.yml\]'.*top-level keys given: train"):
        Trainer(cfg, work_dir=tmp_path / "w")  # ... but training needs a model
    (tmp_path / "nodata.yml").write_text("model: {}\ndata: {train: {batch_size: 2}}\n")
    with pytest.raises(C.ConfigError, match=r"data.train has no 'dataset' entry.*keys given: batch_size"):
        C.load(tmp_path / "nodata.yml")


def test_partial_dicts_validate_only_what_is_there():
    assert options.problems({}) is None
    assert options.problems({"model": {"backbone": {"type": "X", "anything": 1}}}) is None  # registry checks those
    assert options.problems({"train": {"optimizer": {"type": "AdamW", "betas": [0.9, 0.99]}}}) is None
    assert "no 'model:' section" in options.problems({"train": {}}, require=("model",))


def test_trainer_defaults_and_evaluator_defaults_come_from_the_schema():
    from blazekit.engine import evaluator, trainer

    assert trainer.TRAIN_DEFAULTS == options.defaults(options.TRAIN)
    assert trainer.TRAIN_DEFAULTS["init_strict"] is True and trainer.TRAIN_DEFAULTS["epochs"] == 1
    assert evaluator.DEFAULT_EVAL == options.defaults(options.EVAL)
    filled = options.train_options({"model": {}, "train": {"epochs": 3}})
    assert filled["epochs"] == 3 and filled["optimizer"]["type"] == "SGD" and filled["log_interval"] == 20


@pytest.mark.parametrize("override, key", [
    ("train.epochs=ten", "train.epochs = 'ten'"),
    ("train.epochs=1.5", "train.epochs = 1.5"),
    ("data.train.batch_size=-4", "data.train.batch_size = -4"),
    ("model.input_size=[100,100]", "model.input_size = [100, 100]"),
])
def test_train_tool_bad_value_is_one_error_line_exit_2(override, key):
    out = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), str(QUICKSTART), "--set", override],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_train_tool_top_level_typo_file(tmp_path):
    (tmp_path / "typo.yml").write_text(f"_base_: [{QUICKSTART}]\ntrian: {{epochs: 3}}\n")
    out = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), str(tmp_path / "typo.yml")],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'typo.yml'}: unknown config key 'trian'; did you mean train? "
        "Known top-level keys: model, data, train, eval, imports"]


def test_model_part_tables_list_exactly_the_arguments_of_their_classes():
    """So a valid argument is never refused and a typo is never let through (the registry's signatures decide)."""
    from blazekit.registry import ALL_REGISTRIES

    for part, by_type in options.MODEL_PARTS.items():
        registry = ALL_REGISTRIES[options.REGISTRY_SECTIONS[f"model.{part}"]]
        for name, table in by_type.items():
            assert sorted(table) == sorted(registry.arguments(name)), (part, name)
            assert options.problems({"model": {part: {"type": name, **options.defaults(table)}}}) is None, name


def test_a_value_a_registered_class_refuses_is_a_build_error_naming_the_config_path():
    from blazekit.registry import ArgumentValueError, BuildError, Registry

    reg = Registry("things")

    @reg.register()
    class Thing:
        def __init__(self, size: int = 1) -> None:
            if size < 1:
                raise ValueError(f"Thing: size must be >= 1, got {size}")

    with pytest.raises(ArgumentValueError, match=r"^model.thing: Thing: size must be >= 1, got 0$") as err:
        reg.build({"type": "Thing", "size": 0}, where="model.thing")
    assert isinstance(err.value, BuildError) and isinstance(err.value, ValueError)
