"""GymnasiumBatch: same-step auto-reset, final observations, flags and episode stats."""

import gymnasium as gym
import numpy as np
from batch_checks import assert_batch_matches_rollouts
import pytest

from seedrl.envs import COUNTING_ID, CountingEnv, EnvConfig, GymnasiumBatch, make_env_batch


def plain_rollout(make, seed, actions):
    """A plain Gymnasium loop with manual reset: per step (obs, reward, term, trunc, final_obs or None)."""
    env = make()
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for a in actions:
        obs, r, term, trunc, _ = env.step(int(a))
        final = None
        if term or trunc:
            final = obs
            obs, _ = env.reset()
        out.append((obs, r, term, trunc, final))
    env.close()
    return out


def test_cartpole_matches_plain_loop_with_same_step_reset():
    n, steps, seed = 3, 200, 11
    make = lambda: gym.make("CartPole-v1", max_episode_steps=15)  # noqa: E731
    actions = np.random.default_rng(0).integers(0, 2, size=(steps, n))
    refs = [plain_rollout(make, seed + j, actions[:, j]) for j in range(n)]
    batch = GymnasiumBatch([make] * n, seed=seed)
    assert_batch_matches_rollouts(batch, refs, actions)


def test_counting_env_encodes_episode_and_step():
    n, length = 2, 3
    batch = GymnasiumBatch([lambda: CountingEnv(episode_length=length)] * n, seed=100)
    obs = batch.reset()
    np.testing.assert_array_equal(obs, [[100, 0, 0], [101, 0, 0]])
    for t in range(1, 2 * length + 1):
        res = batch.step([CountingEnv.optimal_action(o) for o in obs])
        episode, step = divmod(t, length)
        np.testing.assert_array_equal(res.obs[:, 1:], [[episode, step]] * n)
        assert (res.reward == 1).all()
        if step == 0:  # an episode just ended: terminal, with its last observation kept
            assert res.terminated.all() and not res.truncated.any()
            for j in range(n):
                np.testing.assert_array_equal(res.final_obs[j], [100 + j, episode - 1, length])
            assert sorted(res.episodes) == [(0, float(length), length), (1, float(length), length)]
        else:
            assert not res.done.any() and res.final_obs == {} and res.episodes == []
        obs = res.obs


def test_truncation_is_reported_as_truncated():
    batch = GymnasiumBatch([lambda: CountingEnv(episode_length=2, truncate=True)], seed=0)
    batch.reset()
    batch.step([0])
    res = batch.step([0])
    assert res.truncated[0] and not res.terminated[0]
    np.testing.assert_array_equal(res.final_obs[0], [0, 0, 2])
    assert res.episodes == [(0, 1.0, 2)]


def test_terminal_at_time_limit_counts_as_terminal():
    # TimeLimit sets truncated together with terminated: the batch reports the terminal only.
    make = lambda: gym.make(COUNTING_ID, episode_length=2, max_episode_steps=2)  # noqa: E731
    batch = GymnasiumBatch([make], seed=0)
    batch.reset()
    batch.step([0])
    res = batch.step([1])
    assert res.terminated[0] and not res.truncated[0]


def test_small_time_limit_truncates_cartpole():
    cfg = EnvConfig(id="CartPole-v1", backend="gymnasium", max_episode_steps=4)
    with make_env_batch(cfg, num_envs=2, seed=0) as batch:
        batch.reset()
        for t in range(4):
            res = batch.step(np.full(2, t % 2))  # alternating actions cannot fall in 4 steps
        assert res.truncated.all() and not res.terminated.any()
        assert sorted(res.final_obs) == [0, 1]
        assert [e.length for e in res.episodes] == [4, 4]


def test_reset_seeding_is_deterministic():
    cfg = EnvConfig(id="CartPole-v1", backend="gymnasium")
    a = make_env_batch(cfg, num_envs=3, seed=5)
    b = make_env_batch(cfg, num_envs=3, seed=0)
    first = a.reset()
    np.testing.assert_array_equal(first, b.reset(seed=5))
    a.step([0, 1, 0])
    np.testing.assert_array_equal(a.reset(seed=5), first)
    assert not np.array_equal(first[0], first[1])


def test_errors():
    batch = GymnasiumBatch([lambda: CountingEnv()] * 2)
    with pytest.raises(RuntimeError):
        batch.step([0, 0])
    batch.reset()
    with pytest.raises(ValueError):
        batch.step([0, 0, 0])
    with pytest.raises(ValueError):
        GymnasiumBatch([lambda: CountingEnv(num_actions=2), lambda: CountingEnv(num_actions=3)])
