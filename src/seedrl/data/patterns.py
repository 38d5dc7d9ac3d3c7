"""Windows and transition patterns over RLDS episodes, in numpy.

rlds ``batch`` (tf.data windows), ``pattern_map`` (Reverb patterns) and
``shift_keys`` (realignment), plus n-step / SARS transitions.

SAR alignment: step ``t`` holds ``(o_t, a_t, r_t, d_t)``, where ``r_t`` and
``d_t`` follow ``a_t``; the is_last step ``N-1`` holds only a valid
observation. A transition starting at step ``t`` therefore exists for
``t = 0 .. N-2`` (none for a one-step episode) and never uses the action,
reward or discount of the last step.

:func:`shift_keys` realigns fields (e.g. SAR -> RSA). The transition
results are flat column dicts ``{path: column}``: ``observation/...`` and
``action/...`` are views of the episode's columns, ``next_observation/...``
mirrors the observation paths.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from seedrl.data.columns import concat_columns
from seedrl.data.episode import Episode
from seedrl.data.errors import DataError, SpecError
from seedrl.data.spec import tree_unflatten
from seedrl.data.transforms import _episodes, _flat_columns, leaf_paths, numeric_column


def _float_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.dtype(np.float64)


def _trail(x: np.ndarray, ndim: int) -> np.ndarray:
    """``x`` [T, ...] with trailing unit axes up to ``ndim`` (to broadcast against per-step arrays)."""
    return x.reshape(x.shape + (1,) * (ndim - x.ndim))


def batch(
    steps: Episode | Mapping[str, Any],
    size: int,
    shift: int | None = None,
    stride: int = 1,
    drop_remainder: bool = False,
) -> list[dict[str, np.ndarray]]:
    """Windows of steps, with ``tf.data.Dataset.window`` semantics (rlds ``batch``).

    Window ``k`` starts at step ``k * shift`` (``shift`` defaults to ``size``)
    for every start inside the episode, and holds the steps
    ``start, start + stride, ...`` up to ``size`` of them, cut at the
    episode's end. Short windows are kept unless ``drop_remainder``. E.g. on
    steps (1, 2, 3, 4): size=2, shift=1, stride=2 -> [1, 3], [2, 4], [3], [4].

    ``steps`` is an Episode or a flat/nested dict of columns. Returns one flat
    ``{path: column}`` dict per window, each column a view ``[len, ...]`` of
    the input column (no copy).
    """
    if size < 1 or stride < 1 or (shift is not None and shift < 1):
        raise DataError(f"batch needs size, shift and stride >= 1, got size={size} shift={shift} stride={stride}")
    shift = size if shift is None else shift
    cols = _flat_columns(steps)
    sizes = {len(c) for c in cols.values()}
    if len(sizes) > 1:
        raise DataError(f"columns have different numbers of steps: {sorted(sizes)}")
    n = sizes.pop() if sizes else 0
    out = []
    for start in range(0, n, shift):
        window = slice(start, min(n, start + (size - 1) * stride + 1), stride)
        if drop_remainder and len(range(*window.indices(n))) < size:
            break  # windows only get shorter from here
        out.append({k: v[window] for k, v in cols.items()})
    return out


def n_step_transitions(episode: Episode, n: int, gamma: float) -> dict[str, np.ndarray]:
    """N-step transitions, one per non-last step ``t`` (``N - 1`` of them).

    With ``m_t = min(n, N-1-t)`` (windows shorten at the end and never pass
    the last step) and ``g_k = gamma * discount_k``:

    - ``observation``, ``action``: those of step ``t``;
    - ``reward``: ``sum_{k<m_t} (prod_{j<k} g_{t+j}) * r_{t+k}``;
    - ``discount``: ``prod_{k<m_t} g_{t+k}`` (the bootstrap weight; 0 once a
      zero discount, e.g. termination, is crossed);
    - ``next_observation``: ``o_{t+m_t}``.

    Reward and discount are computed in float64 and returned in their
    field's float dtype (float64 for integer fields). ``reward`` may be a
    nested structure or an array (each leaf is accumulated); ``discount``
    must be one leaf whose shape broadcasts as a prefix of the reward's.
    """
    if n < 1:
        raise DataError(f"n_step_transitions needs n >= 1, got {n}")
    spec, cols, size = episode.spec, episode.columns, len(episode)
    if leaf_paths(spec, "discount") != ["discount"]:
        raise DataError("field 'discount': n-step transitions need a single (non-nested) discount leaf")
    num = max(0, size - 1)
    t = np.arange(num)
    m = np.minimum(n, size - 1 - t)
    out: dict[str, np.ndarray] = {}
    for p in leaf_paths(spec, ["observation", "action"]):
        out[p] = cols[p][:num]
    disc = numeric_column(cols["discount"], "discount")
    g = gamma * disc.astype(np.float64)
    rewards = {p: numeric_column(cols[p], p) for p in leaf_paths(spec, "reward")}
    totals = {p: np.zeros((num, *r.shape[1:])) for p, r in rewards.items()}
    weight = np.ones((num, *disc.shape[1:]))
    for k in range(min(n, num)):
        live = k < m
        idx = np.minimum(t + k, size - 1)  # t + k < size - 1 wherever live
        for p, r in rewards.items():
            r_k = r[idx].astype(np.float64)
            totals[p] += np.where(_trail(live, r_k.ndim), _trail(weight, r_k.ndim) * r_k, 0.0)
        weight = np.where(_trail(live, weight.ndim), weight * g[idx], weight)
    for p, r in rewards.items():
        out[p] = totals[p].astype(_float_dtype(r.dtype))
    out["discount"] = weight.astype(_float_dtype(disc.dtype))
    for p in leaf_paths(spec, "observation"):
        out["next_" + p] = cols[p][t + m]
    return out


def sars_transitions(episode: Episode, gamma: float = 1.0) -> dict[str, np.ndarray]:
    """One-step transitions ``(o_t, a_t, r_t, o_{t+1}, gamma * d_t)`` for ``t = 0 .. N-2``.

    Same columns as :func:`n_step_transitions` with ``n=1`` (which it is):
    ``observation``, ``action``, ``reward``, ``discount``, ``next_observation``.
    """
    return n_step_transitions(episode, 1, gamma)


def pattern_map(
    episodes: Episode | Iterable[Episode],
    fn: Callable[[Any], Any],
    length: int,
    respect_episode_boundaries: bool = True,
) -> list[Any]:
    """Apply ``fn`` to every window of the last ``length`` steps (rlds ``pattern_map``).

    Like a Reverb pattern applied at each step once ``length`` steps of
    history exist: for every step ``t >= length - 1`` (counted within the
    episode when ``respect_episode_boundaries``, else over all episodes'
    steps in sequence, which must share one spec), ``fn`` gets the window
    ``t-length+1 .. t`` as one nested step whose leaves have a leading axis
    ``[length, ...]`` (oldest first; ``window['observation'][-1]`` is step
    ``t``). Outputs are collected in order; a ``None`` output is skipped,
    which plays the role of Reverb's conditions.
    """
    if length < 1:
        raise DataError(f"pattern_map needs length >= 1, got {length}")
    eps = list(_episodes(episodes))
    groups = [(e.spec, e.columns) for e in eps]
    if not respect_episode_boundaries and eps:
        spec = eps[0].spec
        for e in eps[1:]:
            if e.spec != spec:
                raise SpecError(f"pattern_map across episodes needs one spec: {spec.diff(e.spec)}")
        groups = [(spec, concat_columns([e.columns for e in eps]))]
    out = []
    for spec, cols in groups:
        size = len(next(iter(cols.values()))) if cols else 0
        for end in range(length, size + 1):
            result = fn(tree_unflatten(spec.treedef, {p: c[end - length : end] for p, c in cols.items()}))
            if result is not None:
                out.append(result)
    return out


def shift_keys(episode: Episode, keys: str | Sequence[str], shift: int) -> Episode:
    """Realign fields ``keys`` by ``shift`` steps against the others (rlds ``shift_keys``).

    Result step ``i`` holds ``keys`` from step ``i + shift`` and every other
    field from step ``i``, for the ``max(0, N - |shift|)`` steps where both
    exist (rlds: "shift A by -1: step i holds A_{i-1} and B_i; B_0 and
    A_{N-1} are dropped"). E.g. ``shift_keys(ep, ["reward", "discount"], -1)``
    turns SAR (o_i, a_i, r_i) into RSA (r_{i-1}, o_i, a_i). Keys are
    top-level fields or paths (a prefix shifts its subtree). Flags are fields
    like any other. Divergences: rlds returns no steps for ``shift=0`` (we
    return all) and ignores unknown keys (we raise KeyError).
    """
    keys = [keys] if isinstance(keys, str) else list(keys)
    moved = set(leaf_paths(episode.spec, keys))
    n, s = len(episode), abs(shift)
    m = max(0, n - s)
    early, late = slice(0, m), slice(n - m, n)  # steps [0, m) and [s, n)
    cols = {}
    for p, col in episode.columns.items():
        ahead = (p in moved) == (shift > 0)
        cols[p] = col[late] if ahead else col[early]
    return Episode(episode.spec, cols, episode.metadata)


__all__ = ["batch", "n_step_transitions", "pattern_map", "sars_transitions", "shift_keys"]
