"""metrics.jsonl rows carry wall-clock time and the run's elapsed seconds, continued on resume."""

from __future__ import annotations

import json
import time

import pytest

from seedrl.report import metrics as metrics_mod
from seedrl.report.metrics import MetricsLogger, read_metrics


class FakeClock:
    def __init__(self) -> None:
        self.mono, self.wall = 100.0, 1_700_000_000.0

    def advance(self, s: float) -> None:
        self.mono, self.wall = self.mono + s, self.wall + s


def test_rows_get_time_and_elapsed_which_continue_across_resume(tmp_path, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(metrics_mod.time, "monotonic", lambda: clock.mono)
    monkeypatch.setattr(metrics_mod.time, "time", lambda: clock.wall)
    m = MetricsLogger(tmp_path, tensorboard=False)
    clock.advance(2.0)
    m.log({"frames": 10, "updates": 1})
    clock.advance(3.0)
    m.log({"frames": 20, "updates": 2, "time": 5, "elapsed_s": 7})  # a row's own values win
    clock.advance(1.0)
    m.log({"frames": 30, "updates": 3})
    m.close()
    clock.advance(1000.0)  # the run is stopped for a while, then resumed: the pause is not counted
    m = MetricsLogger(tmp_path, tensorboard=False)
    clock.advance(4.0)
    m.log({"frames": 40, "updates": 4})
    m.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["elapsed_s"] for r in rows] == [2.0, 7, 6.0, 10.0]
    assert [r["time"] for r in rows] == [1_700_000_002.0, 5, 1_700_000_006.0, 1_700_001_010.0]
    assert rows[0] == {"frames": 10, "updates": 1, "time": 1_700_000_002.0, "elapsed_s": 2.0}


def test_elapsed_survives_a_torn_last_line_and_old_rows_without_it(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"frames": 1, "elapsed_s": 12.5}) + "\n" + json.dumps({"frames": 2}) + "\n{\"frames\": 3, \"ela")
    assert metrics_mod._last_elapsed(path) == 12.5
    path.write_text(json.dumps({"frames": 1}) + "\n")  # a file from before the column existed
    assert metrics_mod._last_elapsed(path) == 0.0
    assert metrics_mod._last_elapsed(tmp_path / "missing.jsonl") == 0.0
    m = MetricsLogger(tmp_path, tensorboard=False)
    m.log({"frames": 2, "updates": 1})
    m.close()
    row = read_metrics(path)[-1]
    assert 0.0 <= row["elapsed_s"] < 60 and abs(row["time"] - time.time()) < 60


def _tb_scalars(run_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_a_resumed_run_purges_the_tensorboard_events_after_its_checkpoint(tmp_path):
    """The run logged frames 10..30, was resumed from the checkpoint at updates=2 (metrics.jsonl
    cut back to frames 20): TensorBoard must show frames 30 once, with the resumed value."""
    pytest.importorskip("tensorboard")
    from seedrl.runtime.run_dir import trim_metrics

    m = MetricsLogger(tmp_path)
    for i in (1, 2, 3):
        m.log({"frames": 10 * i, "updates": i, "loss": float(i)})
    m.close()
    trim_metrics(tmp_path / "metrics.jsonl", 2)
    m = MetricsLogger(tmp_path)
    m.log({"frames": 30, "updates": 3, "loss": 30.0})
    m.close()
    assert _tb_scalars(tmp_path, "loss") == [(10, 1.0), (20, 2.0), (30, 30.0)]


def test_a_run_started_over_gets_a_fresh_tensorboard_folder(tmp_path):
    pytest.importorskip("tensorboard")
    from seedrl.config.sections import OptimConfig
    from seedrl.runtime.run_dir import RunDir

    m = MetricsLogger(tmp_path)
    m.log({"frames": 10, "updates": 1, "loss": 5.0})
    m.close()
    with RunDir(tmp_path, resume=True, checkpoints=lambda p: []) as run:  # stopped before its first checkpoint
        run.begin(OptimConfig(), None)
        m = MetricsLogger(tmp_path)
        m.log({"frames": 5, "updates": 1, "loss": 7.0})
        m.close()
    assert _tb_scalars(tmp_path, "loss") == [(5, 7.0)]
