"""The ``rlds.transformations`` toolkit, in numpy, on in-memory :class:`Episode` objects.

Where rlds works on a ``tf.data`` dataset of steps, these functions take one
:class:`Episode` (or its columns); where rlds works on a dataset of episodes,
they take an Episode or any iterable of Episodes (a list, a
:class:`~seedrl.data.reader.Dataset`). Steps are the nested dicts of
``episode[i]``; columns are flat ``{path: column}`` dicts as in
``Episode.columns`` (nest one with ``tree_unflatten(spec.treedef, cols)``).

RLDS flag rules are *not* enforced on results. Like rlds, which transforms
plain step datasets, :func:`concatenate`, :func:`concat_if_terminal`,
:func:`truncate_after_condition` and :func:`shift_keys` carry ``is_first`` /
``is_last`` / ``is_terminal`` as ordinary fields, so a result may have
``is_last`` in its middle or nowhere: they are built with the unchecked
``Episode(spec, columns, metadata)`` (re-check with ``Episode.from_columns``).
Dtypes and shapes are always checked against the spec.

Windows and transitions (``batch``, ``pattern_map``, n-step, SARS,
``shift_keys``) live in :mod:`seedrl.data.patterns`, re-exported here.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from seedrl.data.columns import concat_columns, object_column, stack_steps
from seedrl.data.episode import Episode
from seedrl.data.errors import DataError, MissingKeyError, SpecError
from seedrl.data.spec import BYTES, SEP, TEXT, FieldSpec, StepSpec, tree_flatten, tree_unflatten

#: Fields that are "invalid" on the is_last step in SAR alignment.
SAR_FIELDS = ("action", "reward", "discount")
_PATTERN_NAMES = ("batch", "n_step_transitions", "pattern_map", "sars_transitions", "shift_keys")

# ------------------------------------------------------------------ helpers


def _episodes(episodes: Episode | Iterable[Episode]) -> Iterator[Episode]:
    return iter([episodes]) if isinstance(episodes, Episode) else iter(episodes)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + SEP)


def leaf_paths(spec: StepSpec, paths: str | Sequence[str]) -> list[str]:
    """Leaf paths selected by ``paths`` (a path or a list; a prefix selects its subtree)."""
    wanted = [paths] if isinstance(paths, str) else list(paths)
    out: list[str] = []
    for p in wanted:
        hits = [f.path for f in spec.fields if _under(f.path, p)]
        if not hits:
            raise MissingKeyError(f"no field '{p}' in spec; fields are {spec.paths}")
        out.extend(h for h in hits if h not in out)
    return out


def _subtree(treedef: Any, path: str) -> Any:
    node = treedef
    for key in path.split(SEP) if path else []:
        kind = next(iter(node))
        node = node[kind][key] if kind == "dict" else node[kind][int(key)]
    return node


def numeric_column(col: np.ndarray, path: str) -> np.ndarray:
    """A column as one numeric array [N, ...]; varying-shape columns must agree in shape."""
    if col.dtype != object:
        return np.asarray(col)  # an encoded-image column decodes here
    if len(col) and isinstance(col[0], (str, bytes)):
        raise DataError(f"field '{path}': {type(col[0]).__name__} values cannot be summed or averaged")
    shapes = {np.shape(v) for v in col}
    if len(shapes) > 1:
        raise DataError(f"field '{path}': per-step shapes differ ({sorted(shapes)[:3]}...), cannot stack them")
    return np.stack([np.asarray(v) for v in col]) if len(col) else np.zeros((0,))


def _flat_columns(steps: Episode | Mapping[str, Any]) -> dict[str, np.ndarray]:
    if isinstance(steps, Episode):
        return steps.columns
    if any(SEP in k for k in steps):
        return dict(steps)
    return tree_flatten(dict(steps))[1]


# ------------------------------------------------------------ basic queries


def episode_length(episode: Episode) -> int:
    """Number of steps of the episode (rlds ``episode_length``)."""
    return len(episode)


def final_step(episode: Episode) -> Any:
    """The last step, as a nested step dict (rlds ``final_step``; needs >= 1 step)."""
    if not len(episode):
        raise DataError("final_step of an episode with no steps")
    return episode[len(episode) - 1]


def _zero_leaf(f: FieldSpec) -> Any:
    if f.dtype == TEXT:
        return ""
    if f.dtype == BYTES:
        return b""
    return np.zeros(tuple(1 if d is None else d for d in f.shape), dtype=f.dtype)[()]


def zeros_from_spec(spec: StepSpec | FieldSpec) -> Any:
    """A step (or leaf) of zeros with ``spec``'s structure, dtypes and shapes.

    As rlds, a varying dimension (``None``) gets size 1. Scalars are numpy
    scalars, ``str`` leaves ``""``, ``bytes`` leaves ``b""``, flags False.
    """
    if isinstance(spec, FieldSpec):
        return _zero_leaf(spec)
    return tree_unflatten(spec.treedef, {f.path: _zero_leaf(f) for f in spec.fields})


def _zero_like(value: Any) -> Any:
    if isinstance(value, str):
        return ""
    if isinstance(value, (bytes, np.bytes_)):
        return b""
    if isinstance(value, list):  # a leaf list of Python numbers
        return [type(v)(0) for v in value]
    if isinstance(value, (bool, int, float, complex)) and not isinstance(value, np.generic):
        return type(value)(0)
    arr = np.asarray(value)
    if arr.dtype.kind == "U":
        return ""
    zero = np.zeros(arr.shape, dtype=arr.dtype)
    return zero if isinstance(value, np.ndarray) else zero[()]


def zeros_like_step(step: Any) -> Any:
    """``step`` with every leaf replaced by a zero of the same type, dtype and shape."""
    treedef, leaves = tree_flatten(step)
    return tree_unflatten(treedef, {p: _zero_like(v) for p, v in leaves.items()})


# ------------------------------------------------------------------ mapping


def map_steps(episode: Episode, fn: Callable[[Any], Any], spec: StepSpec | None = None) -> Episode:
    """A new Episode whose steps are ``fn(step)`` for each step (metadata kept).

    ``fn`` takes and returns a nested step dict (with the core RLDS fields).
    The spec is re-inferred from all the outputs (fields varying in the input
    stay varying) unless given.
    """
    outs = [fn(s) for s in episode]
    if not outs:
        return Episode(spec or episode.spec, dict(episode.columns), episode.metadata)
    if spec is None:
        varying = [f.path for f in episode.spec.fields if not f.is_fixed]
        spec = StepSpec.infer(outs, varying=varying)
    return Episode(spec, stack_steps(spec, [spec.flatten_step(o) for o in outs]), episode.metadata)


def map_nested_steps(episodes: Episode | Iterable[Episode], fn: Callable[[Any], Any]) -> list[Episode]:
    """:func:`map_steps` on every episode (rlds ``map_nested_steps``)."""
    return [map_steps(e, fn) for e in _episodes(episodes)]


def apply_nested_steps(episodes: Episode | Iterable[Episode], fn: Callable[[Episode], Any]) -> list[Any]:
    """``fn(episode)`` for every episode, e.g. a truncation (rlds ``apply_nested_steps``)."""
    return [fn(e) for e in _episodes(episodes)]


# ------------------------------------------------------------------ summing


def _acc_dtype(dtype: np.dtype) -> np.dtype:
    kind = np.dtype(dtype).kind
    return np.dtype({"f": np.float64, "c": np.complex128, "u": np.uint64}.get(kind, np.int64))


def sum_field(episodes: Episode | Iterable[Episode], path: str | Callable[[Any], Any]) -> Any:
    """Total of a field over all steps of one or many episodes (rlds ``sum_dataset`` /
    ``sum_nested_steps``).

    ``path`` names a leaf (returns an array of the field's shape, a numpy
    scalar for scalar fields) or a subtree (returns it nested), or is a
    function ``step -> structure`` whose outputs are summed (rlds's
    ``data_to_sum``). Unlike rlds, which keeps the field dtype, sums are
    accumulated and returned in float64 (floats), complex128, int64
    (signed ints and bools) or uint64 (unsigned ints).
    """
    if callable(path):
        outs = [tree_flatten(path(step)) for ep in _episodes(episodes) for step in ep]
        if not outs:
            raise DataError("sum_field with a function over zero steps: the result structure is unknown")
        values = {p: np.stack([np.asarray(o[1][p]) for o in outs]) for p in outs[0][1]}
        return tree_unflatten(outs[0][0], {p: v.sum(0, dtype=_acc_dtype(v.dtype))[()] for p, v in values.items()})
    spec, totals = getattr(episodes, "spec", None), {}
    for ep in _episodes(episodes):
        spec = spec or ep.spec
        for p in leaf_paths(ep.spec, path):
            col = numeric_column(ep.columns[p], p)
            s = col.sum(axis=0, dtype=_acc_dtype(col.dtype))
            totals[p] = s if p not in totals else totals[p] + s
    if spec is None:
        raise DataError(f"sum_field('{path}') over zero episodes: the field's dtype is unknown")
    for p in leaf_paths(spec, path):
        if p not in totals:
            f = spec.field(p)
            if f.is_text:
                raise DataError(f"field '{p}': {f.dtype} values cannot be summed")
            totals[p] = np.zeros(tuple(1 if d is None else d for d in f.shape), _acc_dtype(f.dtype))
    totals = {p: np.asarray(v)[()] for p, v in totals.items()}
    if path in totals:
        return totals[path]
    return tree_unflatten(_subtree(spec.treedef, path), totals, path)


# ------------------------------------------------------------ concatenation


def _merge_treedef(a: Any, b: Any, path: str) -> Any:
    if a is None and b is None:
        return None
    ka, kb = (None if t is None else next(iter(t)) for t in (a, b))
    if ka != kb or (ka != "dict" and len(a[ka]) != len(b[kb])):
        raise SpecError(f"field '{path or '<step>'}': structure differs between the episodes ({a} vs {b})")
    join = (lambda k: f"{path}{SEP}{k}") if path else str
    if ka == "dict":
        da, db = a["dict"], b["dict"]
        keys = list(da) + [k for k in db if k not in da]
        # a key in one episode only: merged with itself (kept as it is)
        return {"dict": {k: _merge_treedef(da.get(k, db.get(k)), db.get(k, da.get(k)), join(k)) for k in keys}}
    return {ka: [_merge_treedef(x, y, join(i)) for i, (x, y) in enumerate(zip(a[ka], b[kb]))]}


def _merge_specs(sa: StepSpec, sb: StepSpec) -> StepSpec:
    treedef = _merge_treedef(sa.treedef, sb.treedef, "")
    fa, fb = {f.path: f for f in sa.fields}, {f.path: f for f in sb.fields}
    order = list(tree_flatten(tree_unflatten(treedef, {p: p for p in {**fa, **fb}}))[1])
    fields = []
    for p in order:
        x, y = fa.get(p), fb.get(p)
        if x is not None and y is not None and x != y:
            if x.dtype != y.dtype or len(x.shape) != len(y.shape):
                raise SpecError(
                    f"field '{p}': {x.dtype}{list(x.shape)} in the first episode vs {y.dtype}{list(y.shape)} in the second"
                )
            x = FieldSpec(p, x.dtype, tuple(d if d == e else None for d, e in zip(x.shape, y.shape)))
        fields.append(x or y)
    return type(sa)(treedef, tuple(fields))


def _fit_column(col: np.ndarray | None, f: FieldSpec, n: int) -> np.ndarray:
    if col is None:  # a field the episode lacks: zeros, as rlds
        zero = _zero_leaf(f)
        return object_column([zero] * n) if f.is_text or not f.is_fixed else np.zeros((n, *f.shape), f.dtype)
    if (f.is_text or not f.is_fixed) and col.dtype != object:
        return object_column(list(col))
    return col


def concatenate(a: Episode, b: Episode, metadata: Mapping[str, Any] | None = None) -> Episode:
    """The steps of ``a`` followed by those of ``b`` (rlds ``concatenate``).

    As rlds, a field present in only one episode is added to the other filled
    with zeros (:func:`zeros_from_spec`); a field in both must have the same
    dtype and rank (differing dimensions become varying). Flags are kept as
    they are (``a``'s is_last step stays is_last). Metadata: ``a``'s unless
    given.
    """
    meta = a.metadata if metadata is None else metadata
    if a.spec == b.spec:
        return Episode(a.spec, concat_columns([a.columns, b.columns]), meta)
    spec = _merge_specs(a.spec, b.spec)
    parts = [{f.path: _fit_column(e.columns.get(f.path), f, len(e)) for f in spec.fields} for e in (a, b)]
    return Episode(spec, concat_columns(parts), meta)


def _steps_episode(steps: Episode | Mapping | Sequence[Mapping], spec: StepSpec) -> Episode:
    if isinstance(steps, Episode):
        return steps
    steps = [steps] if isinstance(steps, Mapping) else list(steps)
    if not steps:
        return Episode(spec, {f.path: _fit_column(None, f, 0) for f in spec.fields})
    try:
        return Episode(spec, stack_steps(spec, [spec.flatten_step(s) for s in steps]))
    except SpecError:  # other fields than the episode: merged by concatenate
        own = StepSpec.infer(steps)
        return Episode(own, stack_steps(own, [own.flatten_step(s) for s in steps]))


def concat_if_terminal(
    episode: Episode, make_extra_steps: Callable[[Any], Episode | Mapping | Sequence[Mapping]]
) -> Episode:
    """Append ``make_extra_steps(final_step)`` only if the final step is terminal (rlds
    ``concat_if_terminal``), e.g. absorbing states for DAC / ValueDICE.

    ``make_extra_steps`` gets the last step (nested dict) and returns steps (a
    list of step dicts, one step dict, or an Episode); they are appended as by
    :func:`concatenate`. Flags follow rlds: nothing is rewritten, the original
    last step keeps ``is_last=True, is_terminal=True`` and the appended steps
    carry whatever flags the function gave them (all False with
    :func:`absorbing_steps`). A non-terminal episode is returned unchanged (a
    shallow copy).
    """
    last = final_step(episode)
    if not bool(last["is_terminal"]):
        return Episode(episode.spec, dict(episode.columns), episode.metadata)
    return concatenate(episode, _steps_episode(make_extra_steps(last), episode.spec))


def absorbing_steps(last_step: Any, n: int = 1, fill: Mapping[str, Any] | None = None) -> list[Any]:
    """``n`` zero-valued copies of ``last_step`` (:func:`zeros_like_step`), all flags False.

    ``fill`` sets leaves by path in every step, e.g. ``{"observation/absorbing": 1.0}``
    or ``{"is_last": True}``. Use with :func:`concat_if_terminal`:
    ``concat_if_terminal(ep, lambda last: absorbing_steps(last, 1))``.
    """
    out = []
    for _ in range(n):
        treedef, leaves = tree_flatten(zeros_like_step(last_step))
        for p, v in (fill or {}).items():
            if p not in leaves:
                raise MissingKeyError(f"fill: no field '{p}' in the step; fields are {list(leaves)}")
            leaves[p] = v
        out.append(tree_unflatten(treedef, leaves))
    return out


# --------------------------------------------------------------- truncation


def truncate_after_condition(episode: Episode, condition: Callable[[Any], Any]) -> Episode:
    """Steps up to and including the first one where ``condition(step)`` is true
    (all steps if none is); rlds ``truncate_after_condition``. Flags are kept
    as they are, so a cut episode has no is_last step."""
    stop = len(episode)
    for i, step in enumerate(episode):
        if bool(condition(step)):
            stop = i + 1
            break
    return Episode(episode.spec, {k: v[:stop] for k, v in episode.columns.items()}, episode.metadata)


# ----------------------------------------------------------------- statistics


def mean_and_std(
    episodes: Episode | Iterable[Episode],
    paths: str | Sequence[str],
    sar_fields_mask: bool = True,
    ddof: int = 1,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-field mean and standard deviation over all steps (rlds ``mean_and_std``).

    ``paths`` selects fields (a prefix selects its subtree); returns
    ``(mean, std)``, flat dicts ``{leaf_path: float64 array of the field's
    shape}``, element-wise. With ``sar_fields_mask``, the fields under
    ``action``, ``reward`` and ``discount`` skip the steps with ``is_last``
    (invalid in SAR alignment) while other fields (the observation) count
    every step. ``std`` divides by ``count - ddof``; ``ddof=1`` is rlds's
    sample std. NaN where a field has ``count <= ddof`` (mean: count 0).
    Single pass in float64, merging per-episode (count, mean, M2) with Chan
    et al.'s update, so a generator of episodes is fine. Fields of no
    episode (zero episodes) are absent from the result.
    """
    acc: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
    for ep in _episodes(episodes):
        valid = ~np.asarray(ep.columns["is_last"], dtype=bool)
        for p in leaf_paths(ep.spec, paths):
            x = numeric_column(ep.columns[p], p).astype(np.float64)
            x = x[valid] if sar_fields_mask and p.split(SEP)[0] in SAR_FIELDS else x
            n_a, mean_a, m2_a = acc.get(p) or (0, np.zeros(x.shape[1:]), np.zeros(x.shape[1:]))
            if len(x):  # merge (n_a, mean_a, m2_a) with this episode's (c, mean_c, m2_c)
                c, mean_c = len(x), x.mean(axis=0)
                m2_c, delta, tot = ((x - mean_c) ** 2).sum(axis=0), mean_c - mean_a, n_a + len(x)
                n_a, mean_a, m2_a = tot, mean_a + delta * (c / tot), m2_a + m2_c + delta**2 * (n_a * c / tot)
            acc[p] = (n_a, mean_a, m2_a)
    nan = lambda a: np.full_like(a, np.nan)  # noqa: E731
    means = {p: mean if n else nan(mean) for p, (n, mean, _) in acc.items()}
    stds = {p: np.asarray(np.sqrt(m2 / (n - ddof)) if n > ddof else nan(m2)) for p, (n, _, m2) in acc.items()}
    return means, stds


def __getattr__(name: str) -> Any:  # lazy re-export of seedrl.data.patterns
    if name in _PATTERN_NAMES:
        from seedrl.data import patterns

        return getattr(patterns, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SAR_FIELDS", "absorbing_steps", "apply_nested_steps", "concat_if_terminal", "concatenate",
    "episode_length", "final_step", "leaf_paths", "map_nested_steps", "map_steps", "mean_and_std",
    "numeric_column", "sum_field", "truncate_after_condition", "zeros_from_spec", "zeros_like_step",
    *_PATTERN_NAMES,
]
