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


def _registering_modules():
    """registry variable name -> the blazekit modules that call ``NAME.register(...)`` or ``NAME.add(...)``."""
    import ast
    from pathlib import Path

    from blazekit import registry

    names = {k for k, v in vars(registry).items() if isinstance(v, Registry)}
    pkg = Path(registry.__file__).parent
    found = {k: set() for k in names}
    for path in pkg.rglob("*.py"):
        parts = path.relative_to(pkg.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("register", "add") and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in names):
                found[node.func.value.id].add(module)
    return found


def test_every_registering_module_is_a_location_of_its_registry():
    """The locations are exactly the modules that register into the registry: none missed, none stale."""
    from blazekit import registry

    for var, modules in _registering_modules().items():
        reg = getattr(registry, var)
        assert modules, f"no module registers into {var}"
        assert set(reg.locations) == modules, f"{var}.locations {sorted(reg.locations)} vs registering {sorted(modules)}"


# For every registry, a forked child of a process that imported only the third-party libraries (paid once) lists
# the registry's names; the parent then imports everything and lists them again.
_ONE_LOOKUP_EACH = """
import json, os, sys
import numpy, torch, torchvision, cv2  # noqa: F401
from blazekit import registry
out = {}
for name, reg in registry.ALL_REGISTRIES.items():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        names = reg.names()
        os.write(w, json.dumps([names, sorted(m for m in sys.modules if m.startswith("blazekit"))]).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out[name] = json.loads(f.read())
    os.waitpid(pid, 0)
for reg in registry.ALL_REGISTRIES.values():
    for location in reg.locations:
        __import__(location)
print(json.dumps({k: [out[k], reg.names()] for k, reg in registry.ALL_REGISTRIES.items()}))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_each_registry_finds_its_builtins_through_its_own_locations():
    import json
    import os
    import subprocess
    from pathlib import Path

    from blazekit.registry import ALL_REGISTRIES

    repo = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-c", _ONE_LOOKUP_EACH], capture_output=True, text=True, cwd=repo,
                       env={**os.environ, "PYTHONPATH": str(repo)}, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(result) == set(ALL_REGISTRIES)
    for name, ((names, modules), all_names) in result.items():
        assert names and names == all_names, f"{name}: own locations give {names}, everything loaded {all_names}"
        assert set(ALL_REGISTRIES[name].locations) <= set(modules)
        # a lookup stays in its registry's layer: model parts import no data or engine, data no models or engine...
        home = {loc.split(".")[1] for loc in ALL_REGISTRIES[name].locations}
        layers = {m.split(".")[1] for m in modules if m.count(".") and m.split(".")[1] in ("models", "data", "engine")}
        assert layers == home, f"{name}: looking it up imported {sorted(layers - home)}"
    assert result["anchor_generators"][0][1] == ["blazekit", "blazekit.errors", "blazekit.models",
                                                 "blazekit.models.anchors", "blazekit.registry"]


def test_force_replaces_a_builtin_for_good(tmp_path, monkeypatch):
    """``force=True`` loads the built-ins first, so a replacement is not undone when they load on the next lookup."""
    (tmp_path / "reg_home_mod.py").write_text(
        "from blazekit.registry import Registry\nTHINGS = Registry('things', locations=['reg_builtin_mod'])\n")
    (tmp_path / "reg_builtin_mod.py").write_text(
        "from reg_home_mod import THINGS\n\n@THINGS.register()\nclass Builtin:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        from reg_home_mod import THINGS

        assert "reg_builtin_mod" not in sys.modules  # making a registry imports nothing

        @THINGS.register("Builtin", force=True)
        class Mine:
            pass

        assert THINGS.get("Builtin") is Mine and THINGS.names() == ["Builtin"]
    finally:
        sys.modules.pop("reg_home_mod", None)
        sys.modules.pop("reg_builtin_mod", None)
