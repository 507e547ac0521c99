"""The package's import graph: the bottom layer (errors, registry, options, config) imports no concrete part, and no
two modules import each other, directly or around a circle (any import counts, also inside functions). And tests/
mirrors the package: tests/<x>/ tests blazekit.<x>, only the package-wide tests sit at the top."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

from blazekit.errors import UserError

from tests.conftest import REPO

PKG = REPO / "blazekit"

#: the bottom layer and the only blazekit modules each may import
BOTTOM = {"blazekit.errors": set(), "blazekit.registry": {"blazekit.errors"},
          "blazekit.options": {"blazekit.errors", "blazekit.registry"},
          "blazekit.config": {"blazekit.errors", "blazekit.registry", "blazekit.options"}}
#: detection parts moved beside the models (issue #20 item 5); their old paths stay as re-export shims
MOVED_TO_MODELS = ("anchors", "boxes", "coder", "losses", "matcher", "postprocess")
#: circles still to remove, by the issue #20 item that removes them (item 4: the build_detector shim in detector.py)
KNOWN_CIRCLES: List[Set[str]] = []  # none since issue #20 item 4
#: the tests of the package as a whole: the only test files at the top of tests/
PACKAGE_WIDE = {"test_layers.py", "test_registry.py", "test_config.py", "test_options.py", "test_checkpoint_safety.py"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> Dict[str, Set[str]]:
    """blazekit module -> the blazekit modules it imports (``from . import x`` names submodule x when it is one)."""
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        found: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        graph[mod] = {m for m in found if m in files and m != mod}
    return graph


def circles(graph: Dict[str, Set[str]]) -> List[Set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    out: List[Set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_bottom_layer_imports_no_concrete_part():
    graph = import_graph()
    for mod, allowed in BOTTOM.items():
        assert graph[mod] <= allowed, f"{mod} imports {sorted(graph[mod] - allowed)}"


def test_no_import_circle():
    found = circles(import_graph())
    assert [c for c in found if c not in KNOWN_CIRCLES] == [], "import circles"


def test_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert circles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("path, name", [
    ("blazekit.config", "ConfigError"), ("blazekit.registry", "RegistryError"), ("blazekit.registry", "BuildError"),
    ("blazekit.registry", "ArgumentValueError"), ("blazekit.registry", "UserModuleError"),
    ("blazekit.data.datasets.base", "DataError"), ("blazekit.data.loader", "DatasetNotFoundError"),
    ("blazekit.checkpoint", "CheckpointError"), ("blazekit.engine.state", "TrainingError"),
    ("blazekit.evaluation.wider", "WiderFormatError"), ("blazekit.inference", "SourceError"),
    ("blazekit.convert", "ConversionError"), ("blazekit.deploy.tflite", "TFLiteExportError"),
    ("blazekit.engine.cli", "UsageError"), ("blazekit.models.detector", "InputSizeError"),
])
def test_every_user_error_derives_one_base(path, name):
    """The tools catch UserError alone; each error keeps its builtin base for existing except clauses."""
    import importlib

    cls = getattr(importlib.import_module(path), name)
    assert issubclass(cls, UserError)
    assert issubclass(cls, (ValueError, KeyError, TypeError, RuntimeError, FileNotFoundError))


def test_every_error_class_of_the_package_is_a_user_error():
    """A new ``class XError`` anywhere in blazekit is listed above (so it is a UserError) or derives one that is."""
    listed = {name for _, name in test_every_user_error_derives_one_base.pytestmark[0].args[1]}
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error") and node.name != "UserError":
                assert node.name in listed, f"{path.relative_to(REPO)}: {node.name} is not checked to be a UserError"


def layout_problems(tests: Path, package: Path, top: Set[str]) -> List[str]:
    """Where ``tests`` does not mirror ``package``: a folder other than fixtures/ that names no subpackage or module
    (a module may grow into a package and keep its folder), a folder without ``__init__.py`` (the folders are
    packages, so two may hold files of the same name), a test file deeper than one folder or at the top and not in
    ``top``, and an entry of ``top`` that is gone."""
    problems = [f"{f} is listed as package-wide but is not in {tests.name}/" for f in sorted(top)
                if not (tests / f).is_file()]
    for folder in sorted(p for p in tests.iterdir() if p.is_dir() and p.name[0] not in "._" and p.name != "fixtures"):
        if not ((package / folder.name / "__init__.py").is_file() or (package / f"{folder.name}.py").is_file()):
            problems.append(f"{tests.name}/{folder.name}/ names no part of {package.name}")
        if not (folder / "__init__.py").is_file():
            problems.append(f"{tests.name}/{folder.name}/ has no __init__.py")
    for path in sorted(tests.rglob("test_*.py")):
        parts = path.relative_to(tests).parts
        if parts[0] != "fixtures" and (len(parts) > 2 or (len(parts) == 1 and parts[0] not in top)):
            problems.append(f"{tests.name}/{'/'.join(parts)} is not in a folder named after what it tests")
    return problems


def test_tests_mirror_the_package_layout():
    """A test is found beside the code it tests, not by the order the work was done in (issue #20 item 5)."""
    assert layout_problems(REPO / "tests", PKG, PACKAGE_WIDE) == []


def test_layout_check_finds_drift(tmp_path):
    pkg, tests = tmp_path / "pkg", tmp_path / "tests"
    for f in ("pkg/__init__.py", "pkg/data/__init__.py", "pkg/convert.py", "tests/test_config.py",
              "tests/data/__init__.py", "tests/data/test_loader.py", "tests/convert/__init__.py",
              "tests/fixtures/test_made_up.py"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).touch()
    assert layout_problems(tests, pkg, {"test_config.py"}) == []
    for f in ("tests/test_train_thing.py", "tests/engine/test_trainer.py", "tests/data/deeper/test_x.py"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).touch()
    assert layout_problems(tests, pkg, {"test_config.py", "test_gone.py"}) == [
        "test_gone.py is listed as package-wide but is not in tests/",
        "tests/engine/ names no part of pkg", "tests/engine/ has no __init__.py",
        "tests/data/deeper/test_x.py is not in a folder named after what it tests",
        "tests/test_train_thing.py is not in a folder named after what it tests"]


def test_evaluation_knows_no_trainer():
    """blazekit.evaluation (the metrics and the evaluator the trainer calls) imports nothing from blazekit.engine."""
    graph = import_graph()
    for mod, deps in graph.items():
        if mod.startswith("blazekit.evaluation"):
            assert not {d for d in deps if d.startswith("blazekit.engine")}, f"{mod} imports the engine"


def test_evaluator_shim_gives_the_objects_of_its_new_home():
    """blazekit.engine.evaluator (old scripts) re-exports blazekit.evaluation.evaluator's own objects, not copies;
    the backend choice is deploy.backends' one."""
    import blazekit
    from blazekit.deploy import backends
    from blazekit.engine import evaluator as old
    from blazekit.evaluation import evaluator as new

    for name in old.__all__ + ["_dataset_cfgs"]:
        assert getattr(old, name) is getattr(new, name), name
    assert new.Evaluator.__module__ == "blazekit.evaluation.evaluator"
    assert blazekit.evaluate is new.evaluate
    assert new.resolve_backend is backends.resolve_backend and new.BACKENDS is backends.BACKENDS


#: every public name the single-file blazekit/convert.py had, and the module of blazekit/convert/ that holds it now
CONVERT_NAMES = {
    "source": ["ConversionError", "SourceConv", "SourceModel", "PathLike"],
    "tflite": ["read_tflite", "sparse_coords", "_op_name"],
    "hollance": ["read_hollance"],
    "mapping": ["build_target", "ConvPair", "pair_convs", "map_to_state_dict"],
    "checkpoints": ["file_md5", "convert_tflite", "convert_hollance", "guess_variant", "default_model_cfg",
                    "convert_checkpoint", "save_converted"],
}


def test_convert_package_keeps_every_name_of_the_old_module():
    import importlib

    import blazekit.convert as convert

    for module, names in CONVERT_NAMES.items():
        home = importlib.import_module(f"blazekit.convert.{module}")
        for name in names:
            assert getattr(convert, name) is getattr(home, name), f"blazekit.convert.{name}"
    assert set(convert.__all__) >= {n for names in CONVERT_NAMES.values() for n in names if not n.startswith("_")}
    from blazekit.deploy.tflite import TFLiteExportError

    assert issubclass(TFLiteExportError, convert.ConversionError)


def test_every_command_opens_through_commands_common():
    """Config loading (with --set / --import), the weights to run, building the detector and the --device /
    --backend check live once in commands/common.py: no command does them itself, and every command but wider_eval
    (no config, no detector) uses it."""
    own = {"inference_weights", "build_detector", "device_problem", "backend_problem"}
    users = set()
    for path in sorted((PKG / "commands").glob("*.py")):
        if path.stem in ("__init__", "common"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module == "common":
                users.add(path.stem)
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                assert name not in own, f"commands/{path.name}:{node.lineno} calls {name} itself"
                assert not (name == "load" and isinstance(f, ast.Attribute)), \
                    f"commands/{path.name}:{node.lineno} loads its config itself (use common.load_config)"
    assert users == {"browse", "convert", "eval", "export", "predict", "train"}


#: the longest function anywhere in the tree (issue #20: a function that needs more is two functions)
MAX_FUNCTION_LINES = 80


def test_no_function_is_longer_than_80_lines():
    """Every function and method of the package, the tools, the benchmarks and the tests fits 80 lines."""
    long = []
    for folder in ("blazekit", "tools", "benchmarks", "tests"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


def _public_top_level_names(path: Path) -> List[str]:
    """Classes, functions and constants a module defines at top level, without a leading underscore."""
    names: List[str] = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return [n for n in names if not n.startswith("_")]


@pytest.mark.parametrize("name", MOVED_TO_MODELS)
def test_old_module_path_is_a_shim_of_the_models_module(name):
    """``blazekit.<name>`` gives the very objects of ``blazekit.models.<name>`` and defines nothing itself (so
    importing it registers nothing a second time)."""
    import importlib

    old = importlib.import_module(f"blazekit.{name}")
    new = importlib.import_module(f"blazekit.models.{name}")
    public = _public_top_level_names(PKG / "models" / f"{name}.py")
    assert set(new.__all__) <= set(public) and public
    for attr in public:
        assert getattr(old, attr) is getattr(new, attr), f"blazekit.{name}.{attr}"
    assert old.__all__ == new.__all__
    tree = ast.parse((PKG / f"{name}.py").read_text(encoding="utf-8"))
    assert ast.get_docstring(tree).startswith(f"Moved to :mod:`blazekit.models.{name}`")
    assert all(isinstance(n, ast.ImportFrom) for n in tree.body[1:])


def test_no_module_of_the_package_imports_an_old_path():
    """The shims are for users' imports; blazekit itself imports the parts from models/."""
    shims = {f"blazekit.{n}" for n in MOVED_TO_MODELS}
    graph = import_graph()
    for mod, imported in graph.items():
        if mod not in shims:
            assert not imported & shims, f"{mod} imports {sorted(imported & shims)}"


def test_old_paths_keep_registered_classes_and_pickles():
    import pickle

    import blazekit.anchors
    import blazekit.postprocess
    from blazekit.models.matcher import IoUMatcher
    from blazekit.registry import ANCHOR_GENERATORS, POSTPROCESSORS

    assert ANCHOR_GENERATORS.get("SSDAnchorGenerator") is blazekit.anchors.SSDAnchorGenerator
    assert POSTPROCESSORS.get("NMS") is blazekit.postprocess.NMS
    # a pickle written when the class lived at the old path (protocol 0 GLOBAL opcode) loads the moved class
    assert pickle.loads(b"cblazekit.matcher\nIoUMatcher\n.") is IoUMatcher

