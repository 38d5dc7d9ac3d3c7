"""Step specs: the typed shape of an RLDS step, and its Arrow layout.

An RLDS step is a nested structure (dicts, tuples, lists) of leaves. A leaf is
a numpy array of a fixed dtype whose per-step shape is fixed, or varies along
some dimensions (marked ``None``), or a scalar string (``str``) or byte string
(``bytes``). A :class:`StepSpec` records the tree structure and one
:class:`FieldSpec` per leaf, keyed by its path (``"observation/pixels"``,
``"action/0"``).

Arrow layout of one step field (one column, one row per step):

===========================  ==============================================
leaf                         Arrow column type
===========================  ==============================================
numeric/bool scalar          the primitive type (``float64``, ``uint8``, ...)
fixed shape ``(d1, ..., dk)``  ``fixed_size_list<primitive>[d1*...*dk]``
varying shape, 1-D           ``large_list<primitive>``
varying shape, k-D (k > 1)   ``large_list<primitive>`` + ``<path>#shape``
                             column of ``fixed_size_list<int64>[k]``
``str`` / ``bytes``          ``large_string`` / ``large_binary``
encoded image (png / jpeg)   ``large_binary``, one encoded image per step
                             (:mod:`seedrl.data.images`)
===========================  ==============================================

Values are stored bit for bit (NaN payloads, -0.0, uint64 extremes).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from seedrl.data import images
from seedrl.data.errors import MissingKeyError, SpecError

#: The seven core RLDS step fields.
CORE_FIELDS = ("is_first", "is_last", "is_terminal", "observation", "action", "reward", "discount")
#: Flags stored as bool scalars.
FLAG_FIELDS = ("is_first", "is_last", "is_terminal")
SEP = "/"
SHAPE_SUFFIX = "#shape"
TEXT = "str"
BYTES = "bytes"


def _dtype_name(dtype: Any) -> str:
    if dtype in (TEXT, BYTES):
        return dtype
    return np.dtype(dtype).name


@dataclass(frozen=True)
class FieldSpec:
    """One leaf of a step: its path, dtype name and per-step shape.

    ``dtype`` is a numpy dtype name (``"float32"``, ``"bool"``...) or
    ``"str"`` / ``"bytes"``. ``shape`` entries are ints, or ``None`` for a
    dimension whose size varies from step to step. ``encoding`` ``"png"`` /
    ``"jpeg"`` makes a uint8 ``(H, W, C)`` field an encoded-image field
    (:mod:`seedrl.data.images`); ``None`` (the default) stores raw values.
    """

    path: str
    dtype: str
    shape: tuple[int | None, ...] = ()
    encoding: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", _dtype_name(self.dtype))
        object.__setattr__(self, "shape", tuple(None if d is None else int(d) for d in self.shape))
        if self.encoding is not None:
            images.check_layout(self.path, self.encoding, self.dtype, self.shape)
        if self.dtype in (TEXT, BYTES) and self.shape:
            raise SpecError(f"field '{self.path}': {self.dtype} leaves must be scalars, got shape {self.shape}")
        if self.dtype not in (TEXT, BYTES) and np.dtype(self.dtype).kind not in "biuf":
            raise SpecError(f"field '{self.path}': unsupported dtype {self.dtype!r}")

    @property
    def is_text(self) -> bool:
        return self.dtype in (TEXT, BYTES)

    @property
    def is_encoded(self) -> bool:
        """An encoded-image field: bytes in the store, uint8 arrays on read."""
        return self.encoding is not None

    @property
    def is_fixed(self) -> bool:
        return None not in self.shape

    @functools.cached_property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(object) if self.is_text else np.dtype(self.dtype)

    @functools.lru_cache(maxsize=None)  # noqa: B019 - specs are few and immutable
    def arrow_type(self) -> pa.DataType:
        """The Arrow type of this field's column (see the module table)."""
        if self.dtype == TEXT:
            return pa.large_string()
        if self.is_encoded:
            return pa.large_binary() if len(self.shape) == 3 else pa.large_list(pa.large_binary())
        if self.dtype == BYTES:
            return pa.large_binary()
        prim = pa.from_numpy_dtype(np.dtype(self.dtype))
        if not self.shape:
            return prim
        if self.is_fixed:
            return pa.list_(prim, math.prod(self.shape))
        return pa.large_list(prim)

    def check(self, value: Any) -> Any:
        """Coerce one step's value to this spec, or raise naming the field."""
        if self.is_encoded:
            return images.check_value(self.path, self.encoding, self.shape, value)
        if self.dtype == TEXT:
            if not isinstance(value, str):
                if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind == "U":
                    return str(value)
                raise SpecError(f"field '{self.path}': expected str, got {type(value).__name__} {value!r:.60}")
            return value
        if self.dtype == BYTES:
            if not isinstance(value, (bytes, np.bytes_)):
                raise SpecError(f"field '{self.path}': expected bytes, got {type(value).__name__} {value!r:.60}")
            return bytes(value)
        arr = np.asarray(value)
        if arr.dtype.name != self.dtype:
            if _is_python_number(value) and np.can_cast(_python_kind(value), self.dtype, "same_kind"):
                arr = np.asarray(value, dtype=self.dtype)
            else:
                raise SpecError(
                    f"field '{self.path}': dtype changed within the dataset: expected {self.dtype}, got {arr.dtype.name}"
                )
        if len(arr.shape) != len(self.shape) or any(
            d is not None and d != s for d, s in zip(self.shape, arr.shape)
        ):
            raise SpecError(
                f"field '{self.path}': shape changed within the dataset: expected {self.shape}, got {arr.shape}"
            )
        return arr

    def to_json(self) -> dict:
        out = {"path": self.path, "dtype": self.dtype, "shape": list(self.shape)}
        return out if self.encoding is None else {**out, "encoding": self.encoding}

    @classmethod
    def from_json(cls, d: Mapping) -> "FieldSpec":
        return cls(d["path"], d["dtype"], tuple(d["shape"]), d.get("encoding"))


def _is_python_number(value: Any) -> bool:
    return isinstance(value, (bool, int, float)) and not isinstance(value, np.generic)


def _python_kind(value: Any) -> np.dtype:
    if isinstance(value, bool):
        return np.dtype(bool)
    return np.dtype(np.int64) if isinstance(value, int) else np.dtype(np.float64)


def _infer_leaf(path: str, value: Any) -> FieldSpec:
    if isinstance(value, str):
        return FieldSpec(path, TEXT)
    if isinstance(value, (bytes, np.bytes_)):
        return FieldSpec(path, BYTES)
    if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind == "U":
        return FieldSpec(path, TEXT)
    if _is_python_number(value):
        return FieldSpec(path, _python_kind(value).name, ())
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise SpecError(f"field '{path}': cannot store values of dtype {arr.dtype} ({type(value).__name__})")
    return FieldSpec(path, arr.dtype.name, arr.shape)


# ---------------------------------------------------------------- tree structure
# A treedef is JSON-able: a leaf is None; a dict is {"dict": {key: treedef}};
# a tuple is {"tuple": [treedef, ...]}; a list is {"list": [treedef, ...]}.


def tree_flatten(tree: Any, prefix: str = "") -> tuple[Any, dict[str, Any]]:
    """Split a nested step into (treedef, {path: leaf}), paths joined by '/'."""
    leaves: dict[str, Any] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, Mapping):
            out = {}
            for key, child in node.items():
                if not isinstance(key, str) or SEP in key or "#" in key or not key:
                    raise SpecError(f"field '{path}': key {key!r} must be a non-empty str without '/' or '#'")
                out[key] = walk(child, f"{path}{SEP}{key}" if path else key)
            return {"dict": out}
        if isinstance(node, (tuple, list)) and not _is_leaf_sequence(node):
            kind = "tuple" if isinstance(node, tuple) else "list"
            return {kind: [walk(c, f"{path}{SEP}{i}" if path else str(i)) for i, c in enumerate(node)]}
        leaves[path] = node
        return None

    return walk(tree, prefix), leaves


def _is_leaf_sequence(node: Sequence) -> bool:
    """A list of plain numbers is a leaf array; a list of structures is a node."""
    return len(node) > 0 and all(_is_python_number(x) for x in node) and isinstance(node, list)


def tree_unflatten(treedef: Any, leaves: Mapping[str, Any], prefix: str = "") -> Any:
    """Inverse of :func:`tree_flatten`."""
    if treedef is None:
        return leaves[prefix]
    join = (lambda k: f"{prefix}{SEP}{k}") if prefix else str
    if "dict" in treedef:
        return {k: tree_unflatten(t, leaves, join(k)) for k, t in treedef["dict"].items()}
    kind = "tuple" if "tuple" in treedef else "list"
    items = [tree_unflatten(t, leaves, join(i)) for i, t in enumerate(treedef[kind])]
    return tuple(items) if kind == "tuple" else items


# ---------------------------------------------------------------------- StepSpec


@dataclass(frozen=True)
class StepSpec:
    """The structure and leaves of every step of a dataset."""

    treedef: Any
    fields: tuple[FieldSpec, ...]

    def __post_init__(self) -> None:
        top = self.treedef.get("dict", {}) if isinstance(self.treedef, dict) else {}
        missing = [f for f in CORE_FIELDS if f not in top]
        if missing:
            raise SpecError(f"step is missing core RLDS field(s) {missing}; every step needs {list(CORE_FIELDS)}")
        for flag in FLAG_FIELDS:
            spec = self.field(flag)
            if spec.dtype != "bool" or spec.shape != ():
                raise SpecError(f"field '{flag}': must be a bool scalar, got {spec.dtype} {spec.shape}")

    @classmethod
    def infer(cls, steps: Mapping[str, Any] | Sequence[Mapping[str, Any]], varying: Iterable[str] = ()) -> "StepSpec":
        """Infer the spec from one example step or a list of steps.

        Python floats become float64 and ints int64. Given several steps, a
        dimension whose size differs between them is marked varying
        (``None``); ``varying`` names fields whose every dimension varies
        (e.g. token arrays, when the example steps happen to agree).
        """
        examples = [steps] if isinstance(steps, Mapping) else list(steps)
        if not examples:
            raise SpecError("cannot infer a spec from zero steps")
        treedef, leaves = tree_flatten(examples[0])
        varying = set(varying)
        fields = []
        for path, value in leaves.items():
            if path in FLAG_FIELDS:
                fields.append(FieldSpec(path, "bool", ()))
                continue
            spec = _infer_leaf(path, value)
            shape = list(spec.shape)
            for other in examples[1:]:
                _, other_leaves = tree_flatten(other)
                if path not in other_leaves:
                    raise SpecError(f"field '{path}': present in the first step but not in a later one")
                o = np.shape(other_leaves[path])
                if len(o) != len(shape):
                    raise SpecError(f"field '{path}': rank changes between steps ({spec.shape} vs {o})")
                shape = [d if d == od else None for d, od in zip(shape, o)]
            if path in varying or any(path.startswith(v + SEP) for v in varying):
                shape = [None] * len(shape)
            fields.append(FieldSpec(path, spec.dtype, tuple(shape)))
        return cls(treedef, tuple(fields))

    @functools.cached_property
    def paths(self) -> list[str]:
        return [f.path for f in self.fields]

    def field(self, path: str) -> FieldSpec:
        for f in self.fields:
            if f.path == path:
                return f
        raise MissingKeyError(f"no field '{path}' in spec; fields are {self.paths}")

    def flatten_step(self, step: Mapping[str, Any]) -> dict[str, Any]:
        """Flatten and check one step against the spec (errors name the field)."""
        if not isinstance(step, Mapping):
            raise SpecError(f"a step must be a dict, got {type(step).__name__}")
        missing = [f for f in CORE_FIELDS if f not in step]
        if missing:
            raise SpecError(f"step is missing core RLDS field(s) {missing}")
        treedef, leaves = tree_flatten(step)
        if treedef != self.treedef:
            expected, got = set(self.paths), set(leaves)
            raise SpecError(
                "step structure differs from the dataset spec: "
                f"missing {sorted(expected - got)}, unexpected {sorted(got - expected)}"
                if expected != got
                else "step structure differs from the dataset spec (tuple/list/dict kinds differ)"
            )
        return {f.path: f.check(leaves[f.path]) for f in self.fields}

    def arrow_schema(self) -> pa.Schema:
        cols = []
        for f in self.fields:
            cols.append(pa.field(f.path, f.arrow_type(), nullable=False))
            if not f.is_fixed and len(f.shape) > 1 and not f.is_encoded:
                cols.append(pa.field(f.path + SHAPE_SUFFIX, pa.list_(pa.int64(), len(f.shape)), nullable=False))
        return pa.schema(cols)

    def select(self, paths: Iterable[str]) -> "StepSpec":
        """The spec restricted to some fields (a prefix selects its subtree)."""
        wanted = list(paths)
        keep = [f for f in self.fields if any(f.path == p or f.path.startswith(p + SEP) for p in wanted)]
        unknown = [p for p in wanted if not any(f.path == p or f.path.startswith(p + SEP) for f in self.fields)]
        if unknown:
            raise MissingKeyError(f"unknown field(s) {unknown}; fields are {self.paths}")
        return _PartialSpec(_prune(self.treedef, {f.path for f in keep}), tuple(keep))

    def with_images(self, encodings: Mapping[str, str | None]) -> "StepSpec":
        """This spec with some uint8 (H, W, C) fields stored encoded (``{path: "png"|"jpeg"|None}``)."""
        unknown = [p for p in encodings if p not in self.paths]
        if unknown:
            raise MissingKeyError(f"unknown field(s) {unknown}; fields are {self.paths}")
        fields = tuple(FieldSpec(f.path, f.dtype, f.shape, encodings.get(f.path, f.encoding)) for f in self.fields)
        return type(self)(self.treedef, fields)

    def to_json(self) -> dict:
        return {"treedef": self.treedef, "fields": [f.to_json() for f in self.fields]}

    @classmethod
    def from_json(cls, d: Mapping) -> "StepSpec":
        return cls(d["treedef"], tuple(FieldSpec.from_json(f) for f in d["fields"]))

    def describe(self) -> str:
        width = max(len(f.path) for f in self.fields)
        rows = []
        for f in self.fields:
            shape = "(" + ", ".join("?" if d is None else str(d) for d in f.shape) + (",)" if len(f.shape) == 1 else ")")
            kind = f"{f.dtype} {f.encoding}" if f.is_encoded else f.dtype
            rows.append(f"  {f.path:<{width}}  {kind:<8} {shape if f.shape else 'scalar'}")
        return "\n".join(rows)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StepSpec) and json.dumps(self.to_json(), sort_keys=True) == json.dumps(
            other.to_json(), sort_keys=True
        )

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_json(), sort_keys=True))

    def diff(self, other: "StepSpec") -> str:
        """Human-readable difference, for 'spec differs' errors."""
        mine, theirs = {f.path: f for f in self.fields}, {f.path: f for f in other.fields}
        parts = []
        for p in sorted(set(mine) | set(theirs)):
            a, b = mine.get(p), theirs.get(p)
            if a != b:
                fa = f"{a.dtype}{list(a.shape)}{a.encoding or ''}" if a else "absent"
                fb = f"{b.dtype}{list(b.shape)}{b.encoding or ''}" if b else "absent"
                parts.append(f"'{p}': {fa} vs {fb}")
        if not parts and self.treedef != other.treedef:
            parts.append("same leaves, different nesting (dict/tuple/list)")
        return "; ".join(parts)


class _PartialSpec(StepSpec):
    """A field selection: skips the core-field checks of a full spec."""

    def __post_init__(self) -> None:  # noqa: D105 - selection may drop core fields
        pass


def _prune(treedef: Any, keep: set[str], prefix: str = "") -> Any:
    if treedef is None:
        return None
    join = (lambda k: f"{prefix}{SEP}{k}") if prefix else str
    if "dict" in treedef:
        out = {}
        for k, t in treedef["dict"].items():
            p = join(k)
            if t is None and p in keep or t is not None and any(x.startswith(p + SEP) for x in keep):
                out[k] = _prune(t, keep, p)
        return {"dict": out}
    kind = "tuple" if "tuple" in treedef else "list"
    children = treedef[kind]
    kept = {
        i: _prune(t, keep, join(i))
        for i, t in enumerate(children)
        if t is None and join(i) in keep or t is not None and any(x.startswith(join(i) + SEP) for x in keep)
    }
    if len(kept) == len(children):
        return {kind: [kept[i] for i in range(len(children))]}
    # A partly selected sequence becomes a dict keyed by the kept positions.
    return {"dict": {str(i): t for i, t in kept.items()}}
