"""Load typed dataclass configs from YAML files, dicts and ``key.sub=value`` overrides.

Every value is checked against its field annotation (and the ``min``/``max``/
``min_exclusive``/``max_exclusive``/``choices`` field metadata) while loading,
so a bad config fails with a :class:`ConfigError` naming the full key path
before anything runs.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import enum
import functools
import numbers
import operator
import os
import pathlib
import types
import typing
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar, Union

from seedrl.config._yaml import YAMLError, dump_yaml, load_yaml
from seedrl.errors import InputFileError, UserError

T = TypeVar("T")
_NONE = type(None)


class ConfigError(UserError):
    """A config could not be loaded; the message names the key path and the bad value."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class ConfigDeprecationWarning(DeprecationWarning):
    """A config used a key spelling of an older release (the message names old -> new key)."""


warnings.filterwarnings("default", category=ConfigDeprecationWarning)  # shown to users, not only in tests


# --- annotation helpers (shared with seedrl.config.help)
def is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _is_config(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def strip_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(tp, False)``."""
    if _is_union(tp) and _NONE in typing.get_args(tp):
        rest = tuple(a for a in typing.get_args(tp) if a is not _NONE)
        return (rest[0] if len(rest) == 1 else Union[rest]), True
    return tp, False


def type_name(tp: Any) -> str:
    """Readable name of an annotation: ``int``, ``tuple[int, ...]``, ``'a' | 'b'``, ``Path | None``."""
    if tp is _NONE:
        return "None"
    if tp is Any:
        return "Any"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        return " | ".join(type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{getattr(origin, '__name__', origin)}[{inner}]"
    return getattr(tp, "__name__", str(tp))


@functools.cache
def field_types(cls: type) -> tuple[tuple[dataclasses.Field, Any], ...]:
    """The init fields of dataclass ``cls`` paired with their resolved annotations."""
    try:
        hints = typing.get_type_hints(cls)
    except NameError as exc:
        raise TypeError(f"seedrl.config: cannot resolve annotations of {cls.__qualname__}: {exc}") from exc
    return tuple((f, hints.get(f.name, f.type)) for f in dataclasses.fields(cls) if f.init)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_error(tp: Any, value: Any, path: str) -> ConfigError:
    return ConfigError(
        f"config error at '{path or '<root>'}': expected {type_name(tp)}, "
        f"got {_show(value)} ({type(value).__name__})",
        path,
    )


def _not_one_of(path: str, value: Any, choices: list) -> ConfigError:
    return ConfigError(f"config error: '{path}' = {_show(value)} is not one of {choices!r}", path)


def _unknown_key(key: Any, path: str, names: Iterable[str]) -> ConfigError:
    names = list(names)
    close = difflib.get_close_matches(str(key), names, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(names) or 'none'}"
    full = _join(path, str(key))
    return ConfigError(f"config error: unknown key '{full}' ({hint})", full)


# --- conversion
def _convert(tp: Any, value: Any, path: str, default: Any = None) -> Any:
    """Check ``value`` against annotation ``tp`` and return it in its typed form.

    ``default`` (a dataclass instance) supplies the keys a mapping for a dataclass leaves out."""
    if tp is Any or tp is object:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        if value is None and _NONE in args:
            return None
        members = [a for a in args if a is not _NONE]
        if len(members) == 1:  # Optional[X]: keep X's precise error
            return _convert(members[0], value, path, default)
        for member in members:
            try:
                return _convert(member, value, path)
            except ConfigError:
                pass
        raise _type_error(tp, value, path)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _not_one_of(path, value, list(args))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        for member in tp:
            if (member.value == value and type(member.value) is type(value)) or member.name == value:
                return member
        raise _not_one_of(path, value, [m.value for m in tp])
    if is_dataclass_type(tp):
        if isinstance(value, tp):
            value = config_to_dict(value)
        if not isinstance(value, Mapping):
            raise _type_error(tp, value, path)
        return _build(tp, value, path, default if isinstance(default, tp) else None)
    if tp is _NONE or tp is bool:
        if value is None if tp is _NONE else isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
    elif tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and issubclass(tp, pathlib.PurePath):
        if isinstance(value, (str, os.PathLike)):
            return tp(value)
    elif origin in (list, tuple, dict) or tp in (list, tuple, dict):
        return _convert_container(origin or tp, args, value, path)
    elif isinstance(tp, type):
        if isinstance(value, tp):
            return value
    else:
        raise TypeError(f"seedrl.config: unsupported annotation {tp!r} at '{path}'")
    raise _type_error(tp, value, path)


def _convert_container(kind: type, args: tuple, value: Any, path: str) -> Any:
    if kind is dict:
        if not isinstance(value, Mapping):
            raise _type_error(dict[args] if args else dict, value, path)
        kt, vt = args or (Any, Any)
        return {
            _convert(kt, k, _join(path, str(k))): _convert(vt, v, _join(path, str(k)))
            for k, v in value.items()
        }
    if not isinstance(value, (list, tuple)):
        raise _type_error(kind[args] if args else kind, value, path)
    if kind is list or not args or (len(args) == 2 and args[1] is Ellipsis):
        items = [args[0] if args else Any] * len(value)
    else:
        items = [] if args == ((),) else list(args)
        if len(items) != len(value):
            message = f"expected {len(items)} items, got {len(value)}"
            raise ConfigError(f"config error at '{path}': {message}", path)
    out = [_convert(t, v, f"{path}[{i}]") for i, (t, v) in enumerate(zip(items, value))]
    return out if kind is list else tuple(out)


_BOUNDS = (
    ("min", operator.lt, "is below the minimum"),
    ("max", operator.gt, "is above the maximum"),
    ("min_exclusive", operator.le, "must be greater than"),
    ("max_exclusive", operator.ge, "must be less than"),
)


def _check_metadata(meta: Mapping, value: Any, path: str) -> None:
    """Apply ``min``/``max``/``min_exclusive``/``max_exclusive``/``choices`` (element-wise on sequences)."""
    if value is None or not meta:
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_metadata(meta, item, f"{path}[{i}]")
        return
    for key, bad, words in _BOUNDS:
        if key in meta and not isinstance(value, str) and bad(value, meta[key]):  # bounds of numbers ('auto' passes)
            raise ConfigError(f"config error: '{path}' = {_show(value)} {words} {meta[key]!r}", path)
    if "choices" in meta:
        choices = list(meta["choices"])
        plain = value.value if isinstance(value, enum.Enum) else value
        if value not in choices and plain not in choices:
            raise _not_one_of(path, value, choices)


def _field_default(f: dataclasses.Field) -> Any:
    """The default of a nested-config field (an instance from its factory), else ``None``."""
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return value if _is_config(value) else None
    return f.default if _is_config(f.default) else None


def _build(cls: type[T], data: Mapping, path: str, base: Any = None) -> T:
    """``cls`` from mapping ``data``; keys it leaves out come from ``base`` (an instance), else the defaults."""
    fields = field_types(cls)
    names = [f.name for f, _ in fields]
    data = _renamed(cls, data, path)
    for key in data:
        if key not in names:
            raise _unknown_key(key, path, names)
    kwargs = {}
    for f, tp in fields:
        sub = _join(path, f.name)
        if f.name in data:
            default = getattr(base, f.name) if base is not None else _field_default(f)
            kwargs[f.name] = _convert(tp, data[f.name], sub, default)
            _check_metadata(f.metadata, kwargs[f.name], sub)
        elif base is not None:
            kwargs[f.name] = copy.deepcopy(getattr(base, f.name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"config error: missing required key '{sub}' ({type_name(tp)})", sub)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except Exception as exc:
        message = str(exc) or type(exc).__name__
        raise ConfigError(f"config error at '{path or '<root>'}': {message}", path) from exc


# --- renamed keys (``renamed_keys`` of a config class: old dotted key -> new dotted key)
def _warn_renamed(old: str, new: str, where: str) -> None:
    warnings.warn(f"config key '{old}' is deprecated{where}: use '{new}'", ConfigDeprecationWarning, stacklevel=4)


def _renamed(cls: type, data: Mapping, path: str) -> Mapping:
    """``data`` with the old spellings of ``cls.renamed_keys`` moved to their new keys (warning for each);
    a mapping that gives both spellings of one key is refused."""
    renames = getattr(cls, "renamed_keys", None) or {}
    if not renames or not any(old.split(".")[0] in data for old in renames):
        return data
    data = copy.deepcopy(dict(data))
    for old, new in renames.items():
        found, value = _pop_path(data, old.split("."))
        if not found:
            continue
        full_old, full_new = _join(path, old), _join(path, new)
        if _pop_path(copy.deepcopy(data), new.split("."))[0]:
            raise ConfigError(f"config error: both '{full_old}' (old spelling) and '{full_new}' are given; "
                              f"keep only '{full_new}'", full_new)
        _warn_renamed(full_old, full_new, "")
        _set_path(data, new.split("."), value)
    return data


def _pop_path(data: dict, parts: list[str]) -> tuple[bool, Any]:
    node = data
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and parts[-1] in node:
        value = node.pop(parts[-1])
        return True, value
    return False, None


def _set_path(data: dict, parts: list[str], value: Any) -> None:
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        child = config_to_dict(child) if _is_config(child) else child
        node[part] = child = dict(child) if isinstance(child, Mapping) else {}
        node = child
    node[parts[-1]] = value


def _renamed_override(cls: type, key: str) -> str:
    """The current spelling of override key ``key`` (a warning if it was an old one)."""
    renames = getattr(cls, "renamed_keys", None) or {}
    for old, new in renames.items():
        if key == old or key.startswith(old + "."):
            _warn_renamed(old, new + key[len(old):], " (in an override)")
            return new + key[len(old):]
    return key


def _validate_tree(obj: Any, path: str) -> None:
    """Call ``validate()`` on every dataclass in ``obj``, innermost first."""
    if _is_config(obj):
        for f in dataclasses.fields(obj):
            _validate_tree(getattr(obj, f.name), _join(path, f.name))
        hook = getattr(obj, "validate", None)
        if callable(hook):
            try:
                hook()
            except ConfigError:
                raise
            except Exception as exc:
                message = str(exc) or type(exc).__name__
                raise ConfigError(f"config error at '{path or '<root>'}': {message}", path) from exc
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            _validate_tree(item, f"{path}[{i}]")
    elif isinstance(obj, dict):
        for key, item in obj.items():
            _validate_tree(item, _join(path, str(key)))


# --- overrides
def _wants_raw_text(tp: Any) -> bool:
    """Whether an override for ``tp`` keeps its raw text (``name=1`` -> ``"1"``)."""
    if tp is str or (isinstance(tp, type) and issubclass(tp, pathlib.PurePath)):
        return True
    if typing.get_origin(tp) is Literal:
        return all(isinstance(a, str) for a in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return all(isinstance(m.value, str) for m in tp)
    return False


def _apply_override(cls: type, data: dict, text: str) -> str:
    """Set ``key=value`` of ``text`` in ``data``; returns the key (in its current spelling)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"config error: override {text!r} is not of the form key=value")
    key = _renamed_override(cls, key)
    parts = key.split(".")
    tp: Any = cls
    for i, part in enumerate(parts):
        parent = ".".join(parts[:i])
        base, _ = strip_optional(tp)
        if is_dataclass_type(base):
            types_by_name = {f.name: t for f, t in field_types(base)}
            if part not in types_by_name:
                raise _unknown_key(part, parent, types_by_name)
            tp = types_by_name[part]
        elif base is dict or typing.get_origin(base) is dict:
            tp = (typing.get_args(base) or (Any, Any))[1]
        else:
            raise ConfigError(
                f"config error: cannot set '{key}': '{parent}' is {type_name(tp)}, not a nested config", key
            )
    base, optional = strip_optional(tp)
    if optional and raw.strip() in ("null", "Null", "NULL", "~"):
        value = None
    elif _wants_raw_text(base):
        value = raw
    else:
        try:
            value = load_yaml(raw)
        except YAMLError as exc:
            raise ConfigError(f"config error at '{key}': cannot parse {raw!r}: {exc}", key) from exc
    _set_path(data, parts, value)
    return key


# --- public API
def load_config(
    cls: type[T],
    source: str | os.PathLike | Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
) -> T:
    """Build a ``cls`` instance from a YAML file or dict, then ``key.sub=value`` overrides.

    Overrides win over the file. Every value is type- and range-checked, and each
    dataclass's ``validate()`` hook (if any) is called; any problem raises
    :class:`ConfigError` naming the full key path.
    """
    if not is_dataclass_type(cls):
        raise TypeError(f"load_config needs a dataclass type, got {cls!r}")
    if source is None:
        data: dict = {}
    elif isinstance(source, Mapping):
        data = copy.deepcopy(dict(source))
    elif isinstance(source, (str, os.PathLike)):
        data = read_yaml_file(source)
        if not isinstance(data, dict | None):
            raise ConfigError(f"config error: top level of '{os.fspath(source)}' must be a mapping")
        data = data or {}
    else:
        raise TypeError(f"load_config source must be a path, a mapping or None, got {type(source).__name__}")
    data = dict(_renamed(cls, data, ""))  # old spellings of the file first: overrides then win over the file
    given: dict[str, str] = {}
    for text in [overrides] if isinstance(overrides, str) else overrides:
        key = _apply_override(cls, data, text)
        first = given.setdefault(key, text)
        if first != text and first.partition("=")[0].strip() != text.partition("=")[0].strip():
            raise ConfigError(f"config error: overrides {first!r} and {text!r} both set '{key}' (old and new "
                              "spelling); keep only the new one", key)
    obj = _convert(cls, data, "")
    _validate_tree(obj, "")
    return obj


def read_yaml_file(path: str | os.PathLike) -> Any:
    """The YAML document in ``path``; a missing file or a syntax error is one :class:`ConfigError` line
    naming the file (and the line and column of the error)."""
    where = os.fspath(path)
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileError(f"config file '{where}' does not exist") from None
    except IsADirectoryError:
        raise InputFileError(f"config file '{where}' is a folder, not a YAML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config error: '{where}' is not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    try:
        return load_yaml(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config error: cannot parse YAML file '{where}':{at} {problem}") from None


def _plain(value: Any) -> Any:
    if _is_config(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {(_plain(k) if isinstance(k, (enum.Enum, pathlib.PurePath)) else k): _plain(v)
                for k, v in value.items()}
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain, YAML-serialisable dict of a config: Paths as str, Enums as values, tuples as lists."""
    if not _is_config(config):
        raise TypeError(f"config_to_dict needs a dataclass instance, got {type(config).__name__}")
    return _plain(config)


def save_config(config: Any, path: str | os.PathLike) -> pathlib.Path:
    """Write ``config`` as YAML to ``path`` (parents created); ``load_config`` reads it back equal."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_yaml(config_to_dict(config)), encoding="utf-8")
    return path
