"""seedrl.data.subset against brute force: index ranges as Python slices, --where as Python comparisons."""

from __future__ import annotations

import operator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seedrl.data import DataError, DatasetWriter, StepSpec, open_dataset
from seedrl.data.subset import parse_ranges, where_filter

bound = st.one_of(st.none(), st.integers(-8, 8))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 8), parts=st.lists(st.tuples(bound, bound, st.one_of(st.none(), st.integers(-3, 3)
                                                                               .filter(bool))), max_size=3))
def test_ranges_are_python_slices(n, parts):
    def show(x):
        return "" if x is None else str(x)

    text = ",".join(f"{show(a)}:{show(b)}" + ("" if c is None else f":{c}") for a, b, c in parts)
    assert parse_ranges(text, n) == [i for a, b, c in parts for i in list(range(n))[a:b:c]]


def test_plain_indices_must_exist():
    assert parse_ranges("0,-1,2", 3) == [0, 2, 2]
    with pytest.raises(DataError, match="out of range"):
        parse_ranges("3", 3)
    with pytest.raises(DataError, match="a step of 0"):
        parse_ranges("::0", 3)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    path = tmp_path_factory.mktemp("subset") / "ds"
    rng = np.random.default_rng(0)
    spec = StepSpec.infer({"observation": np.zeros(2, np.float32), "action": np.int64(0), "reward": np.float32(0),
                           "discount": np.float32(1), "is_first": True, "is_last": True, "is_terminal": False})
    with DatasetWriter(path, spec) as w:
        for i in range(12):
            n = int(rng.integers(1, 6))
            rewards = rng.normal(size=n).astype(np.float32)
            w.write_episode({"observation": np.zeros((n, 2), np.float32), "action": np.zeros(n, np.int64),
                             "reward": rewards, "discount": np.ones(n, np.float32),
                             "is_first": np.arange(n) == 0, "is_last": np.arange(n) == n - 1,
                             "is_terminal": np.zeros(n, bool)},
                            metadata={"episode_id": f"e{i}", "level": int(rng.integers(0, 4))})
    return open_dataset(path)


OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne}


@settings(max_examples=60, deadline=None)
@given(key=st.sampled_from(["return", "length", "level"]), op=st.sampled_from(sorted(OPS)),
       value=st.sampled_from([-1, 0, 0.5, 1, 2, 3]))
def test_where_keeps_exactly_the_episodes_meeting_it(ds, key, op, value):
    def got(i):
        ep = ds[i]
        return {"return": float(np.asarray(ep.columns["reward"], np.float64).sum()), "length": len(ep),
                "level": ep.metadata["level"]}[key]

    expected = [ds.episode_ids[i] for i in range(len(ds)) if OPS[op](got(i), value)]
    assert where_filter(ds, [f"{key}{op}{value}"]).episode_ids == expected
