"""Dataset summaries and validation, as shown by ``seedrl data info|stats|validate``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pyarrow as pa

from seedrl.data.columns import check_episode_flags
from seedrl.data.errors import DamagedSegmentWarning, DataError, TornTailWarning
from seedrl.data.reader import Dataset


@dataclass
class FieldStats:
    """Running min / max / mean / std of one numeric field over steps (float64, Chan's merge)."""

    path: str
    count: int = 0
    mean: np.ndarray | float = 0.0
    m2: np.ndarray | float = 0.0
    minimum: np.ndarray | float = np.inf
    maximum: np.ndarray | float = -np.inf

    def update(self, column: np.ndarray) -> None:
        x = np.asarray(column, dtype=np.float64)
        n = len(x)
        if n == 0:
            return
        with np.errstate(invalid="ignore", over="ignore"):
            mean_b = x.mean(axis=0)
            m2_b = ((x - mean_b) ** 2).sum(axis=0)
            total = self.count + n
            delta = mean_b - self.mean
            self.mean = self.mean + delta * n / total
            self.m2 = self.m2 + m2_b + delta**2 * self.count * n / total
            self.minimum = np.minimum(self.minimum, x.min(axis=0))
            self.maximum = np.maximum(self.maximum, x.max(axis=0))
        self.count = total

    @property
    def std(self) -> np.ndarray | float:
        return np.sqrt(self.m2 / self.count) if self.count else np.nan


@dataclass
class DatasetStats:
    episodes: int = 0
    steps: int = 0
    lengths: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    terminal: int = 0
    truncated: int = 0
    fields: dict[str, FieldStats] = field(default_factory=dict)


def episode_return(reward: np.ndarray) -> float:
    """An episode's return: the sum of every reward value of every step, in float64."""
    return float(np.asarray(reward, dtype=np.float64).sum())


def compute_stats(ds: Dataset, progress: Iterable | None = None) -> DatasetStats:
    """One pass over ``ds``: episode lengths, returns, terminal/truncated counts,
    and per-field statistics of every fixed-shape numeric field over all its
    elements."""
    numeric = [f for f in ds.spec.fields if not f.is_text and f.is_fixed] if ds.spec else []
    stats = DatasetStats(fields={f.path: FieldStats(f.path) for f in numeric})
    for ep in progress if progress is not None else ds:
        stats.episodes += 1
        stats.steps += len(ep)
        stats.lengths.append(len(ep))
        if "reward" in ep.columns and ep.columns["reward"].dtype != object:
            stats.returns.append(episode_return(ep.columns["reward"]))
        if "is_terminal" in ep.columns:
            if ep.columns["is_terminal"][-1]:
                stats.terminal += 1
            else:
                stats.truncated += 1
        for f in numeric:
            col = ep.columns[f.path]
            stats.fields[f.path].update(np.asarray(col).reshape(-1))  # encoded images: decoded pixels
    return stats


def format_stats(ds: Dataset, stats: DatasetStats) -> str:
    lines = [f"{ds.root}: {stats.episodes} episodes, {stats.steps} steps"]
    if stats.lengths:
        lengths = np.array(stats.lengths)
        lines.append(
            f"  length   min {lengths.min()}  mean {lengths.mean():.1f}  max {lengths.max()}"
            f"   ({stats.terminal} terminal, {stats.truncated} truncated)"
        )
    if stats.returns:
        r = np.array(stats.returns)
        lines.append(f"  return   min {r.min():.4g}  mean {r.mean():.4g}  std {r.std():.4g}  max {r.max():.4g}")
    if stats.fields:
        lines.append(f"  {'field':<28} {'min':>11} {'mean':>11} {'std':>11} {'max':>11}")
        for path, fs in stats.fields.items():
            if fs.count:
                lines.append(
                    f"  {path:<28} {_scalar(fs.minimum):>11.4g} {_scalar(fs.mean):>11.4g} "
                    f"{_scalar(fs.std):>11.4g} {_scalar(fs.maximum):>11.4g}"
                )
    return "\n".join(lines)


def _scalar(x) -> float:
    return float(np.mean(x))


def format_info(ds: Dataset) -> str:
    info = ds.info
    lines = [
        f"dataset   {info.get('name')}  ({ds.root})",
        f"format    {info['format']} v{info['version']}",
        f"episodes  {len(ds)}   steps {ds.num_steps}",
        "steps:",
        ds.full_spec.describe() if ds.full_spec else "  (no episode committed yet)",
    ]
    if info.get("metadata_spec"):
        lines.append("episode metadata:")
        lines.extend(f"  {k:<20} {v}" for k, v in {"episode_id": "str", **info["metadata_spec"]}.items())
    return "\n".join(lines)


def validate(ds: Dataset, progress: Iterable | None = None) -> list[str]:
    """Every problem found, as messages naming the segment or episode and field (empty: valid).

    Per segment: torn tail, unreadable schema header, index entries past the
    end of the file. Per episode: its checksum (an episode without one is not
    a problem: see :func:`unchecked`), its id unique, its steps decodable,
    RLDS flags in place, varying-shape values matching the spec.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornTailWarning)
        warnings.simplefilter("ignore", DamagedSegmentWarning)
        ds.refresh()
    problems = [f"segment {seg}: {p}" for seg, ps in ds.damage.items() for p in ps]
    seen: dict[str, int] = {}
    indices = progress if progress is not None else range(len(ds))
    for i in indices:
        entry = ds.entries[i]
        key = str(entry.episode_id)
        if key in seen:
            problems.append(f"episode {i}: id {key!r} repeats episode {seen[key]}")
        seen[key] = i
        try:
            ds.verify_episode(i)
            ep = ds[i]
            if len(ep) != entry.num_steps:
                problems.append(f"episode {i} ({key}): index says {entry.num_steps} steps, stream has {len(ep)}")
            check_episode_flags(ep.columns, len(ep))
            for f in ds.spec.fields:
                if f.is_encoded:  # each image's header: format and size
                    for v in ep.columns[f.path].encoded:
                        f.check(v)
                elif f.is_text or not f.is_fixed:
                    for v in ep.columns[f.path]:
                        f.check(v)
        except (DataError, OSError, ValueError, IndexError, pa.ArrowException) as err:
            problems.append(f"episode {i} ({key}): {err}")
    return problems


def unchecked(ds: Dataset) -> int:
    """Episodes with no checksum (written before checksums, or found in the stream by repair)."""
    return sum(e.crc is None for e in ds.entries)
