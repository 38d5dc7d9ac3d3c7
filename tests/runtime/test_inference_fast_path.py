"""Central inference's sampler (Gumbel-max) and its feed-forward / recurrent state paths."""

from __future__ import annotations

import queue

import gymnasium as gym
import numpy as np
import pytest
import torch

from seedrl.models.actor_critic import ActorCritic
from seedrl.runtime.inference import InferenceServer, sample_actions
from seedrl.runtime.transport import ActorSlot, SlotLayout

OBS = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)


class FakeEndpoint:
    """Slots filled by hand; replies do nothing."""

    def __init__(self, layout: SlotLayout, num_actors: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.slots = [ActorSlot(layout, bytearray(layout.nbytes())) for _ in range(num_actors)]
        for s in self.slots:
            s.obs[:] = rng.standard_normal(s.obs.shape)
            s.first[:] = False
            s.reward[:] = 1.0
            s.terminated[:] = False
            s.truncated[:] = False
        self.replied: list[list[int]] = []

    def reply(self, actor_ids):
        self.replied.append(list(actor_ids))

    def live_actors(self) -> int:
        return len(self.slots)


def _server(model, num_actors=2, num_envs=3, T=4, seed=0):
    layout = SlotLayout(num_envs, (4,), "float32")
    q: queue.Queue = queue.Queue()
    return InferenceServer(model, layout, num_actors, T, q, seed=seed), FakeEndpoint(layout, num_actors), q


# ---------------------------------------------------------------- the sampler


def test_gumbel_max_matches_the_softmax_distribution_per_row():
    # Rows with different distributions in one batch, incl. a peaked one and a masked (-inf) action.
    probs = torch.tensor([
        [0.5, 0.3, 0.15, 0.05],
        [0.25, 0.25, 0.25, 0.25],
        [0.97, 0.01, 0.01, 0.01],
        [0.0, 0.6, 0.0, 0.4],
    ])
    logits = probs.log() + torch.tensor([[3.0], [-1.0], [0.5], [7.0]])  # shift per row: same softmax
    rows, reps, calls = probs.shape[0], 500, 200
    batch = logits.repeat(reps, 1)  # [rows * reps, A], row r at r, r + rows, ...
    gen = torch.Generator().manual_seed(1234)
    counts = np.zeros(probs.shape)
    for _ in range(calls):
        actions, _ = sample_actions(batch, gen)
        np.add.at(counts, (np.tile(np.arange(rows), reps), actions), 1)
    n = reps * calls  # 100,000 samples per row
    p = probs.numpy().astype(np.float64)
    assert (counts[p == 0] == 0).all()  # a zero-probability action is never sampled
    support = p > 0
    chi2 = (((counts - n * p) ** 2)[support] / (n * p)[support])
    per_row = [chi2[support[:r].sum(): support[: r + 1].sum()].sum() for r in range(rows)]
    # <= 3 degrees of freedom per row: P(chi2 > 30) < 2e-6 for a correct sampler (and the seed is fixed).
    assert max(per_row) < 30, per_row
    np.testing.assert_allclose(counts / n, p, atol=0.01)


def test_logp_is_log_softmax_at_the_sampled_action():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 6) * 3
    actions, logp = sample_actions(logits, gen)
    assert actions.shape == (64,) and actions.dtype == np.int64
    assert logp.shape == (64,) and logp.dtype == np.float32
    expected = torch.log_softmax(logits, -1).gather(-1, torch.from_numpy(actions).unsqueeze(-1)).squeeze(-1)
    np.testing.assert_array_equal(logp, expected.numpy())


def test_same_seed_same_actions_and_generator_state_advances():
    logits = torch.zeros(32, 5)
    a1 = [sample_actions(logits, g)[0] for g in [torch.Generator().manual_seed(7)] for _ in range(3)]
    a2 = [sample_actions(logits, g)[0] for g in [torch.Generator().manual_seed(7)] for _ in range(3)]
    for x, y in zip(a1, a2):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a1[0], a1[1])  # successive calls draw fresh noise
    other = sample_actions(logits, torch.Generator().manual_seed(8))[0]
    assert not np.array_equal(a1[0], other)


def test_nan_logits_raise():
    logits = torch.zeros(4, 3)
    logits[2, 1] = float("nan")
    with pytest.raises(RuntimeError, match="NaN"):
        sample_actions(logits, torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- state paths


def test_feed_forward_server_keeps_no_state_and_is_deterministic_per_seed():
    torch.manual_seed(0)
    model = ActorCritic.from_spaces(OBS, gym.spaces.Discrete(3)).eval()
    runs = []
    for _ in range(2):
        server, ep, q = _server(model, seed=5)
        assert server.state == ()
        actions = []
        for step in range(9):  # T = 4: two unrolls per actor
            server.infer(ep, [0, 1] if step % 3 else [1])
            actions.append(np.stack([s.action.copy() for s in ep.slots]))
        runs.append((np.stack(actions), [q.get_nowait() for _ in range(q.qsize())]))
    (acts1, unrolls1), (acts2, unrolls2) = runs
    np.testing.assert_array_equal(acts1, acts2)
    assert len(unrolls1) == len(unrolls2) > 0
    for u1, u2 in zip(unrolls1, unrolls2):
        assert u1.state0 == () and u2.state0 == ()
        for k in u1.arrays:
            np.testing.assert_array_equal(u1.arrays[k], u2.arrays[k])
        # behaviour logp = log_softmax of the policy at the recorded action
        a = u1.arrays
        logits, _, _ = model.step(torch.from_numpy(a["obs"][1]), (), torch.from_numpy(a["first"][1]),
                                  torch.from_numpy(a["prev_action"][1]), torch.from_numpy(a["prev_reward"][1]))
        lp = torch.log_softmax(logits, -1).gather(-1, torch.from_numpy(a["action"][1]).unsqueeze(-1)).squeeze(-1)
        np.testing.assert_allclose(a["logp"][1], lp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_recurrent_state_rows_are_gathered_and_scattered_per_actor():
    torch.manual_seed(0)
    model = ActorCritic.from_spaces(OBS, gym.spaces.Discrete(3), lstm_size=8).eval()
    server, ep, _ = _server(model, num_actors=3, num_envs=2)
    n = 2
    for s in server.state:  # distinct state per row, so a wrong row shows
        s.copy_(torch.randn_like(s))
    before = tuple(s.clone() for s in server.state)
    ep.slots[2].first[1] = True  # env 1 of actor 2 starts an episode: its state resets
    server.infer(ep, [0, 2])
    rows = torch.tensor([0, 1, 4, 5])
    obs = torch.from_numpy(np.concatenate([ep.slots[0].obs, ep.slots[2].obs]))
    first = torch.tensor([False, False, False, True])
    with torch.no_grad():
        _, _, expected = model.step(obs, tuple(s[rows] for s in before), first,
                                    torch.zeros(4, dtype=torch.int64), torch.tensor([1.0, 1.0, 1.0, 0.0]))
    for s, b, e in zip(server.state, before, expected):
        torch.testing.assert_close(s[rows], e)
        torch.testing.assert_close(s[n : 2 * n], b[n : 2 * n])  # actor 1 did not submit: untouched
    # the unroll buffers hold the state the step started from
    torch.testing.assert_close(server.buffers[2].state0[0], before[0][4:6])
    torch.testing.assert_close(server.buffers[0].state0[1], before[1][0:2])
