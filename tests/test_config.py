"""Config: _base_ inheritance, typed overrides with close-match errors, dumps that load back."""
import textwrap

import pytest
import yaml

from blazekit import config as C


def write(p, text):
    p.write_text(textwrap.dedent(text))
    return p


@pytest.fixture
def cfgs(tmp_path):
    (tmp_path / "_base_").mkdir()
    write(tmp_path / "_base_" / "model.yml", """
        imports: [base_mod]
        model:
          type: BlazeFace
          input_size: [128, 128]
          backbone: {type: BlazeFaceFrontBackbone, kernel_size: 3}
          loss: {type: MultiBoxLoss, neg_pos_ratio: 3, box_weight: 1.0}
    """)
    write(tmp_path / "_base_" / "sched.yml", """
        train: {epochs: 10, optimizer: {lr: 0.01}, freeze: [a, b]}
    """)
    write(tmp_path / "child.yml", """
        _base_: [_base_/model.yml, _base_/sched.yml]
        imports: [child_mod]
        model:
          backbone: {kernel_size: 5}
        train: {freeze: [c]}
    """)
    return tmp_path


def test_base_merge_dicts_lists_replaced(cfgs):
    cfg = C._load_with_bases(cfgs / "child.yml", ())
    assert cfg["model"]["backbone"] == {"type": "BlazeFaceFrontBackbone", "kernel_size": 5}
    assert cfg["model"]["loss"]["neg_pos_ratio"] == 3
    assert cfg["train"] == {"epochs": 10, "optimizer": {"lr": 0.01}, "freeze": ["c"]}  # list replaced, not merged
    assert cfg["imports"] == ["base_mod", "child_mod"]  # imports accumulate


def test_overrides_typed_as_yaml(cfgs):
    cfg = C._load_with_bases(cfgs / "child.yml", ())
    out = C.apply_overrides(cfg, ["train.optimizer.lr=1e-3", "train.epochs=3", "model.input_size=[160,128]",
                                  "model.backbone.type=Other", "+train.new_key=true", "train.freeze.0=d"])
    assert out["train"]["optimizer"]["lr"] == 1e-3 and isinstance(out["train"]["optimizer"]["lr"], float)
    assert out["train"]["epochs"] == 3 and out["model"]["input_size"] == [160, 128]
    assert out["train"]["new_key"] is True and out["train"]["freeze"] == ["d"]
    assert cfg["train"]["epochs"] == 10  # input untouched


def test_unknown_override_key_suggests(cfgs):
    cfg = C._load_with_bases(cfgs / "child.yml", ())
    with pytest.raises(C.ConfigError) as e:
        C.apply_overrides(cfg, ["train.epoch=3"])
    msg = str(e.value)
    assert "'train.epoch'" in msg and "Did you mean train.epochs" in msg
    with pytest.raises(C.ConfigError, match="Did you mean model.backbone"):
        C.apply_overrides(cfg, ["model.backbon.kernel_size=5"])
    with pytest.raises(C.ConfigError, match="key.path=value"):
        C.apply_overrides(cfg, ["train.epochs"])


def test_load_imports_and_dump_roundtrip(cfgs, tmp_path, monkeypatch):
    (tmp_path / "base_mod.py").write_text("LOADED = True\n")
    (tmp_path / "child_mod.py").write_text("LOADED = True\n")
    (tmp_path / "cli_mod.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = C.load(cfgs / "child.yml", overrides=["train.epochs=2"], imports=["cli_mod"])
    import sys
    assert {"base_mod", "child_mod", "cli_mod"} <= set(sys.modules)
    text = C.dump(cfg, tmp_path / "out" / "config.yml")
    again = yaml.safe_load((tmp_path / "out" / "config.yml").read_text())
    assert again == yaml.safe_load(text) and again["train"]["epochs"] == 2
    assert again["_source_"].endswith("child.yml")
    for m in ("base_mod", "child_mod", "cli_mod"):
        sys.modules.pop(m, None)


def test_bad_files(tmp_path):
    with pytest.raises(C.ConfigError, match="not found"):
        C.load(tmp_path / "nope.yml")
    write(tmp_path / "bad.yml", "model: [unclosed\n")
    with pytest.raises(C.ConfigError, match="bad.yml: not valid YAML"):
        C.load(tmp_path / "bad.yml")
    write(tmp_path / "a.yml", "_base_: b.yml\nx: 1\n")
    write(tmp_path / "b.yml", "_base_: a.yml\ny: 1\n")
    with pytest.raises(C.ConfigError, match="circular"):
        C.load(tmp_path / "a.yml")
    write(tmp_path / "list.yml", "- 1\n- 2\n")
    with pytest.raises(C.ConfigError, match="top level must be a mapping"):
        C.load(tmp_path / "list.yml")


def test_get_and_replace(cfgs):
    cfg = C._load_with_bases(cfgs / "child.yml", ())
    assert C.get(cfg, "model.backbone.kernel_size") == 5
    assert C.get(cfg, "model.nothing", None) is None
    with pytest.raises(C.ConfigError, match="Did you mean model.backbone"):
        C.get(cfg, "model.backbone_")
    merged = C.merge(cfg, {"model": {"backbone": {"_replace_": True, "type": "X"}}})
    assert merged["model"]["backbone"] == {"type": "X"}

def test_replace_marker_survives_bases_and_never_leaks(tmp_path):
    write(tmp_path / "a.yml", "data: {train: {dataset: {type: WiderFace, root: x}, batch_size: 2}}\n")
    write(tmp_path / "b.yml", "data: {train: {dataset: {_replace_: true, type: CocoFaces, ann_file: y}}}\n"
                              "train: {optimizer: {_replace_: true, type: AdamW}}\n")
    write(tmp_path / "c.yml", "_base_: [a.yml, b.yml]\n")
    cfg = C.load(tmp_path / "c.yml")
    assert cfg["data"]["train"]["dataset"] == {"type": "CocoFaces", "ann_file": "y"}  # replaced, root gone
    assert cfg["data"]["train"]["batch_size"] == 2 and cfg["train"]["optimizer"] == {"type": "AdamW"}  # no marker left


def test_override_list_index_errors_name_the_list(cfgs):
    cfg = C._load_with_bases(cfgs / "child.yml", ())
    with pytest.raises(C.ConfigError, match=r"'train.freeze' is a list of 1 items; expected an index 0..0, got '3'"):
        C.apply_overrides(cfg, ["train.freeze.3=1"])
    with pytest.raises(C.ConfigError, match=r"'train.freeze' is a list of 1 items.*got 'first'"):
        C.apply_overrides(cfg, ["train.freeze.first=1"])
    out = C.apply_overrides({"a": [{"b": 1}, {"b": 2}]}, ["a.1.b=5"])
    assert out == {"a": [{"b": 1}, {"b": 5}]}


def test_override_through_a_list_into_a_value_is_a_config_error():
    with pytest.raises(C.ConfigError, match=r"'a.0' is a value, not a section"):
        C.apply_overrides({"a": [1, 2]}, ["a.0.b=3"])


def test_empty_imports_key_is_an_empty_list(tmp_path):
    p = tmp_path / "c.yml"
    p.write_text("imports:\nmodel: {}\n")
    assert C.load(p)["imports"] == []
    assert C.load(p, imports=["json"])["imports"] == ["json"]


def test_one_module_name_is_one_module_never_its_letters(tmp_path, monkeypatch):
    """``imports: json`` imported ``j``, ``s``, ``o`` and ``n`` (a string iterated letter by letter)."""
    p = tmp_path / "c.yml"
    p.write_text("imports: json\nmodel: {}\n")
    assert C.load(p)["imports"] == ["json"]
    assert C.load(tmp_path / "c.yml", overrides=["imports=csv"], imports=["json"])["imports"] == ["csv", "json"]
    (tmp_path / "child.yml").write_text("_base_: c.yml\nimports: csv\n")
    assert C.load(tmp_path / "child.yml")["imports"] == ["json", "csv"]
    with pytest.raises(C.ConfigError, match=r"c.yml: imports = \{'a': 1\}: expected a list of module names"):
        p.write_text("imports: {a: 1}\nmodel: {}\n")
        C.load(p)


def test_diff_one_sided_keys_count_for_resume_and_default_for_architecture():
    """One diff for both checks: resume counts a key set on one side only, the architecture check takes it as the
    class default (only ``type`` counts); numbers compare by value."""
    old = {"train": {"lr": 1, "epochs": 20}, "head": {"type": "SSDHead"}}
    new = {"train": {"lr": 1.0, "epochs": 30, "ema": 0.9}, "head": {"type": "SSDHead", "prior_prob": 0.01}}
    assert C.diff(old, new) == ["head.prior_prob: checkpoint '<unset>' vs config 0.01",
                                "train.ema: checkpoint '<unset>' vs config 0.9",
                                "train.epochs: checkpoint 20 vs config 30"]
    assert C.diff(old["head"], new["head"], "model.head", one_sided=None, always=("type",)) == []
    assert C.diff({}, {"type": "SubPixelSSDHead"}, "model.head", one_sided=None, always=("type",)) == [
        "model.head.type: checkpoint None vs config 'SubPixelSSDHead'"]


def test_set_accepts_the_documented_arguments_of_a_registry_built_part_without_plus():
    """``--set data.train.dataset.on_bad_sample=skip`` needed ``+`` (the file does not spell it out); a key that is
    neither there nor documented still does, and the error says so."""
    cfg = C.load("quickstart", overrides=["data.train.dataset.on_bad_sample=skip", "model.postprocess.sigmoid_clip=50",
                                          "train.optimizer.amsgrad=true"])
    assert cfg["data"]["train"]["dataset"]["on_bad_sample"] == "skip"
    assert cfg["model"]["postprocess"]["sigmoid_clip"] == 50 and cfg["train"]["optimizer"]["amsgrad"] is True
    with pytest.raises(C.ConfigError) as err:
        C.load("quickstart", overrides=["data.train.dataset.on_bad_sampl=skip"])
    msg = str(err.value)
    assert "data.train.dataset also takes: data.train.dataset.on_bad_sample." in msg
    assert msg.endswith("To add a key the config does not spell out, write --set +data.train.dataset.on_bad_sampl=skip")
    with pytest.raises(C.ConfigError, match=r"Did you mean model.postprocess.max_det\?.* write --set "
                                            r"\+model.postprocess.max_dett=3$"):
        C.load("quickstart", overrides=["model.postprocess.max_dett=3"])


def test_non_utf8_config_is_a_config_error(tmp_path):
    (tmp_path / "latin1.yml").write_bytes("# caf\xe9\nmodel: {}\n".encode("latin-1"))
    with pytest.raises(C.ConfigError, match=r"latin1.yml: not UTF-8 text \(byte 0xe9 at offset 5\); save the"):
        C.load(tmp_path / "latin1.yml")


def test_shipped_configs_find_the_demo_set_from_any_folder(tmp_path, monkeypatch):
    """The demo set ships inside the package: ``${BLAZEKIT_DEMO}``, not a path relative to the checkout."""
    from blazekit.data import DEMO_ROOT
    from blazekit.data.loader import check_dataset_paths

    monkeypatch.chdir(tmp_path)
    cfg = C.load("quickstart")
    check_dataset_paths(cfg, splits=("train", "val"))  # raised DatasetNotFoundError outside the checkout
    assert C.expand_env(cfg["data"]["val"]["dataset"])["ann_file"] == str(DEMO_ROOT / "annotations.json")


def test_expand_env_defaults_and_errors(monkeypatch):
    from blazekit.config import ConfigError, expand_env

    monkeypatch.setenv("BLAZEKIT_SHARED", "/data/shared")
    assert expand_env({"a": ["${BLAZEKIT_SHARED}/x", 3]}) == {"a": ["/data/shared/x", 3]}
    assert expand_env("${NOPE_NOT_SET:-/fallback}/y") == "/fallback/y"
    with pytest.raises(ConfigError, match="NOPE_NOT_SET"):
        expand_env("${NOPE_NOT_SET}/y")
