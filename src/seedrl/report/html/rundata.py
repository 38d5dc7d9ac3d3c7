"""What the run panels show, computed in Python: runs loaded as columns, config diff, seed groups, downsampling.

* A run folder holds ``config.yaml`` and ``metrics.jsonl`` (:mod:`seedrl.report.metrics`).
  :func:`load_run` reads the rows into columns: one float array per numeric key, NaN
  where a row lacks it (``episode_return`` is missing until an episode ends).
* Config diff: configs are flattened to dotted keys (``optim.lr``); a key *differs*
  when its value is not the same in every run (absent counts as a value).
* Seed groups: runs are "the same config" when their flattened configs are equal
  except ``name``, ``out_dir`` and the seeds (``seed``, ``env.seed``, any ``*.seed``). A group of k ≥ 2 runs is drawn as
  the mean with a min/max band: on a grid x_j of the x-range every run covers
  (``[max_i min x_i, min_i max x_i]``, the union of the runs' own x there), each
  run's curve is linearly interpolated, then mean_j = (1/k) Σ_i y_i(x_j),
  lo_j = min_i y_i(x_j), hi_j = max_i y_i(x_j).
* Downsampling (:func:`minmax_indices`): the rows are cut into B buckets of
  consecutive rows and each bucket keeps its first, last, smallest and largest
  point, so every peak and dip of the full curve is on the page; at most
  ``max_points`` points per series whatever the number of rows. Buckets follow row
  order, which all three x-axes (frames, updates, wall time) share, so one choice
  of rows serves every axis.
"""

from __future__ import annotations

import json
import math
import os
from itertools import islice
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from seedrl.errors import InputFileError
from seedrl.report.metrics import parse_rows

X_AXES = ("frames", "updates", "elapsed_s")
IGNORED_FOR_GROUPS = ("seed", "name", "out_dir")


@dataclass
class Run:
    """One run folder: its name, flattened config and metric columns (equal-length float arrays)."""

    path: Path
    name: str
    config: dict[str, Any]
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    frontier: list[dict] | None = None

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}``; lists and scalars are leaves."""
    if not isinstance(cfg, dict):
        return {prefix or "value": cfg}
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


_NUMBER = (int, float)  # exact types: bool (a subclass of int) is not a metric value
CHUNK = 8192


def read_columns(path: Path) -> dict[str, np.ndarray]:
    """Numeric columns of a ``metrics.jsonl`` (a torn or non-object line is skipped): one float array
    per key whose values are numbers (not bools), NaN where a row lacks the key or holds another type.

    Fast path (:func:`_arrow_columns`): Arrow's JSON reader parses the whole file in C++ (a 10⁶-row file in
    seconds, not minutes). A file it cannot take as it is (a key changing type, a non-object line, a torn
    line before the last) is read row by row instead: in chunks of :data:`CHUNK`, each chunk turned into
    one float array per key, so a 10⁶-row file costs its columns, not 10⁶ dicts. Both give the same columns."""
    return with_elapsed(columns_of(Path(path).read_bytes()))


def columns_of(data: bytes) -> dict[str, np.ndarray]:
    """The numeric columns of JSON lines ``data`` (see :func:`read_columns`)."""
    out = _arrow_columns(data)
    return _python_columns(data) if out is None else out


def with_elapsed(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``elapsed_s`` = ``time`` - min(``time``) when the rows have a ``time`` but no ``elapsed_s``."""
    if "elapsed_s" not in columns and "time" in columns and len(columns["time"]):
        columns = {**columns, "elapsed_s": columns["time"] - np.nanmin(columns["time"])}
    return columns


def read_appended(path: Path, offset: int) -> tuple[dict[str, np.ndarray], int]:
    """The columns of the whole lines written past byte ``offset`` and the offset after them (a last line
    still without its newline is left for the next call), for following a file a run appends to."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1
    return columns_of(data[:end]), offset + end


def concat_columns(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rows of ``a`` then rows of ``b``, keys of either (NaN where one lacks a key)."""
    na = len(next(iter(a.values()))) if a else 0
    nb = len(next(iter(b.values()))) if b else 0
    keys = dict.fromkeys([*a, *b])
    return {k: np.concatenate([a.get(k, np.full(na, math.nan)), b.get(k, np.full(nb, math.nan))]) for k in keys}


def _arrow_columns(data: bytes) -> dict[str, np.ndarray] | None:
    """The numeric columns through ``pyarrow.json``, or None when the lines need the row-by-row reader."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    end = data.rfind(b"\n") + 1
    tail = data[end:].strip()
    if tail:  # a last line without its newline: a torn one is skipped, a whole one needs the other reader
        try:
            json.loads(tail)
            return None
        except ValueError:
            pass
    if not data[:end].strip():
        return {}
    try:
        table = pj.read_json(pa.py_buffer(data[:end]), read_options=pj.ReadOptions(block_size=1 << 24))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return {name: pc.cast(col, pa.float64(), safe=False).to_numpy(zero_copy_only=False)  # ints past 2**53 round
            for name, col in zip(table.column_names, table.columns)
            if pa.types.is_integer(col.type) or pa.types.is_floating(col.type)}


def _python_columns(data: bytes) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    n = 0
    rows = parse_rows(line for line in data.split(b"\n") if line.strip())
    while chunk := list(islice(rows, CHUNK)):
        keys = {k: None for row in chunk for k, v in row.items() if type(v) in _NUMBER}
        for k in keys:
            if k not in parts:
                parts[k] = [np.full(n, math.nan)] if n else []
            parts[k].append(np.fromiter(
                (v if type(v := row.get(k)) in _NUMBER else math.nan for row in chunk), float, len(chunk)))
        for k, arrays in parts.items():
            if k not in keys:
                arrays.append(np.full(len(chunk), math.nan))
        n += len(chunk)
    return {k: np.concatenate(arrays) for k, arrays in parts.items()}


def load_run(path: str | os.PathLike, metrics: bool = True) -> Run:
    """A run folder -> :class:`Run` (one-line :class:`InputFileError` when it is not one); ``metrics``
    False: no columns yet (a caller following the file reads them)."""
    p = Path(path)
    if not p.is_dir():
        raise InputFileError(f"RUN_DIR: {str(p)!r} is not a folder")
    read_metrics, metrics_path, cfg_path = metrics, p / "metrics.jsonl", p / "config.yaml"
    if not metrics_path.exists() and not cfg_path.exists():
        raise InputFileError(f"RUN_DIR: {str(p)!r} holds neither metrics.jsonl nor config.yaml")
    config: dict[str, Any] = {}
    if cfg_path.exists():
        try:
            raw = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise InputFileError(f"RUN_DIR: {str(cfg_path)!r} is not YAML: {str(err).splitlines()[0]}") from None
        config = flatten(raw)
    frontier = None
    front_path = p / "bon_frontier.json"
    if front_path.exists():
        try:
            frontier = json.loads(front_path.read_text(encoding="utf-8")).get("rows")
        except (ValueError, AttributeError):
            frontier = None
    columns = read_columns(metrics_path) if read_metrics and metrics_path.exists() else {}
    name = str(config.get("name") or p.name)
    return Run(p, name, config, columns, frontier)


def load_runs(paths: list, load=load_run) -> list[Run]:
    """The runs of ``paths`` (``load``: path -> a fresh :class:`Run`), two of one name told apart by folder."""
    runs = [load(p) for p in paths]
    names = [r.name for r in runs]
    for r in runs:  # two runs of one name (seeds in different out_dirs) get their folder added
        if names.count(r.name) > 1:
            r.name = f"{r.name} ({r.path.name})"
    return runs


def config_diff(configs: list[dict[str, Any]]) -> list[tuple[str, list[Any], bool]]:
    """Every key of any config, in first-seen order: (key, value per config (None if absent), differs)."""
    missing = object()
    keys: dict[str, None] = {}
    for c in configs:
        keys.update(dict.fromkeys(c))
    out = []
    for k in keys:
        vals = [c.get(k, missing) for c in configs]
        differs = any(json.dumps(v, sort_keys=True, default=str) != json.dumps(vals[0], sort_keys=True, default=str)
                      if v is not missing and vals[0] is not missing else v is not vals[0] for v in vals)
        out.append((k, [None if v is missing else v for v in vals], differs))
    return out


def group_key(config: dict[str, Any]) -> str:
    """Runs with equal keys are seeds of one config (``name``, ``out_dir`` and every ``seed``, nested
    ones such as ``env.seed`` included, are ignored)."""
    kept = {k: v for k, v in config.items() if k not in IGNORED_FOR_GROUPS and k.rsplit(".", 1)[-1] != "seed"}
    return json.dumps(kept, sort_keys=True, default=str)


def group_runs(runs: list[Run]) -> list[list[int]]:
    """Indices of runs grouped by :func:`group_key`, groups in order of their first run."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(runs):
        groups.setdefault(group_key(r.config), []).append(i)
    return list(groups.values())


def minmax_indices(y: np.ndarray, max_points: int) -> np.ndarray:
    """Sorted row indices keeping each bucket's first, last, argmin and argmax (≤ max_points of them).

    NaN rows are dropped first; with ≤ max_points finite rows every one is kept."""
    finite = np.flatnonzero(np.isfinite(y))
    n = len(finite)
    if n <= max_points:
        return finite
    buckets = max(1, max_points // 4)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    starts, ends = edges[:-1], edges[1:]
    vals = y[finite]
    # argmin / argmax per bucket with reduceat over a stable order
    mins = np.minimum.reduceat(vals, starts)
    maxs = np.maximum.reduceat(vals, starts)
    bucket_of = np.repeat(np.arange(buckets), ends - starts)
    is_min = vals == mins[bucket_of]
    is_max = vals == maxs[bucket_of]
    first_min = _first_per_bucket(is_min, bucket_of, buckets)
    first_max = _first_per_bucket(is_max, bucket_of, buckets)
    keep = np.concatenate([starts, ends - 1, first_min, first_max])
    return finite[np.unique(keep)]


def _first_per_bucket(mask: np.ndarray, bucket_of: np.ndarray, buckets: int) -> np.ndarray:
    pos = np.flatnonzero(mask)
    b = bucket_of[pos]
    first = np.full(buckets, -1, np.int64)
    # reversed assignment leaves the first position of each bucket
    first[b[::-1]] = pos[::-1]
    return first[first >= 0]


def aggregate(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean, lo, hi) of several runs' curves (x ascending) over the x-range all of them cover.

    The grid is the union of the runs' x inside that range; each curve is linearly
    interpolated there. Empty arrays when the ranges do not overlap."""
    clean = []
    for x, y in curves:
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        if len(x):
            order = np.argsort(x, kind="stable")
            clean.append((x[order], y[order]))
    if len(clean) < len(curves) or not clean:
        return (np.array([]),) * 4
    lo_x = max(x[0] for x, _ in clean)
    hi_x = min(x[-1] for x, _ in clean)
    if lo_x > hi_x:
        return (np.array([]),) * 4
    grid = np.unique(np.concatenate([x[(x >= lo_x) & (x <= hi_x)] for x, _ in clean]))
    ys = np.stack([np.interp(grid, x, y) for x, y in clean])
    return grid, ys.mean(0), ys.min(0), ys.max(0)


def load_bon(path: str | os.PathLike) -> tuple[str, list[dict]]:
    """A Best-of-N front from a file: ``bon_frontier.json`` (``{"rows": [...]}``) or the BOND benchmark's
    results (``{"best_of_n": [...]}``); each row needs ``n``, ``reward``, ``kl_estimate``, ``kl_bound``."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputFileError(f"--bon: {str(p)!r} is not a readable JSON file ({type(err).__name__})") from None
    rows = raw.get("rows", raw.get("best_of_n")) if isinstance(raw, dict) else None
    need = ("n", "reward", "kl_estimate", "kl_bound")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and all(k in r for k in need) for r in rows):
        raise InputFileError(f"--bon: {str(p)!r} has no 'rows' or 'best_of_n' list of {{{', '.join(need)}}} rows")
    return p.name, rows
