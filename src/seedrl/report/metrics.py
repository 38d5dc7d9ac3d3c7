"""Run metrics: JSONL (always), TensorBoard (if installed), PNG learning curves.

Every row of ``metrics.jsonl`` is one JSON object with at least ``frames``
and ``updates``; a resumed run appends to the same file. :meth:`MetricsLogger.log`
adds to every row ``time`` (wall clock, unix seconds) and ``elapsed_s`` (seconds
of the run so far: since the logger opened, plus the ``elapsed_s`` of the file's
last row when it continues an existing file, so a resumed run's clock goes on
from where the stopped one last logged; the time between that row and the stop
is not counted). A row that already has either key keeps its own value.

TensorBoard's step is ``frames``. When a resumed run continues the file (which
:meth:`~seedrl.runtime.run_dir.RunDir.begin` has cut back to its checkpoint), the
writer purges the events past the file's last row, so curves show each step once; a
run started over gets a fresh ``tb/``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator


class MetricsLogger:
    """Appends rows to ``<run_dir>/metrics.jsonl`` (and TensorBoard); see the module docstring."""

    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self._elapsed_before = _last_elapsed(self.path)
        self._start = time.monotonic()
        self._fh = open(self.path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # events logged after the last kept row (a run resumed from an earlier checkpoint) are purged
                last = _last_frames(self.path)
                purge = last + 1 if last is not None else None
                self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge)
            except ImportError:  # tensorboard is an optional extra
                self._tb = None

    @property
    def elapsed_s(self) -> float:
        """Seconds of the run so far (continuing the file's clock on resume)."""
        return self._elapsed_before + time.monotonic() - self._start

    def log(self, row: dict[str, Any]) -> None:
        clean = {k: _jsonable(v) for k, v in row.items()}
        clean.setdefault("time", round(time.time(), 3))
        clean.setdefault("elapsed_s", round(self.elapsed_s, 3))
        self._fh.write(json.dumps(clean) + "\n")
        self._fh.flush()
        if self._tb is not None:
            step = int(row.get("frames", 0))
            for k, v in clean.items():
                if k in ("frames", "time"):
                    continue
                if isinstance(v, (int, float)) and v is not None and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _tail_rows(path: Path, tail_bytes: int = 1 << 16) -> list[dict]:
    """The rows near the end of ``path``, last first (a torn last line is skipped); [] if none."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - tail_bytes))
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return []
    return list(parse_rows(reversed(lines)))


def parse_rows(lines: Iterable[str | bytes]) -> Iterator[dict]:
    """The JSON objects of ``lines``, in order; a torn line or a non-object is skipped."""
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            yield row


def _last_elapsed(path: Path) -> float:
    """``elapsed_s`` of the last row of ``path`` that has one (0 if none)."""
    for row in _tail_rows(path):
        value = row.get("elapsed_s")
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    return 0.0


def _last_frames(path: Path) -> int | None:
    """``frames`` of the last row of ``path`` (None if it has none)."""
    rows = _tail_rows(path)
    value = rows[0].get("frames") if rows else None
    return int(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def read_metrics(path: str | os.PathLike) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def plot_curves(
    metrics_path: str | os.PathLike,
    out_png: str | os.PathLike,
    keys: Iterable[str] = ("episode_return", "fps", "loss", "entropy", "policy_lag"),
    title: str | None = None,
) -> Path:
    """Learning curves against frames, one panel per key present in the file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    keys = [k for k in keys if any(r.get(k) is not None for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(4.2 * max(1, len(keys)), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["frames"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, lw=1.4)
        ax.set_xlabel("frames")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
