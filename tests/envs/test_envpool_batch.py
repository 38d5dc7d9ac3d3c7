"""EnvpoolBatch: EnvPool's next-step auto-reset turned into same-step auto-reset."""

import numpy as np
from batch_checks import assert_batch_matches_rollouts
import pytest

envpool = pytest.importorskip("envpool")
# raw EnvPool (the reference here) builds float64 bounds for float32 Box spaces
pytestmark = pytest.mark.filterwarnings("ignore:.*precision lowered by casting:UserWarning")

from seedrl.envs import EnvConfig, EnvpoolBatch, make_env_batch  # noqa: E402


def raw_envpool_rollout(seed, actions, max_episode_steps):
    """One raw EnvPool env (seed ``seed``, like env j of a batch seeded ``seed - j``).

    Per step: (obs, reward, term, trunc, final_obs or None), doing EnvPool's
    next-step reset by hand right after the episode ends.
    """
    env = envpool.make_gymnasium("CartPole-v1", num_envs=1, seed=seed, max_episode_steps=max_episode_steps)
    obs, _ = env.reset()
    out = [obs[0]]
    for a in actions:
        obs, r, term, trunc, _ = env.step(np.array([a]))
        final = None
        if term[0] or trunc[0]:
            final = obs[0]
            obs, r_reset, _, _, info = env.step(np.array([0]))
            assert r_reset[0] == 0 and info["elapsed_step"][0] == 0
        out.append((obs[0], r[0], bool(term[0]), bool(trunc[0]), final))
    return out


def test_cartpole_same_step_reset_matches_raw_envpool():
    n, steps, seed, limit = 4, 200, 3, 15
    actions = np.random.default_rng(1).integers(0, 2, size=(steps, n))
    refs = [raw_envpool_rollout(seed + j, actions[:, j], limit) for j in range(n)]
    batch = EnvpoolBatch("CartPole-v1", n, seed=seed, num_threads=1, max_episode_steps=limit)
    assert_batch_matches_rollouts(batch, refs, actions)
    batch.close()


def test_small_time_limit_truncates():
    cfg = EnvConfig(id="CartPole-v1", backend="envpool", max_episode_steps=4, envpool_threads=1)
    with make_env_batch(cfg, num_envs=2, seed=0) as batch:
        assert isinstance(batch, EnvpoolBatch)
        obs = batch.reset()
        for t in range(4):
            res = batch.step(np.full(2, t % 2))
        assert res.truncated.all() and not res.terminated.any()
        assert sorted(res.final_obs) == [0, 1]
        assert [e.length for e in res.episodes] == [4, 4]
        # the new episode has started: its first observation is not the final one
        assert not np.array_equal(res.obs[0], res.final_obs[0])
        assert not np.array_equal(res.obs[0], obs[0])


def test_reset_with_seed_restarts_the_same_episodes():
    batch = EnvpoolBatch("CartPole-v1", 3, seed=7, num_threads=1)
    first = batch.reset()
    second = batch.step([1, 0, 1]).obs.copy()
    np.testing.assert_array_equal(batch.reset(seed=7), first)
    np.testing.assert_array_equal(batch.step([1, 0, 1]).obs, second)
    other = batch.reset(seed=8)
    np.testing.assert_array_equal(other[:2], first[1:])  # env j of seed 8 == env j+1 of seed 7
    assert not np.array_equal(batch.reset(), other)  # unseeded reset: new episodes
    batch.close()


def test_returned_arrays_are_not_overwritten_by_later_steps():
    batch = EnvpoolBatch("CartPole-v1", 2, seed=0, num_threads=1)
    obs = batch.reset()
    kept = obs.copy()
    res = batch.step([0, 0])
    kept_res = res.obs.copy()
    for _ in range(30):
        batch.step([0, 0])
    np.testing.assert_array_equal(obs, kept)
    np.testing.assert_array_equal(res.obs, kept_res)
    batch.close()
