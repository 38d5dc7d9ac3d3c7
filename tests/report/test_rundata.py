"""Run panels' numbers: config diff, seed groups and their mean/min/max, min/max downsampling, page size bound."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from seedrl.errors import InputFileError
from seedrl.report.html.page import build_page
from seedrl.report.html.rundata import aggregate, config_diff, flatten, group_runs, load_run, load_runs, minmax_indices
from seedrl.report.html.runs import curve_data, run_sections


def write_run(path, config: str, rows: list[dict]):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(config)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_flatten_and_diff_highlight_only_differing_keys():
    a = flatten({"name": "x", "optim": {"lr": 0.1, "name": "adam"}, "layers": [1, 2]})
    assert a == {"name": "x", "optim.lr": 0.1, "optim.name": "adam", "layers": [1, 2]}
    b = dict(a, **{"optim.lr": 0.2})
    c = {k: v for k, v in a.items() if k != "layers"}
    diff = {k: (vals, d) for k, vals, d in config_diff([a, b, c])}
    assert [k for k, (_, d) in diff.items() if d] == ["optim.lr", "layers"]
    assert diff["layers"][0] == [[1, 2], [1, 2], None]
    assert not any(d for _, _, d in config_diff([a, dict(a)]))


def test_seed_groups_ignore_seed_name_out_dir_only():
    cfgs = [{"seed": 0, "name": "a", "out_dir": "r", "lr": 1, "env.seed": 0},
            {"seed": 1, "name": "b", "out_dir": "s", "lr": 1, "env.seed": 1},
            {"seed": 0, "name": "a", "out_dir": "r", "lr": 2, "env.seed": 0},
            {"seed": 0, "name": "a", "out_dir": "r", "lr": 2, "env.seed": 0, "env.seeds": 3}]

    class R:
        def __init__(self, c):
            self.config = c

    assert group_runs([R(c) for c in cfgs]) == [[0, 1], [2], [3]]


def test_aggregate_mean_min_max_against_hand_values():
    x = np.array([0.0, 1.0, 2.0])
    x, mean, lo, hi = aggregate([(x, np.array([1.0, 2.0, 6.0])), (x, np.array([3.0, 0.0, 6.0]))])
    assert x.tolist() == [0, 1, 2] and mean.tolist() == [2, 1, 6] and lo.tolist() == [1, 0, 6] and hi.tolist() == [3, 2, 6]
    # different x grids: common range [1, 2], the other run interpolated (y = 10 x on 0..4)
    x, mean, lo, hi = aggregate([(np.array([1.0, 2.0]), np.array([0.0, 0.0])), (np.array([0.0, 4.0]), np.array([0.0, 40.0]))])
    assert x.tolist() == [1, 2] and mean.tolist() == [5, 10] and hi.tolist() == [10, 20] and lo.tolist() == [0, 0]
    assert len(aggregate([(np.array([0.0, 1.0]), np.ones(2)), (np.array([2.0, 3.0]), np.ones(2))])[0]) == 0


@given(st.lists(st.floats(-1e6, 1e6) | st.just(float("nan")), min_size=0, max_size=400), st.integers(8, 60))
@settings(max_examples=200, deadline=None)
def test_minmax_downsampling_keeps_extremes_ends_and_bound(values, max_points):
    y = np.array(values, float)
    idx = minmax_indices(y, max_points)
    finite = np.flatnonzero(np.isfinite(y))
    assert len(idx) <= max(max_points, 0) or len(idx) == len(finite)
    assert np.all(np.diff(idx) > 0) and np.isfinite(y[idx]).all()
    if len(finite):
        assert finite[0] in idx and finite[-1] in idx
        assert y[idx].max() == y[finite].max() and y[idx].min() == y[finite].min()
    if len(finite) <= max_points:
        assert idx.tolist() == finite.tolist()


def test_minmax_downsampling_keeps_every_local_spike():
    y = np.zeros(100_000)
    spikes = [137, 50_001, 99_998]
    y[spikes] = [5.0, -7.0, 9.0]
    idx = minmax_indices(y, 400)
    assert len(idx) <= 400 and set(spikes) <= set(idx.tolist())


def test_two_seeds_drawn_as_mean_and_band_other_config_as_line(tmp_path):
    rows = lambda f: [{"frames": 10 * i, "updates": i, "elapsed_s": float(i), "episode_return": f(i)} for i in range(4)]
    write_run(tmp_path / "s0", "name: cp\nseed: 0\nlr: 1\n", rows(lambda i: float(i)))
    write_run(tmp_path / "s1", "name: cp\nseed: 1\nlr: 1\n", rows(lambda i: float(3 * i)))
    write_run(tmp_path / "o", "name: cp2\nseed: 0\nlr: 2\n", rows(lambda i: -1.0))
    data = curve_data(load_runs([tmp_path / "s0", tmp_path / "s1", tmp_path / "o"]), ["episode_return"], 100)
    group, single = data["charts"][0]["series"]
    assert group["label"] == "cp (mean of 2 seeds, min/max band)" and single["label"] == "cp2"
    assert group["agg"]["updates"] == {"x": [0, 1, 2, 3], "y": [0, 2, 4, 6], "lo": [0, 1, 2, 3], "hi": [0, 3, 6, 9]}
    assert group["agg"]["frames"]["x"] == [0, 10, 20, 30]
    assert single["y"] == [-1, -1, -1, -1] and single["x"]["elapsed_s"] == [0, 1, 2, 3]


def test_group_label_drops_the_seed_suffix():
    from seedrl.report.html.runs import group_label

    assert group_label(["cartpole_s0", "cartpole_s1"]) == "cartpole"
    assert group_label(["run-seed1", "run-seed2"]) == "run"
    assert group_label(["a", "b"]) == "a"


def test_bad_run_dirs_are_one_line_errors(tmp_path):
    with pytest.raises(InputFileError, match="RUN_DIR: .*nope.* is not a folder"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="holds neither metrics.jsonl nor config.yaml"):
        load_run(tmp_path / "empty")
    write_run(tmp_path / "bad", "a: [1\n", [])
    with pytest.raises(InputFileError, match="config.yaml.* is not YAML"):
        load_run(tmp_path / "bad")


def test_torn_last_line_and_non_numeric_values_are_skipped(tmp_path):
    p = write_run(tmp_path / "r", "name: r\n", [{"frames": 1, "loss": 0.5, "note": "x", "flag": True}])
    with open(p / "metrics.jsonl", "a") as fh:
        fh.write('{"frames": 2, "lo')
    run = load_run(p)
    assert set(run.columns) == {"frames", "loss"} and run.rows == 1


def _page_size(tmp_path, rows: int) -> int:
    i = np.arange(rows)
    noise = np.random.default_rng(0).normal(size=rows)
    with open(write_run(tmp_path / f"r{rows}", "name: big\n", []) / "metrics.jsonl", "w") as fh:
        for a, b in zip(i.tolist(), noise.tolist()):
            fh.write(f'{{"frames": {a * 50}, "updates": {a}, "elapsed_s": {a * 0.01}, "loss": {b}, "fps": {1000 + b}}}\n')
    return len(build_page(run_sections(load_runs([tmp_path / f"r{rows}"]), max_points=2000), "big"))


def test_page_size_does_not_grow_with_rows(tmp_path):
    # 10x the rows: the same number of points per series; only the x values gain a digit or so
    small, big = _page_size(tmp_path, 20_000), _page_size(tmp_path, 200_000)
    assert big < 1.15 * small and big < 400_000, (small, big)


@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]),
                                st.none() | st.booleans() | st.text(max_size=2) | st.integers(-5, 5) | st.floats(-1e3, 1e3),
                                max_size=3), max_size=25), st.integers(1, 6))
@settings(max_examples=150, deadline=None)
def test_columns_equal_brute_force_across_chunks(tmp_path_factory, rows, chunk):
    import seedrl.report.html.rundata as rd
    from seedrl.report.html.rundata import read_columns

    path = tmp_path_factory.mktemp("cols") / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    old, rd.CHUNK = rd.CHUNK, chunk
    try:
        cols = read_columns(path)
    finally:
        rd.CHUNK = old
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    expect = {k for r in rows for k, v in r.items() if number(v)}
    assert set(cols) == expect
    for k in expect:
        want = [float(r[k]) if number(r.get(k)) else np.nan for r in rows]
        np.testing.assert_array_equal(cols[k], np.array(want, float))
