"""Name -> class registries and the one builder that turns config dicts into objects.

Small on purpose (fvcore-style): a registry is a dict with a decorator. Every part of a detector is
a typed dict (``{"type": "BlazeFaceFront", ...}``); :func:`build` looks the type up, merges
defaults and calls it. Errors say what the user typed, where in the config, what exists and the
closest matches, because "X is not in the registry" alone is the most asked question of mmdet users.
"""
from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar

from .errors import UserError, close_matches

T = TypeVar("T")


class RegistryError(UserError, KeyError):
    """Unknown registry name or unusable config entry; the message is the whole explanation."""

    def __str__(self) -> str:  # KeyError would repr() the message and add quotes
        return str(self.args[0]) if self.args else ""


class BuildError(UserError, TypeError):
    """A registered object could not be built from its config (bad or missing arguments)."""


class ArgumentValueError(BuildError, ValueError):
    """A registered class refused an argument's value (its own range check), named with the config path; still a
    ``ValueError``, as the class raised it."""


class UserModuleError(RegistryError, ImportError):
    """A module named in ``imports:`` / ``--import`` was not found (a user error: one line, no traceback)."""


def _module_dir(name: str, dirs: Iterable[Any]) -> Optional[str]:
    """The first of ``dirs`` holding the top-level package or module of ``name`` (``my_faces.py`` or ``my_faces/``)."""
    top = name.split(".")[0]
    for d in dirs:
        d = os.path.abspath(os.fspath(d))
        if os.path.isfile(os.path.join(d, top + ".py")) or os.path.isdir(os.path.join(d, top)):
            return d
    return None


def import_modules(modules: Iterable[str], search: Iterable[Any] = ()) -> None:
    """Import user modules so their ``@REGISTRY.register()`` decorators run.

    Called by :func:`blazekit.config.load` for ``imports:`` and by every tool for ``--import``.
    A module that is not on ``sys.path`` is looked for in the current directory, then in ``search`` (the
    config file's folder); the folder found is appended to ``sys.path``, which DataLoader workers inherit
    (forked ones by copy, spawned ones because multiprocessing sends the parent's ``sys.path``), so
    unpickling the user's dataset class in a worker finds the same module.
    """
    for name in [modules] if isinstance(modules, str) else modules or []:  # one name is one module
        try:
            importlib.import_module(name)
            continue
        except ModuleNotFoundError as exc:
            if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
                raise  # the module exists but imports something missing: its own traceback says what
            dirs = [os.getcwd(), *search]
            found = _module_dir(name, dirs)
            if found is None:
                where = ", ".join(dict.fromkeys(os.path.abspath(os.fspath(d)) for d in dirs))
                raise UserModuleError(
                    f"could not import user module {name!r} (from 'imports:' or --import): no {name.split('.')[0]}.py "
                    f"or package on sys.path, in the current directory or beside the config (looked in: {where}). "
                    "Put it there, install it, or add its folder to PYTHONPATH"
                ) from None
        if found not in sys.path:
            sys.path.append(found)
        importlib.invalidate_caches()
        importlib.import_module(name)


def _locate(path: str) -> Any:
    """Resolve ``"pkg.module:Attr"`` to the object (names without a colon are registry names)."""
    mod_name, attr = path.split(":", 1)
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise RegistryError(f"type {path!r}: cannot import module {mod_name!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RegistryError(f"type {path!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


class Registry:
    """A named mapping from type names to classes or factory functions.

    ``locations`` (mmengine style) names the modules whose import registers this registry's built-ins. They are
    strings, imported on the first lookup (``get``, ``build``, ``names``, ``in``, ``len``) and not before, so
    ``import blazekit`` and the tools' ``--help`` stay free of torch, and a lookup imports only what its registry
    holds. Registering imports nothing, except that ``force=True`` imports the locations first, so the replacement
    of a built-in is not itself replaced when the built-ins load later.
    """

    def __init__(self, name: str, locations: Sequence[str] = ()) -> None:
        self.name = name
        self.locations: Tuple[str, ...] = tuple(locations)
        self._items: Dict[str, Callable[..., Any]] = {}
        self._imported = "absent"  # -> "loading" -> "loaded"

    def import_from_location(self) -> None:
        """Import :attr:`locations` once (their decorators fill this registry); later calls do nothing."""
        if self._imported != "absent":  # "loading": a location looks this registry up while being imported
            return
        self._imported = "loading"
        try:
            for name in self.locations:
                importlib.import_module(name)
        except BaseException:
            self._imported = "absent"
            raise
        self._imported = "loaded"

    def register(self, name: Optional[str] = None, *, force: bool = False) -> Callable[[T], T]:
        """Decorator: ``@BACKBONES.register()`` or ``@BACKBONES.register("MyName")``."""

        def deco(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            if force:
                self.import_from_location()
            if key in self._items and self._items[key] is not obj and not force:
                old = self._items[key]
                # Re-importing the same module (e.g. in a worker or via a second path) is harmless.
                same = getattr(old, "__qualname__", None) == getattr(obj, "__qualname__", None) and getattr(
                    old, "__module__", None
                ) == getattr(obj, "__module__", None)
                if not same:
                    raise RegistryError(
                        f"{self.name}: {key!r} is already registered by "
                        f"{old.__module__}.{old.__qualname__}; pass force=True to replace it"
                    )
            self._items[key] = obj  # type: ignore[assignment]
            return obj

        return deco

    def add(self, name: str, obj: Callable[..., Any], force: bool = False) -> None:
        """Register without a decorator (e.g. third-party classes such as torch optimizers)."""
        self.register(name, force=force)(obj)

    def names(self) -> List[str]:
        """Registered names, sorted (what error messages list)."""
        self.import_from_location()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self.import_from_location()
        return name in self._items

    def __len__(self) -> int:
        self.import_from_location()
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {self.names()})"

    def get(self, name: str, where: str = "") -> Callable[..., Any]:
        """The registered object, or a ``"pkg.module:Class"`` path resolved by import."""
        self.import_from_location()
        if name in self._items:
            return self._items[name]
        if ":" in name:
            return _locate(name)
        at = f" at {where}" if where else ""
        hint = close_matches(name, self._items)
        msg = f"unknown {self.name} type {name!r}{at}."
        if hint:
            msg += f" Did you mean {', '.join(repr(h) for h in hint)}?"
        msg += f" Registered {self.name}: {', '.join(self.names()) or '(none)'}."
        msg += (
            " For your own class, decorate it with "
            f"@{self.name.upper()}.register() and add its module to 'imports:' (or --import), "
            "or write type: 'your.module:YourClass'."
        )
        raise RegistryError(msg)

    def arguments(self, name: str) -> List[str]:
        """The keyword arguments type ``name`` documents (its ``__init__``'s, with its bases' where it takes
        ``**kwargs``), as error messages list them."""
        return _documented_args(self.get(name))

    def build(self, cfg: Mapping[str, Any], where: str = "", **defaults: Any) -> Any:
        """Build ``cfg["type"]`` with the other keys as arguments; ``defaults`` fill gaps.

        ``where`` is the config path (``model.backbone``) quoted in errors.
        """
        return build(self, cfg, where=where, **defaults)


def _signature_args(fn: Callable[..., Any]) -> Optional[Tuple[List[str], bool]]:
    """(named parameters, takes ``**kwargs``) of ``fn``, or None when it has no inspectable signature."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = sig.parameters.values()
    names = [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def _accepted_args(fn: Callable[..., Any]) -> Optional[List[str]]:
    """The keyword arguments ``fn`` accepts, or None when it takes ``**kwargs`` (anything may be valid)."""
    found = _signature_args(fn)
    if found is None or found[1]:
        return None
    return found[0]


def _documented_args(fn: Callable[..., Any]) -> List[str]:
    """Arguments for error messages: a class whose ``__init__`` takes ``**kwargs`` (e.g. a dataset forwarding
    ``min_size`` to :class:`FaceDataset`) also lists those of its base classes' ``__init__``."""
    out: List[str] = []
    chain = [c.__init__ for c in inspect.getmro(fn) if "__init__" in vars(c)] if inspect.isclass(fn) else [fn]
    for init in chain:
        found = _signature_args(init)
        if found is None:
            break
        out += [n for n in found[0] if n not in out]
        if not found[1]:
            break
    return out


def build(registry: Registry, cfg: Mapping[str, Any], where: str = "", **defaults: Any) -> Any:
    """Instantiate ``registry[cfg['type']](**cfg_without_type, **defaults_not_in_cfg)``."""
    label = where or registry.name
    if cfg is None or not isinstance(cfg, Mapping):
        raise BuildError(f"{label}: expected a mapping with a 'type' key, got {cfg!r}")
    if "type" not in cfg:
        raise BuildError(
            f"{label}: missing 'type'. Registered {registry.name}: {', '.join(registry.names())}"
        )
    kwargs = {k: v for k, v in cfg.items() if k != "type"}
    for k, v in defaults.items():
        kwargs.setdefault(k, v)
    type_name = cfg["type"]
    obj = registry.get(type_name, where=label) if isinstance(type_name, str) else type_name
    accepted = _accepted_args(obj)
    if accepted is not None:
        unknown = [k for k in kwargs if k not in accepted]
        # Defaults are only offered; drop the ones the class does not take.
        unknown_user = [k for k in unknown if k in cfg]
        for k in unknown:
            if k not in cfg:
                kwargs.pop(k)
        if unknown_user:
            parts = []
            for k in unknown_user:
                m = close_matches(k, accepted)
                parts.append(f"{k!r}" + (f" (did you mean {m[0]!r}?)" if m else ""))
            raise BuildError(
                f"{label}: {type_name} does not accept {', '.join(parts)}. "
                f"Accepted arguments: {', '.join(accepted)}"
            )
    try:
        return obj(**kwargs)
    except ValueError as exc:
        if type(exc) is not ValueError:  # DataError, ConfigError, ...: already a user error that names its file
            raise
        raise ArgumentValueError(f"{label}: {exc}") from exc
    except TypeError as exc:
        known = accepted if accepted is not None else _documented_args(obj)
        hint = ""
        bad = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if bad and known:
            m = close_matches(bad.group(1), known)
            hint = f" (did you mean {m[0]!r}?)" if m else ""
        raise BuildError(
            f"{label}: building {type_name} failed: {exc}{hint}. "
            f"Accepted arguments: {', '.join(known) if known else '(see its signature)'}"
        ) from exc


# Each registry with the modules that hold its built-ins (tests/test_registry.py checks that every module
# registering into a registry is named here).
BACKBONES = Registry("backbones", locations=["blazekit.models.backbones", "blazekit.models.full_range"])
NECKS = Registry("necks", locations=["blazekit.models.full_range"])
HEADS = Registry("heads", locations=["blazekit.models.heads", "blazekit.models.full_range"])
ANCHOR_GENERATORS = Registry("anchor_generators", locations=["blazekit.models.anchors"])
BOX_CODERS = Registry("box_coders", locations=["blazekit.models.coder"])
MATCHERS = Registry("matchers", locations=["blazekit.models.matcher"])
LOSSES = Registry("losses", locations=["blazekit.models.losses"])
POSTPROCESSORS = Registry("postprocessors", locations=["blazekit.models.postprocess"])
DETECTORS = Registry("detectors", locations=["blazekit.models.build"])
DATASETS = Registry("datasets", locations=[
    "blazekit.data.datasets.widerface", "blazekit.data.datasets.coco", "blazekit.data.datasets.yolo",
    "blazekit.data.datasets.folder", "blazekit.data.datasets.concat", "blazekit.data.mosaic"])
TRANSFORMS = Registry("transforms", locations=["blazekit.data.transforms"])
OPTIMIZERS = Registry("optimizers", locations=["blazekit.engine.optim"])
LR_SCHEDULERS = Registry("lr_schedulers", locations=["blazekit.engine.optim"])

ALL_REGISTRIES = {
    r.name: r
    for r in (
        BACKBONES, NECKS, HEADS, ANCHOR_GENERATORS, BOX_CODERS, MATCHERS, LOSSES,
        POSTPROCESSORS, DETECTORS, DATASETS, TRANSFORMS, OPTIMIZERS, LR_SCHEDULERS,
    )
}
