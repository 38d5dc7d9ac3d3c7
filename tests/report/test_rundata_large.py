"""Large runs: the Arrow fast path reads the same columns as the row-by-row reader, and a 10⁶-row run's curves
stay within --max-points (the downsampler's bound, every extreme kept)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import seedrl.report.html.rundata as rd
from seedrl.report.html.rundata import Run, read_columns
from seedrl.report.html.runs import curve_data


def _both(path):
    data = path.read_bytes()
    return rd._arrow_columns(data), rd._python_columns(data)


ROWS = [{"frames": 0, "loss": 1.5}, {"frames": 10, "loss": None, "kl": 0.25}, {"frames": 20, "loss": float("nan")},
        {"frames": 2**60 + 1, "loss": 3, "note": "text", "ok": True, "nested": {"a": 1}, "list": [1, 2]}]


def test_arrow_fast_path_equals_the_row_reader(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS) + '{"frames": 30, "lo')  # torn last line
    fast, slow = _both(path)
    assert fast is not None and list(fast) == list(slow) == ["frames", "loss", "kl"]
    for k in slow:
        np.testing.assert_array_equal(fast[k], slow[k])
    np.testing.assert_array_equal(fast["kl"], [np.nan, 0.25, np.nan, np.nan])


def test_files_arrow_cannot_take_are_read_row_by_row(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    cases = {"a key changing type": '{"a": 1}\n{"a": "x"}\n{"a": 2}\n',
             "a non-object line": '{"a": 1}\n[1, 2]\n{"a": 2}\n',
             "a torn line inside": '{"a": 1}\n{"a": 1.5, "b\n{"a": 2}\n',
             "a whole last line without newline": '{"a": 1}\n{"a": 2}'}
    for why, text in cases.items():
        path.write_text(text)
        assert rd._arrow_columns(path.read_bytes()) is None, why
        np.testing.assert_array_equal(read_columns(path)["a"], [1, 2] if "non-object" in why or "torn" in why
                                      or "newline" in why else [1, np.nan, 2])
    # a clean file never touches the row reader
    path.write_text('{"a": 1, "time": 5}\n{"a": 2, "time": 7.5}\n')
    monkeypatch.setattr(rd, "_python_columns", lambda p: pytest.fail("row reader used on a clean file"))
    cols = read_columns(path)
    assert cols["a"].tolist() == [1, 2] and cols["elapsed_s"].tolist() == [0, 2.5]


def test_a_million_rows_stay_within_max_points_with_every_extreme(tmp_path):
    n, max_points = 1_000_000, 2000
    i = np.arange(n, dtype=float)
    loss = np.sin(i / 5000.0) + 1e-3 * np.random.default_rng(0).normal(size=n)
    loss[[12_345, 777_777]] = [50.0, -50.0]  # two spikes a naive stride would miss
    ret = np.where(i % 3 == 0, i / n, np.nan)  # a sparse key (NaN between episodes)
    run = Run(Path(tmp_path), "big", {}, {"frames": 10 * i, "updates": i, "elapsed_s": i / 100, "loss": loss,
                                          "episode_return": ret})
    data = curve_data([run], ["loss", "episode_return"], max_points)
    for chart in data["charts"]:
        s = chart["series"][0]
        y = np.array([np.nan if v is None else v for v in s["y"]])
        assert len(y) <= max_points and all(len(x) == len(y) for x in s["x"].values())
        full = run.columns[chart["key"]]
        assert np.nanmax(y) == pytest.approx(np.nanmax(full), rel=1e-6)
        assert np.nanmin(y) == pytest.approx(np.nanmin(full), rel=1e-6, abs=1e-9)
    loss_x = data["charts"][0]["series"][0]["x"]["frames"]
    assert 123_450 in loss_x and 7_777_770 in loss_x  # the spikes' rows are on the page
