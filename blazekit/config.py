"""YAML configs: ``_base_`` inheritance, ``--set a.b=c`` overrides, and a dump of what actually ran.

A config is a plain nested ``dict``: nothing magic to learn, and it pickles into DataLoader workers.
Rules: ``_base_`` (a path or a list, relative to the file) is loaded first and deep-merged in order;
dicts merge key by key, lists and scalars are replaced. Overrides are YAML-typed
(``--set train.lr=0.01`` gives a float) and must name an existing key unless written ``+a.b=1``.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, MutableMapping, Optional, Sequence, Union

import yaml

from . import options
from .errors import ConfigError, close_matches
from .registry import import_modules

PathLike = Union[str, os.PathLike]

#: configs shipped with blazekit (``configs/`` of the source tree) may be named without a path
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
#: the bundled demo set (``${BLAZEKIT_DEMO}`` in configs; ``blazekit.data.DEMO_ROOT``, without importing it)
DEMO_DIR = Path(__file__).resolve().parent / "data" / "demo"


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float (PyYAML's YAML 1.1 rules need ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """YAML text -> Python, with the float fix above (used for files and ``--set`` values)."""
    return yaml.load(text, Loader=_Loader)


def _resolve_path(path: PathLike, relative_to: Optional[Path] = None) -> Path:
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else []
    if not p.is_absolute():
        if relative_to is not None:
            candidates.append(relative_to / p)
        candidates.append(Path.cwd() / p)
        candidates.append(CONFIG_DIR / p)
        if p.suffix == "":
            candidates.append(CONFIG_DIR / (str(p) + ".yml"))
    for c in candidates:
        if c.is_file():
            return c.resolve()
    shipped = sorted(str(q.relative_to(CONFIG_DIR)) for q in CONFIG_DIR.rglob("*.yml")) if CONFIG_DIR.is_dir() else []
    hint = close_matches(str(path), shipped)
    msg = f"config file {str(path)!r} not found (looked in: {', '.join(str(c) for c in candidates)})."
    if hint:
        msg += f" Did you mean {', '.join(hint)}?"
    raise ConfigError(msg)


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> Dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base``: dicts merge, everything else is replaced.

    A dict value with ``_replace_: true`` replaces the base dict instead of merging into it
    (e.g. swapping a dataset type whose arguments differ).
    """
    out = copy.deepcopy(dict(base))
    for k, v in update.items():
        if isinstance(v, Mapping) and v.get("_replace_"):
            out[k] = {kk: copy.deepcopy(vv) for kk, vv in v.items() if kk != "_replace_"}
        elif isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)  # markers inside stay until load() ends: a later merge may need them
    return out


def _strip_replace(obj: Any) -> Any:
    """Drop ``_replace_`` markers left where there was nothing to replace, once every base is merged."""
    if isinstance(obj, dict):
        return {k: _strip_replace(v) for k, v in obj.items() if k != "_replace_"}
    if isinstance(obj, list):
        return [_strip_replace(v) for v in obj]
    return obj


def _read_yaml(path: Path) -> Dict[str, Any]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = parse_yaml(f.read())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          "save the config as UTF-8") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load(path: PathLike, overrides: Iterable[str] = (), imports: Iterable[str] = (),
         require: Sequence[str] = ()) -> Dict[str, Any]:
    """Load a YAML config with its bases, apply ``overrides``, validate it and import its user modules: once, so
    every tool and the trainer trust the result.

    ``imports`` (from ``--import``) and the config's ``imports:`` list are imported (before the overrides, so a
    ``--set`` may name an argument of a type they register) and recorded in ``imports``. User modules are found on
    ``sys.path``, in the current directory and beside the config file. The result is validated against
    :mod:`blazekit.options` (``require``: top-level sections that must be there, e.g. ``("model",)``), so a typo
    or an impossible value is one :class:`ConfigError` here, before any work; it records its file in ``_source_``.
    """
    source = _resolve_path(path)
    if not _read_yaml(source):
        raise ConfigError(f"{source}: the config file is empty; expected at least a model: section "
                          "(e.g. '_base_: [blazeface_front.yml]')")
    return resolve(_strip_replace(_load_with_bases(source, stack=())), overrides, imports, require, source)


def resolve(cfg: Mapping[str, Any], overrides: Iterable[str] = (), imports: Iterable[str] = (),
            require: Sequence[str] = (), source: Optional[Path] = None) -> Dict[str, Any]:
    """What :func:`load` does after reading the file, for a config given as a dict (a notebook's): user modules
    imported, ``overrides`` applied, validated once; a copy is returned."""
    search = [source.parent] if source is not None else []
    imports = list(imports)
    names = module_names(cfg.get("imports"), source)
    import_modules(names + [m for m in imports if m not in names], search=search)
    cfg = apply_overrides(dict(cfg), overrides)
    if "imports" in cfg:  # --set imports=my_faces names one module, as the file may
        cfg["imports"] = module_names(cfg["imports"], source)
    options.validate(cfg, require=require, source=str(source) if source is not None else None)
    extra = [m for m in imports if m not in cfg.get("imports", [])]
    if extra:
        cfg["imports"] = list(cfg.get("imports", [])) + extra
    import_modules(cfg.get("imports") or [], search=search)  # those a --set imports=... added
    if source is not None:
        cfg["_source_"] = str(source)
    return cfg


def _load_with_bases(path: Path, stack: tuple) -> Dict[str, Any]:
    if path in stack:
        chain = " -> ".join(str(p) for p in stack + (path,))
        raise ConfigError(f"circular _base_ inheritance: {chain}")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, (str, os.PathLike)):
        bases = [bases]
    cfg: Dict[str, Any] = {}
    for b in bases:
        cfg = merge(cfg, _load_with_bases(_resolve_path(b, path.parent), stack + (path,)))
    # imports accumulate across bases rather than being replaced
    own = module_names(data.get("imports"), path)
    imports = list(cfg.get("imports", [])) + [m for m in own if m not in cfg.get("imports", [])]
    cfg = merge(cfg, data)
    if imports or "imports" in cfg:  # an empty ``imports:`` (None) becomes []
        cfg["imports"] = imports
    return cfg


def module_names(imports: Any, source: Optional[PathLike] = None) -> List[str]:
    """``imports:`` as a list: one name (``imports: my_faces``) is one module, never its letters; null is none."""
    if imports is None:
        return []
    if isinstance(imports, str):
        return [imports]
    if isinstance(imports, (list, tuple)) and all(isinstance(m, str) for m in imports):
        return list(imports)
    where = f"{source}: " if source is not None else ""
    raise ConfigError(f"{where}imports = {imports!r:.60}: expected {options.IMPORTS_EXPECTED}")


_VAR = re.compile(r"\$\{([^}:]+)(?::-([^}]*))?\}")


def expand_env(obj: Any) -> Any:
    """Expand ``${VAR}`` / ``${VAR:-default}`` in every string of a config; an unset variable is an error.

    ``BLAZEKIT_SHARED`` (the shared data folder) defaults to ``shared/`` beside the checkout, as in the tests;
    ``BLAZEKIT_DEMO`` to the demo set inside the installed package, so shipped configs run from any folder.
    """
    if isinstance(obj, Mapping):
        return {k: expand_env(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(expand_env(v) for v in obj)
    if not isinstance(obj, str) or "${" not in obj:
        return obj

    def sub(m: "re.Match[str]") -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        if name == "BLAZEKIT_SHARED":
            return str(CONFIG_DIR.parent.parent / "shared")
        if name == "BLAZEKIT_DEMO":
            return str(DEMO_DIR)
        raise ConfigError(f"config value {obj!r} uses ${{{name}}} but the environment variable {name} is not set")

    return _VAR.sub(sub, obj)


def get(cfg: Mapping[str, Any], dotted: str, default: Any = ...) -> Any:
    """``get(cfg, "model.backbone.type")``; raises with close matches if missing and no default."""
    node: Any = cfg
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if not isinstance(node, Mapping) or part not in node:
            if default is not ...:
                return default
            here = ".".join(parts[:i]) or "<root>"
            keys = list(node) if isinstance(node, Mapping) else []
            hint = close_matches(part, keys)
            msg = f"config key {dotted!r} does not exist: {here!r} has no {part!r}."
            if hint:
                msg += f" Did you mean {', '.join('.'.join(parts[:i] + [h]) for h in hint)}?"
            if keys:
                msg += f" Keys there: {', '.join(map(str, keys))}."
            raise ConfigError(msg)
        node = node[part]
    return node


def _missing_key(cfg: Mapping[str, Any], key: str, value: str, arguments: Iterable[str] = ()) -> None:
    """Raise the ConfigError for a ``--set`` key that is neither in the config nor a documented option: close
    matches (among the keys there and ``arguments``, those of the registry-built part it sits in), the keys there,
    and how to add it anyway."""
    try:
        get(cfg, key)
    except ConfigError as exc:
        parent, _, last = key.rpartition(".")
        there = get(cfg, parent, default={}) if parent else cfg
        hint = close_matches(last, [a for a in arguments if a not in there])
        also = f" {parent} also takes: {', '.join(f'{parent}.{h}' for h in hint)}." if hint else ""
        raise ConfigError(f"{exc}{also} To add a key the config does not spell out, write --set +{key}={value}"
                          ) from None


def apply_overrides(cfg: Dict[str, Any], overrides: Iterable[str]) -> Dict[str, Any]:
    """Apply ``["a.b=1", "+new.key=x"]``; values parsed as YAML. A key must exist in the config, be an option
    of the schema (:mod:`blazekit.options`, e.g. ``train.amp``) or an argument of the registry-built part it sits
    in (``data.train.dataset.on_bad_sample``), unless written ``+a.b``."""
    cfg = copy.deepcopy(cfg)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value (or +key.path=value to add a key)")
        key, raw = item.split("=", 1)
        key = key.strip()
        add = key.startswith("+")
        key = key.lstrip("+")
        try:
            value = parse_yaml(raw) if raw.strip() != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from exc
        parts = key.split(".")
        node: Any = cfg
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = node[_list_index(node, part, item, ".".join(parts[:i]))]
            else:
                if part not in node:
                    if not add and not options.known_key(parts[: i + 1]):
                        _missing_key(cfg, key, raw)  # raises with close matches
                    default = options.default_of(parts[: i + 1])  # train.optimizer: its default's type and arguments
                    node[part] = copy.deepcopy(default) if isinstance(default, Mapping) else {}
                node = node[part]
            if not isinstance(node, (MutableMapping, list)):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])!r} is a value, not a section")
        last = parts[-1]
        if isinstance(node, list):
            node[_list_index(node, last, item, ".".join(parts[:-1]))] = value
            continue
        if last not in node and not add and not options.known_key(parts):
            arguments = options.registry_arguments(parts[:-1], node)
            if last not in arguments:
                _missing_key(cfg, key, raw, arguments)  # raises with close matches
        node[last] = value
    return cfg


def _list_index(node: list, part: str, item: str, where: str) -> int:
    """``part`` as an index into the list at ``where``, or a ConfigError saying which indices exist."""
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override {item!r}: {where!r} is a list of {len(node)} items; "
                          f"expected an index 0..{len(node) - 1}, got {part!r}")
    return int(part)


def dump(cfg: Mapping[str, Any], path: Optional[PathLike] = None) -> str:
    """The fully resolved config as YAML text; also written to ``path`` when given."""
    text = yaml.safe_dump(plain(cfg), sort_keys=False, default_flow_style=None, width=100)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    return text


def plain(obj: Any) -> Any:
    """Tuples and paths to YAML-safe types so a dump (or a checkpoint's model_cfg) compares and loads back."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def diff(old: Any, new: Any, prefix: str = "", one_sided: Optional[str] = "<unset>",
         always: Iterable[str] = ()) -> List[str]:
    """Dotted keys where two plain config trees differ, as ``"key: checkpoint OLD vs config NEW"``.

    A key present on one side only is compared against ``one_sided`` (``"<unset>"``: it counts);
    ``one_sided=None`` skips it (the class default was meant) unless its name is in ``always`` (``type``).
    Numbers compare by value, so ``1`` equals ``1.0``. One function for resume checks and
    architecture checks, so both read the same.
    """
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: List[str] = []
        for k in sorted(set(old) | set(new), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k in old and k in new:
                out += diff(old[k], new[k], key, one_sided, always)
            elif one_sided is not None or k in always:
                out += diff(old.get(k, one_sided), new.get(k, one_sided), key, one_sided, always)
        return out
    if (isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool)
            and not isinstance(new, bool)):
        return [] if float(old) == float(new) else [f"{prefix}: checkpoint {old!r} vs config {new!r}"]
    return [] if old == new else [f"{prefix}: checkpoint {old!r} vs config {new!r}"]


def add_common_args(parser: Any) -> None:
    """``--set`` and ``--import`` as every tool takes them."""
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                        help="override config keys, e.g. --set train.epochs=10 data.train.batch_size=16 "
                             "(+key=v adds a key)")
    parser.add_argument("--import", dest="imports", metavar="MODULE", action="append", default=[],
                        help="import a module that registers custom datasets/blocks (repeatable)")
