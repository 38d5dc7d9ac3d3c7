"""Seeding the replay from RLDS episodes: the stream against a step-by-step reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seedrl.data import DatasetWriter, StepSpec, open_dataset
from seedrl.runtime.replay import SequenceReplay
from seedrl.runtime.replay.from_dataset import episodes_to_stream, seed_from_dataset


def make_episode(rng, n, terminal, K=3):
    """n RLDS steps of frame-stacked observations (the stack shifts by one frame per step)."""
    frames = rng.integers(0, 255, (n + K - 1, 2, 2)).astype(np.uint8)
    return [
        {
            "observation": frames[i : i + K].copy(),
            "action": np.int64(rng.integers(0, 4)) if i < n - 1 else np.int64(0),
            "reward": np.float32(rng.standard_normal()) if i < n - 1 else np.float32(0),
            "discount": np.float32(1.0),
            "is_first": i == 0,
            "is_last": i == n - 1,
            "is_terminal": terminal and i == n - 1,
        }
        for i in range(n)
    ]


def reference_stream(episodes):
    """The runtime entries, one at a time, as central inference would have recorded them."""
    rows, finals, prev_end = [], {}, None
    for steps in episodes:
        if len(steps) < 2:
            continue
        for i, s in enumerate(steps[:-1]):
            row = {"obs": s["observation"], "first": i == 0, "action": s["action"], "logp": 0.0, "version": -1}
            if i == 0:
                r, term, trunc = prev_end or (0.0, False, False)
                if trunc:
                    finals[len(rows)] = prev_final
                row.update(reward=r, terminated=term, truncated=trunc, prev_action=0, prev_reward=0.0)
            else:
                row.update(reward=steps[i - 1]["reward"], terminated=False, truncated=False,
                           prev_action=steps[i - 1]["action"], prev_reward=steps[i - 1]["reward"])
            rows.append(row)
        prev_end = (steps[-2]["reward"], steps[-1]["is_terminal"], not steps[-1]["is_terminal"])
        prev_final = steps[-1]["observation"]
    r, term, trunc = prev_end
    if trunc:
        finals[len(rows)] = prev_final
    rows.append({"obs": prev_final, "first": True, "action": 0, "logp": 0.0, "version": -1, "reward": r,
                 "terminated": term, "truncated": trunc, "prev_action": 0, "prev_reward": 0.0})
    return rows, finals


@settings(max_examples=20, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(1, 9), st.booleans()), min_size=1, max_size=5),
    burn_in=st.integers(0, 3),
    unroll=st.integers(1, 4),
    seed=st.integers(0, 100),
)
def test_seeded_sequences_follow_the_runtime_layout(tmp_path_factory, lengths, burn_in, unroll, seed):
    rng = np.random.default_rng(seed)
    episodes = [make_episode(rng, n, term) for n, term in lengths]
    if sum(n - 1 for n, _ in lengths if n >= 2) == 0:
        with pytest.raises(ValueError, match="no transition"):
            episodes_to_stream([])
        return
    path = tmp_path_factory.mktemp("ds")
    with DatasetWriter(path, StepSpec.infer(episodes[0])) as w:
        for steps in episodes:
            w.write_episode(steps)
    rows, finals = reference_stream(episodes)
    L, overlap = burn_in + unroll + 1, burn_in + 1
    replay = SequenceReplay(1000, L, overlap)
    if len(rows) < L:
        with pytest.raises(ValueError, match="fewer than one sequence"):
            seed_from_dataset(replay, open_dataset(path), state_shapes=((2,),))
        return
    ids = seed_from_dataset(replay, open_dataset(path), state_shapes=((2,),), priority=0.5)
    batch = replay.read(ids)
    starts = [int(s) for s in range(0, len(rows) - L + 1, L - overlap)]
    if starts[-1] != len(rows) - L:
        starts.append(len(rows) - L)
    assert len(ids) == len(starts)
    for b, s in enumerate(starts):
        for t in range(L):
            for k, v in rows[s + t].items():
                np.testing.assert_array_equal(batch.arrays[k][t, b], v, err_msg=f"{k} at entry {s + t}")
        want = {(t - s, b): o for t, o in finals.items() if s <= t < s + L}
        assert sorted(k for k in batch.final_obs if k[1] == b) == sorted(want)
        for key, o in want.items():
            np.testing.assert_array_equal(batch.final_obs[key], o)
    torch.testing.assert_close(batch.state0[0], torch.zeros(len(ids), 2))
    np.testing.assert_allclose(replay.probabilities(ids), 1 / len(ids))
    # Shared windows are stored once: entries = the stream, plus the end-aligned window if any.
    regular = len(range(0, len(rows) - L + 1, L - overlap))
    expected = L + (regular - 1) * (L - overlap) + (L if len(starts) > regular else 0)
    assert replay.memory()["entries"] == expected


def test_seeding_defaults_to_the_stored_state_shapes_and_max_priority():
    rng = np.random.default_rng(0)
    from seedrl.data.episode import Episode

    eps = [Episode.from_steps(make_episode(rng, 8, True)) for _ in range(2)]
    replay = SequenceReplay(50, 4, 2)
    seed_from_dataset(replay, eps[:1], state_shapes=((3,), (3,)))
    replay.update_priorities(np.array([0]), np.array([7.0]))
    ids = seed_from_dataset(replay, eps[1:])
    assert [s.shape for s in replay.read(ids).state0] == [(len(ids), 3), (len(ids), 3)]
    np.testing.assert_allclose(replay.tree.get(ids % 50), 7.0**0.9)
    with pytest.raises(ValueError, match="state_shapes is required"):
        seed_from_dataset(SequenceReplay(5, 4, 2), eps)
