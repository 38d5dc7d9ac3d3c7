"""An RLDS episode held in memory: columnar steps plus episode metadata."""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from seedrl.data.columns import check_columns, check_episode_flags, stack_steps
from seedrl.data.spec import StepSpec, tree_flatten, tree_unflatten
from seedrl.data.errors import DataError


class Episode:
    """One RLDS episode: ``{'steps': ..., **metadata}``.

    Steps are kept column-wise (:mod:`seedrl.data.columns`): ``episode.columns``
    maps a field path to an array with one row per step, and ``episode.steps``
    gives the same data nested like a step (``steps['observation']['pixels']``
    is ``[num_steps, H, W, C]``). ``episode[i]`` / iteration give single steps.
    """

    def __init__(self, spec: StepSpec, columns: Mapping[str, np.ndarray], metadata: Mapping[str, Any] | None = None):
        self.spec = spec
        self.columns = dict(columns)
        self.metadata = dict(metadata or {})
        first = next(iter(self.columns.values()), None)
        self._len = 0 if first is None else len(first)

    # ---------------------------------------------------------------- build
    @classmethod
    def from_steps(
        cls, steps: Sequence[Mapping[str, Any]], metadata: Mapping[str, Any] | None = None, spec: StepSpec | None = None
    ) -> "Episode":
        """Build from a list of nested step dicts (checked against ``spec``, or inferred)."""
        if not steps and spec is None:
            raise DataError("cannot infer a spec from an episode with no steps; pass spec=")
        spec = spec or StepSpec.infer(steps)
        flat = [spec.flatten_step(s) for s in steps]
        ep = cls(spec, stack_steps(spec, flat), metadata)
        check_episode_flags(ep.columns, len(ep))
        return ep

    @classmethod
    def from_columns(
        cls, spec: StepSpec, steps: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> "Episode":
        """Build from nested columns (``{'observation': array[N, ...], ...}``) or flat ``{path: array}``."""
        flat = dict(steps) if all(isinstance(k, str) and k in spec.paths for k in steps) else tree_flatten(steps)[1]
        columns, n = check_columns(spec, flat)
        check_episode_flags(columns, n)
        return cls(spec, columns, metadata)

    # ---------------------------------------------------------------- access
    @property
    def episode_id(self) -> Any:
        return self.metadata.get("episode_id")

    @property
    def steps(self) -> Any:
        """All steps, nested like one step, each leaf with a leading step axis."""
        return tree_unflatten(self.spec.treedef, self.columns)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> Any:
        if not -self._len <= i < self._len:
            raise IndexError(f"step {i} out of range for an episode of {self._len} steps")
        return tree_unflatten(self.spec.treedef, {k: v[i] for k, v in self.columns.items()})

    def __iter__(self) -> Iterator[Any]:
        for i in range(self._len):
            yield self[i]

    def to_rlds(self) -> dict[str, Any]:
        """The RLDS dict form: ``{'steps': [step, ...], **metadata}``."""
        return {"steps": list(self), **self.metadata}

    def __repr__(self) -> str:
        return f"Episode(id={self.episode_id!r}, steps={self._len}, fields={self.spec.paths})"

    def equals(self, other: "Episode") -> bool:
        """Bit-exact equality of steps and metadata (NaN payloads included)."""
        if self.spec != other.spec or len(self) != len(other):
            return False
        for path, col in self.columns.items():
            if not columns_equal(col, other.columns[path]):
                return False
        return _meta_equal(self.metadata, other.metadata)


def columns_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-exact comparison of two columns (object columns element-wise)."""
    if a.dtype == object or b.dtype == object:
        return len(a) == len(b) and all(_value_equal(x, y) for x, y in zip(a, b))
    return a.dtype == b.dtype and a.shape == b.shape and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _value_equal(x: Any, y: Any) -> bool:
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        x, y = np.asarray(x), np.asarray(y)
        return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
    return type(x) is type(y) and x == y


def _meta_equal(a: Any, b: Any) -> bool:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_meta_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_meta_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return type(a) is type(b) and np.float64(a).tobytes() == np.float64(b).tobytes()
    if isinstance(a, (np.ndarray, np.generic)) or isinstance(b, (np.ndarray, np.generic)):
        return _value_equal(np.asarray(a), np.asarray(b)) and type(a) is type(b)
    return type(a) is type(b) and a == b
