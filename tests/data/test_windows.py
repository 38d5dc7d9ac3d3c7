"""Window indexing and epoch plans (seedrl.data.windows) against brute-force enumeration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seedrl.data import DataError
from seedrl.data.patterns import batch
from seedrl.data.windows import WindowIndex, plan_batches, rank_share


def brute(lengths, length, shift, stride, boundary):
    out = []
    for e, n in enumerate(lengths):
        for s in range(0, n, shift):
            real = len(range(s, n, stride)[:length])
            if boundary == "pad" or real == length:
                out.append((e, s, real))
    return out


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(0, 12), max_size=6), length=st.integers(1, 5), shift=st.integers(1, 5),
       stride=st.integers(1, 3), boundary=st.sampled_from(["pad", "drop"]))
def test_window_index_enumerates_exactly_the_brute_force_windows(lengths, length, shift, stride, boundary):
    index = WindowIndex(lengths, length, shift, stride, boundary)
    assert [index.locate(w) for w in range(len(index))] == brute(lengths, length, shift, stride, boundary)
    with pytest.raises(IndexError):
        index.locate(len(index))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), length=st.integers(1, 5), shift=st.integers(1, 5), stride=st.integers(1, 3),
       drop=st.booleans())
def test_window_index_agrees_with_rlds_batch(n, length, shift, stride, drop):
    steps = {"x": np.arange(n)}
    windows = batch(steps, length, shift, stride, drop_remainder=drop)
    index = WindowIndex([n], length, shift, stride, "drop" if drop else "pad")
    assert len(index) == len(windows)
    for w, win in enumerate(windows):
        _, s, real = index.locate(w)
        assert win["x"].tolist() == list(range(s, n, stride))[:real]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 40), world=st.integers(1, 4), workers=st.integers(1, 4), batch_size=st.integers(1, 5),
       seed=st.integers(0, 3), epoch=st.integers(0, 3), shuffle=st.booleans(), drop_last=st.booleans(),
       cut=st.integers(0, 40))
def test_plans_cover_every_item_once_and_resume_with_the_rest(n, world, workers, batch_size, seed, epoch, shuffle,
                                                              drop_last, cut):
    seen = []
    for rank in range(world):
        share = rank_share(n, epoch, seed, shuffle, rank, world, drop_last)
        plan = plan_batches(share, batch_size, 0, drop_last)
        by_worker = [plan[k::workers] for k in range(workers)]
        # a DataLoader takes batch j from worker j % workers: the plan's order again
        merged = [by_worker[j % workers][j // workers] for j in range(len(plan))]
        assert all(np.array_equal(a, b) for a, b in zip(merged, plan))
        flat = np.concatenate(plan) if plan else np.zeros(0, np.int64)
        seen += flat.tolist()
        start = min(cut, len(share)) // batch_size * batch_size  # resuming after whole batches
        rest = plan_batches(share, batch_size, start, drop_last)
        tail = np.concatenate(rest).tolist() if rest else []
        assert flat[:start].tolist() + tail == flat.tolist()
    if drop_last:
        assert len(set(seen)) == len(seen) and len(seen) >= n - world * batch_size - world
    else:
        assert sorted(seen) == list(range(n))  # every item exactly once over the ranks


def test_bad_window_arguments_name_the_argument():
    for kwargs, needle in (({"length": 0}, "length"), ({"length": 2, "shift": 0}, "shift"),
                           ({"length": 2, "stride": -1}, "stride"), ({"length": 2, "boundary": "wrap"}, "'wrap'")):
        with pytest.raises(DataError, match=needle):
            WindowIndex([3], **kwargs)
    with pytest.raises(DataError, match="rank"):
        rank_share(5, 0, 0, True, 2, 2)
    with pytest.raises(DataError, match="position 6"):
        plan_batches(np.arange(5), 2, 6)
