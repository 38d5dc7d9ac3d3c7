"""Central inference builds unrolls that are exact records of what the actors did."""

from __future__ import annotations

import queue

import numpy as np
import pytest
import torch

from seedrl.envs import COUNTING_ID, EnvConfig
from seedrl.models.actor_critic import ActorCritic
from seedrl.runtime.transport import SlotLayout
from seedrl.runtime.unrolls import stack_unrolls

import gymnasium as gym


@pytest.fixture
def collect(collect_unrolls):
    def run(num_actors=2, num_envs=3, T=4, max_episode_steps=None, lstm=None, n_unrolls=12, seed=0):
        env_cfg = EnvConfig(kind="gym", id=COUNTING_ID, num_envs=num_envs, max_episode_steps=max_episode_steps)
        obs_space = gym.spaces.Box(-1, 2**62, (3,), np.int64)
        model = ActorCritic.from_spaces(obs_space, gym.spaces.Discrete(2), torso="mlp", lstm_size=lstm)
        layout = SlotLayout(num_envs, (3,), "int64")
        server, unrolls = collect_unrolls(model, env_cfg, layout, num_actors=num_actors, unroll_length=T,
                                          num_unrolls=n_unrolls, seed=seed)
        return model, server, unrolls

    return run


def test_unrolls_record_transitions_exactly_and_overlap_by_one(collect):
    T = 4
    model, _, unrolls = collect(T=T)
    by_actor: dict[int, list] = {}
    for u in unrolls:
        by_actor.setdefault(u.actor_id, []).append(u)
        a = u.arrays
        assert a["obs"].shape == (T + 1, 3, 3)
        for t in range(T):
            obs, nxt = a["obs"][t], a["obs"][t + 1]
            # reward of transition t arrives with entry t+1: 1 iff the action matched step % 2
            np.testing.assert_array_equal(a["reward"][t + 1], (a["action"][t] == obs[:, 2] % 2).astype(np.float32))
            cont = ~a["first"][t + 1]
            np.testing.assert_array_equal(nxt[cont, 2], obs[cont, 2] + 1)  # same episode: step + 1
            np.testing.assert_array_equal(nxt[cont, 1], obs[cont, 1])
            ended = a["first"][t + 1]
            np.testing.assert_array_equal(a["terminated"][t + 1], ended & (obs[:, 2] == 4))  # CountingEnv: 5 steps
            np.testing.assert_array_equal(nxt[ended, 2], 0)
            np.testing.assert_array_equal(nxt[ended, 1], obs[ended, 1] + 1)
        # behaviour log-probs are the policy's (weights never change here)
        with torch.no_grad():
            logits, _, _ = model.step(torch.from_numpy(a["obs"].reshape(-1, 3)), (), None, None, None)
        logp = torch.log_softmax(logits, -1).gather(-1, torch.from_numpy(a["action"].reshape(-1, 1))).squeeze(-1)
        np.testing.assert_allclose(a["logp"].reshape(-1), logp.numpy(), rtol=1e-5, atol=1e-6)
    for us in by_actor.values():
        for u1, u2 in zip(us, us[1:]):
            for k in u1.arrays:
                np.testing.assert_array_equal(u2.arrays[k][0], u1.arrays[k][T], err_msg=k)


def test_truncation_keeps_the_final_observation(collect):
    T = 6
    _, _, unrolls = collect(T=T, max_episode_steps=3, n_unrolls=6)
    seen = 0
    for u in unrolls:
        a = u.arrays
        assert not a["terminated"].any()  # the 3-step limit always comes before the 5-step terminal
        for t in range(1, T + 1):
            for n in np.flatnonzero(a["truncated"][t]):
                final = u.final_obs[(t, int(n))]
                assert final[2] == 3 and final[1] == a["obs"][t - 1, n, 1]  # last obs of the finished episode
                assert a["obs"][t, n, 2] == 0 and a["first"][t, n]
                seen += 1
        assert set(u.final_obs) == {(t, int(n)) for t in range(1, T + 1) for n in np.flatnonzero(a["truncated"][t])}
    assert seen > 0


def test_stacking_unrolls_offsets_final_obs(collect):
    _, _, unrolls = collect(T=6, max_episode_steps=3, n_unrolls=4)
    batch = stack_unrolls(unrolls)
    assert batch.arrays["obs"].shape == (7, 12, 3)
    for (t, n), final in batch.final_obs.items():
        assert batch.arrays["truncated"][t, n]
        np.testing.assert_array_equal(final[:2], batch.arrays["obs"][t - 1, n, :2])


def test_recurrent_state_is_kept_per_env_and_reset_on_actor_restart(collect):
    _, server, unrolls = collect(lstm=8, n_unrolls=4)
    h = server.state[0]
    assert h.shape[0] == 6 and h.abs().sum() > 0
    assert unrolls[0].state0[0].shape == (3, 8)
    server.reset_actor(1)
    assert h[3:6].abs().sum() == 0 and h[0:3].abs().sum() > 0
    assert server.buffers[1].pos == 0


def test_learner_batches_split_and_join_actor_unrolls(collect):
    import threading as th

    from seedrl.runtime.learner import Learner

    _, _, unrolls = collect(T=6, max_episode_steps=3, n_unrolls=4)  # 4 unrolls x 3 envs
    q: queue.Queue = queue.Queue()
    for u in unrolls:
        q.put(u)
    learner = Learner(None, None, None, None, q, 5)
    a, b = learner.next_batch(th.Event()), learner.next_batch(th.Event())
    assert a.num_envs == b.num_envs == 5
    whole = stack_unrolls(unrolls)
    got = stack_unrolls([a, b])
    for k in whole.arrays:
        np.testing.assert_array_equal(got.arrays[k], whole.arrays[k][:, :10], err_msg=k)
    expected = {key: obs for key, obs in whole.final_obs.items() if key[1] < 10}
    assert set(got.final_obs) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(got.final_obs[key], expected[key])


def test_take_picks_environments_in_order_with_their_state_and_final_obs():
    from seedrl.runtime.unrolls import Unroll

    T, N = 3, 5
    arrays = {"obs": np.arange((T + 1) * N).reshape(T + 1, N), "action": np.arange((T + 1) * N).reshape(T + 1, N) * 10}
    state0 = (torch.arange(N * 2.0).reshape(N, 2), torch.arange(N * 2.0).reshape(N, 2) + 100)
    finals = {(2, 1): np.array(-1), (3, 4): np.array(-4), (1, 0): np.array(-7)}
    part = Unroll(arrays, state0, finals, actor_id=3).take(np.array([4, 1]))
    np.testing.assert_array_equal(part.arrays["obs"], arrays["obs"][:, [4, 1]])
    np.testing.assert_array_equal(part.arrays["action"], arrays["action"][:, [4, 1]])
    assert torch.equal(part.state0[0], state0[0][[4, 1]]) and torch.equal(part.state0[1], state0[1][[4, 1]])
    assert {k: int(v) for k, v in part.final_obs.items()} == {(3, 0): -4, (2, 1): -1}
    assert part.actor_id == 3 and part.num_envs == 2
