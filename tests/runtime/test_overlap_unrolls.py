"""Overlapping unrolls (R2D2's burn-in + L + 1 windows) against a hand-built stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seedrl.runtime.transport import SlotLayout
from seedrl.runtime.unrolls import UnrollBuffer

N = 2


def entry(k: int) -> dict[str, np.ndarray]:
    """Step k of the stream: env j observes 10*k + j; flags/actions are functions of k."""
    obs = np.array([[10 * k + j] for j in range(N)], np.int64)
    return {
        "obs": obs, "first": np.full(N, k % 7 == 0), "reward": np.full(N, float(k), np.float32),
        "terminated": np.zeros(N, bool), "truncated": np.full(N, k == 9), "action": np.full(N, k % 3, np.int64),
        "logp": np.full(N, -0.1 * k, np.float32), "prev_action": np.full(N, (k - 1) % 3, np.int64),
        "prev_reward": np.full(N, float(k - 1), np.float32),
    }


def state(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrent state the policy read at step k (h = k, c = -k)."""
    return torch.full((N, 3), float(k)), torch.full((N, 3), -float(k))


def feed(buf: UnrollBuffer, steps) -> list:
    out = []
    for k in steps:
        finals = {1: np.array([999 + k], np.int64)} if k == 9 else {}
        u = buf.add(entry(k), finals, state(k), version=k // 4, actor_id=3)
        if u is not None:
            out.append(u)
    return out


@pytest.mark.parametrize("burn_in,L", [(2, 3), (0, 4), (3, 1)])
def test_windows_overlap_by_burn_in_plus_one_with_the_state_at_their_start(burn_in, L):
    T, overlap = burn_in + L, burn_in + 1
    buf = UnrollBuffer(SlotLayout(N, (1,), "int64"), T, overlap=overlap)
    unrolls = feed(buf, range(40))
    stride = T + 1 - overlap  # = L: every step is learned once
    assert stride == L
    assert len(unrolls) == (40 - overlap) // stride
    for i, u in enumerate(unrolls):
        ks = np.arange(i * stride, i * stride + T + 1)  # stream steps this window covers
        np.testing.assert_array_equal(u.arrays["obs"][:, :, 0], 10 * ks[:, None] + np.arange(N))
        np.testing.assert_array_equal(u.arrays["action"][:, 0], ks % 3)
        np.testing.assert_array_equal(u.arrays["version"][:, 1], ks // 4)
        np.testing.assert_array_equal(u.arrays["first"][:, 0], ks % 7 == 0)
        torch.testing.assert_close(u.state0[0], state(int(ks[0]))[0])
        torch.testing.assert_close(u.state0[1], state(int(ks[0]))[1])
        assert u.continues == (i > 0)
        assert u.actor_id == 3
        # the truncation at step 9 is recorded in every window that holds it after its entry 0
        want = {(int(9 - ks[0]), 1)} if ks[0] < 9 <= ks[-1] else set()
        assert set(u.final_obs) == want
        for key in want:
            assert u.final_obs[key][0] == 999 + 9


def test_a_restart_starts_a_new_stream_and_impala_keeps_overlap_one():
    buf = UnrollBuffer(SlotLayout(N, (1,), "int64"), 4, overlap=3)
    first = feed(buf, range(7))  # windows 0..4 and 2..6
    assert [u.continues for u in first] == [False, True]
    buf.reset()  # the actor restarted: its stream begins again, nothing carried over
    again = feed(buf, range(100, 105))
    assert len(again) == 1 and not again[0].continues
    np.testing.assert_array_equal(again[0].arrays["obs"][:, 0, 0], 10 * np.arange(100, 105))
    torch.testing.assert_close(again[0].state0[0], state(100)[0])

    impala = UnrollBuffer(SlotLayout(N, (1,), "int64"), 4)  # default overlap 1: as before
    us = feed(impala, range(13))
    assert [int(u.arrays["obs"][0, 0, 0]) for u in us] == [0, 40, 80]
    torch.testing.assert_close(us[1].state0[0], state(4)[0])


def test_overlap_out_of_range_is_refused():
    with pytest.raises(ValueError, match="overlap"):
        UnrollBuffer(SlotLayout(N, (1,), "int64"), 4, overlap=5)
    with pytest.raises(ValueError, match="overlap"):
        UnrollBuffer(SlotLayout(N, (1,), "int64"), 4, overlap=0)
