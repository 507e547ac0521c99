"""Registry: registration, building, and errors that tell the user what to type."""
import sys
import textwrap

import pytest

from blazekit.registry import BuildError, Registry, RegistryError, build, import_modules


@pytest.fixture
def reg():
    r = Registry("backbones")

    @r.register()
    class BlazeFaceFrontBackbone:
        def __init__(self, kernel_size=3, width=1.0):
            self.kernel_size = kernel_size
            self.width = width

    @r.register("BackNet")
    class _Back:
        def __init__(self, depth):
            self.depth = depth

    return r


def test_build_with_defaults_and_names(reg):
    obj = reg.build({"type": "BlazeFaceFrontBackbone", "kernel_size": 5}, width=0.5, unused_default=1)
    assert (obj.kernel_size, obj.width) == (5, 0.5)  # defaults fill gaps, unknown defaults are dropped
    assert reg.build({"type": "BackNet", "depth": 3}).depth == 3
    assert reg.names() == ["BackNet", "BlazeFaceFrontBackbone"]
    assert "BackNet" in reg and len(reg) == 2


def test_unknown_name_lists_registered_and_close_matches(reg):
    with pytest.raises(RegistryError) as e:
        reg.build({"type": "BlazeFaceFrontBackbon"}, where="model.backbone")
    msg = str(e.value)
    assert "'BlazeFaceFrontBackbon'" in msg and "model.backbone" in msg
    assert "Did you mean 'BlazeFaceFrontBackbone'" in msg
    assert "Registered backbones: BackNet, BlazeFaceFrontBackbone" in msg


def test_wrong_argument_names_path_class_and_accepted(reg):
    with pytest.raises(BuildError) as e:
        reg.build({"type": "BlazeFaceFrontBackbone", "kernel": 5}, where="model.backbone")
    msg = str(e.value)
    assert "model.backbone" in msg and "BlazeFaceFrontBackbone" in msg
    assert "'kernel' (did you mean 'kernel_size'?)" in msg
    assert "Accepted arguments: kernel_size, width" in msg


def test_missing_required_argument(reg):
    with pytest.raises(BuildError, match=r"model.backbone: building BackNet failed.*depth"):
        reg.build({"type": "BackNet"}, where="model.backbone")


def test_missing_type_and_not_a_mapping(reg):
    with pytest.raises(BuildError, match="missing 'type'"):
        build(reg, {"kernel_size": 3}, where="model.backbone")
    with pytest.raises(BuildError, match="expected a mapping"):
        build(reg, ["x"], where="model.backbone")


def test_duplicate_registration_refused_unless_forced(reg):
    with pytest.raises(RegistryError, match="already registered"):
        @reg.register("BackNet")
        class Other:  # noqa: F841
            pass

    @reg.register("BackNet", force=True)
    class Other2:
        pass

    assert reg.get("BackNet") is Other2


def test_module_path_type_and_user_imports(tmp_path, monkeypatch):
    (tmp_path / "my_faces_mod.py").write_text(textwrap.dedent("""
        from blazekit.registry import DATASETS

        @DATASETS.register()
        class MyFacesForRegistryTest:
            def __init__(self, root):
                self.root = root
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    from blazekit.registry import DATASETS

    obj = DATASETS.build({"type": "my_faces_mod:MyFacesForRegistryTest", "root": "x"})
    assert obj.root == "x"  # path form works without registration lookup
    import_modules(["my_faces_mod"])
    assert "MyFacesForRegistryTest" in DATASETS
    with pytest.raises(ImportError, match="no_such_module_xyz"):
        import_modules(["no_such_module_xyz"])
    sys.modules.pop("my_faces_mod", None)


def test_builtins_registered_on_import():
    import blazekit
    from blazekit.registry import ALL_REGISTRIES

    assert blazekit.__version__
    expected = {
        "backbones": "BlazeFaceFrontBackbone", "heads": "SSDHead", "anchor_generators": "SSDAnchorGenerator",
        "box_coders": "MediaPipeCoder", "matchers": "IoUMatcher", "losses": "MultiBoxLoss",
        "postprocessors": "WeightedBlending", "detectors": "BlazeFace", "datasets": "WiderFace",
        "transforms": "HorizontalFlip", "optimizers": "SGD", "lr_schedulers": "Cosine",
    }
    for reg_name, item in expected.items():
        names = ALL_REGISTRIES[reg_name].names()
        assert any(n.lower() == item.lower() for n in names), f"{item} not in {reg_name}: {names}"


def test_kwargs_forwarding_class_error_lists_base_arguments():
    """A dataset-style class (own args + **kwargs for its base) still gets the full list and a close match."""
    r = Registry("datasets")

    class Base:
        def __init__(self, transforms=None, min_size=0, on_bad_sample="raise"):
            self.min_size = min_size

    @r.register()
    class MyFaces(Base):
        def __init__(self, root, split="train", **kwargs):
            self.root = root
            super().__init__(**kwargs)

    assert r.build({"type": "MyFaces", "root": "x", "min_size": 8}).min_size == 8
    with pytest.raises(BuildError) as e:
        r.build({"type": "MyFaces", "root": "x", "min_sise": 8}, where="data.train.dataset")
    msg = str(e.value)
    assert msg.startswith("data.train.dataset: building MyFaces failed")
    assert "(did you mean 'min_size'?)" in msg
    assert "Accepted arguments: root, split, transforms, min_size, on_bad_sample" in msg
