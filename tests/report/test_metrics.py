"""metrics.jsonl rows carry wall-clock time and the run's elapsed seconds, continued on resume."""

from __future__ import annotations

import json
import time

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
