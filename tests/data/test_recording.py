"""Recording episodes from Gymnasium, vector and dm_env environments (seedrl.data.recording)."""

from __future__ import annotations

import numpy as np
import pytest

import gymnasium
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from seedrl.data import DatasetWriter, open_dataset
from seedrl.data.recording import RecordEpisodes, RecordingEnvironment, RecordVectorEpisodes, sub_info


def cartpole(limit: int = 10) -> gymnasium.Env:
    return gymnasium.make("CartPole-v1", max_episode_steps=limit)


def replay(env: gymnasium.Env, seed, actions):
    """Brute force: reset with ``seed`` and play ``actions``; returns the env's raw outputs."""
    obs, info = env.reset(seed=None if seed is None or seed < 0 else int(seed))  # -1: unseeded
    observations, rewards, terms, truncs = [obs], [], [], []
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        observations.append(obs)
        rewards.append(r)
        terms.append(term)
        truncs.append(trunc)
    return observations, rewards, terms, truncs


def check_flags(ep, terminal: bool) -> None:
    n = len(ep)
    np.testing.assert_array_equal(ep.columns["is_first"], np.arange(n) == 0)
    np.testing.assert_array_equal(ep.columns["is_last"], np.arange(n) == n - 1)
    np.testing.assert_array_equal(ep.columns["is_terminal"], (np.arange(n) == n - 1) & terminal)


def check_against_replay(ep, env: gymnasium.Env, seed) -> bool:
    """Asserts ``ep`` is exactly what ``env`` produces from ``seed`` and the recorded actions;
    returns whether the episode terminated."""
    n = len(ep) - 1
    cols = ep.columns
    observations, rewards, terms, truncs = replay(env, seed, cols["action"][:n])
    assert cols["observation"].tobytes() == np.stack(observations).tobytes()  # obs[t+1] = env(o_t, a_t)
    np.testing.assert_array_equal(cols["reward"], np.array([*rewards, 0.0]))
    terminal = bool(terms[-1])
    assert not any(terms[:-1]) and not any(truncs[:-1])
    discounts = np.array([1.0] * (n - 1) + [0.0 if terminal else 1.0, 0.0], np.float32)
    np.testing.assert_array_equal(cols["discount"], discounts)
    assert cols["action"][n] == 0
    check_flags(ep, terminal)
    return terminal


def test_cartpole_episodes_match_a_brute_force_replay(tmp_path):
    env = RecordEpisodes(cartpole(10), tmp_path / "ds")
    env.action_space.seed(0)
    seeds = list(range(100, 108))
    for k, seed in enumerate(seeds):
        env.reset(seed=seed)
        done = False
        while not done:  # odd episodes always push left, so that they terminate within 10 steps
            action = 0 if k % 2 else env.action_space.sample()
            _, _, term, trunc, _ = env.step(action)
            done = term or trunc
    env.close()
    assert env.writer.closed  # created from a path: closed with the wrapper
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == len(seeds) and list(ds.entries[i].episode_id for i in range(len(ds))) == env.episode_ids
    spec = {f.path: (f.dtype, f.shape) for f in ds.spec.fields}
    assert spec["observation"] == ("float32", (4,)) and spec["action"] == ("int64", ())
    assert spec["reward"] == ("float64", ()) and spec["discount"] == ("float32", ())
    outcomes = []
    reference = cartpole(10)
    for ep, seed in zip(ds, seeds):
        assert ep.metadata["seed"] == seed and ep.metadata["env_id"] == "CartPole-v1"
        terminal = check_against_replay(ep, reference, seed)
        assert terminal or len(ep) == 11  # truncated by the time limit after 10 actions
        outcomes.append(terminal)
    assert any(outcomes) and not all(outcomes)


def test_mid_episode_reset_and_close_truncate_zero_action_episodes_are_dropped(tmp_path):
    with DatasetWriter(tmp_path / "ds") as writer:
        env = RecordEpisodes(cartpole(500), writer)
        env.reset(seed=1)
        for a in (0, 1, 1):
            env.step(a)
        env.reset(seed=2)  # ends episode 1 as truncated after 3 actions
        env.reset(seed=3)  # episode 2 took no action: not written
        env.step(1)
        env.step(0)
        env.close()  # episode 3 in progress: truncated
        assert not writer.closed  # a writer given in stays open
        with pytest.raises(RuntimeError, match="reset"):
            RecordEpisodes(cartpole(), writer).step(0)
    ds = open_dataset(tmp_path / "ds")
    assert [ep.metadata["seed"] for ep in ds] == [1, 3]
    assert [len(ep) for ep in ds] == [4, 3]
    reference = cartpole(500)
    assert not any(check_against_replay(ep, reference, ep.metadata["seed"]) for ep in ds)


def test_step_after_the_episode_ended_raises(tmp_path):
    env = RecordEpisodes(cartpole(2), tmp_path / "ds")
    env.reset(seed=0)
    env.step(0)
    assert env.step(0)[3]  # truncated
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset()
    env.close()
    assert [ep.metadata["seed"] for ep in open_dataset(tmp_path / "ds")] == [0]


class NestedEnv(gymnasium.Env):
    """Dict/Tuple observations, float32 Box actions; mutates one observation buffer in place."""

    def __init__(self, horizon: int = 4):
        self.observation_space = spaces.Dict(
            {
                "pos": spaces.Box(-10, 10, (2,), np.float32),
                "inner": spaces.Tuple((spaces.Discrete(3), spaces.Box(0, 9, (3,), np.int16))),
            }
        )
        self.action_space = spaces.Box(-1, 1, (1,), np.float32)
        self.horizon = horizon
        self._pos = np.zeros(2, np.float32)

    def _obs(self):
        return {"pos": self._pos, "inner": (self.t % 3, np.full(3, self.t, np.int16))}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self._pos[:] = self.np_random.uniform(-1, 1, 2)
        return self._obs(), {"t": 0, "x": float(self._pos[0])}

    def step(self, action):
        self.t += 1
        self._pos += action[0]  # in place: the recorder must copy
        return self._obs(), float(self.t), self.t >= self.horizon, False, {"t": self.t, "x": float(self._pos[0])}


def test_nested_observations_step_fn_episode_fn_and_infos(tmp_path):
    calls = []

    def step_fn(obs, action, reward, terminated, truncated, info):
        calls.append(reward)
        return {"pos_sum": np.float32(obs["pos"].sum()), "tag": f"t{info['t']}", "done": bool(terminated)}

    def episode_fn(episode, env):
        return {"return": float(episode.columns["reward"].sum()), "horizon": env.unwrapped.horizon}

    env = RecordEpisodes(
        NestedEnv(4), tmp_path / "ds", step_fn, episode_fn, record_infos=True, metadata={"agent_id": "fixed"}
    )
    actions = [np.array([0.25 * k], np.float32) for k in range(1, 5)]
    expected = {"pos": [], "t": []}
    for seed in (5, 6):
        obs, _ = env.reset(seed=seed)
        expected["pos"].append(obs["pos"].copy())
        for a in actions:
            obs = env.step(a)[0]
            expected["pos"].append(obs["pos"].copy())
    env.close()
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == 2 and len(calls) == 8
    for k, ep in enumerate(ds):
        assert len(ep) == 5
        check_flags(ep, terminal=True)
        steps = ep.steps
        np.testing.assert_array_equal(steps["observation"]["pos"], np.stack(expected["pos"][5 * k : 5 * k + 5]))
        np.testing.assert_array_equal(steps["observation"]["inner"][0], np.arange(5) % 3)
        assert steps["observation"]["inner"][1].dtype == np.int16
        np.testing.assert_array_equal(steps["observation"]["inner"][1], np.repeat(np.arange(5), 3).reshape(5, 3))
        np.testing.assert_array_equal(steps["action"], np.stack(actions + [np.zeros(1, np.float32)]))
        np.testing.assert_array_equal(steps["reward"], [1.0, 2.0, 3.0, 4.0, 0.0])
        # step fields describe the env.step that produced step t's action; zeros on the final step
        np.testing.assert_array_equal(steps["pos_sum"], [*steps["observation"]["pos"][1:].sum(1), 0.0])
        assert steps["pos_sum"].dtype == np.float32
        assert list(steps["tag"]) == ["t1", "t2", "t3", "t4", ""]
        np.testing.assert_array_equal(steps["done"], [False, False, False, True, False])
        # infos are aligned with observations (step t holds the info returned with o_t)
        np.testing.assert_array_equal(steps["info"]["t"], np.arange(5))
        np.testing.assert_array_equal(steps["info"]["x"], steps["observation"]["pos"][:, 0].astype(np.float64))
        assert ep.metadata["return"] == 10.0 and ep.metadata["horizon"] == 4
        assert ep.metadata["agent_id"] == "fixed" and ep.metadata["seed"] == 5 + k and ep.metadata["env_id"] == ""


def test_step_fn_may_not_shadow_step_fields(tmp_path):
    env = RecordEpisodes(cartpole(), tmp_path / "ds", step_fn=lambda *a: {"reward": 1.0})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="'reward'"):
        env.step(0)


@pytest.mark.parametrize("rate", [0.0, 0.35, 1.0])
def test_sample_rate_keeps_the_episodes_of_the_seeded_draws(tmp_path, rate):
    def run(path):
        env = RecordEpisodes(cartpole(3), path, sample_rate=rate, seed=11)
        for k in range(16):
            env.reset(seed=k)
            while not any(env.step(k % 2)[2:4]):
                pass
        env.close()
        return [ep.metadata["seed"] for ep in open_dataset(path)] if env.writer.episodes_written else []

    kept = run(tmp_path / "a")
    draws = np.random.default_rng(11).random(16)
    assert kept == ([k for k in range(16) if draws[k] < rate] if rate < 1 else list(range(16)))
    assert run(tmp_path / "b") == kept
    assert 0 < len(kept) < 16 or rate in (0.0, 1.0)


def test_sample_rate_out_of_range(tmp_path):
    with pytest.raises(ValueError, match="sample_rate"):
        RecordEpisodes(cartpole(), tmp_path / "ds", sample_rate=1.5)


# ------------------------------------------------------------------ vector
@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_vector_episodes_match_sequential_replays(tmp_path, mode):
    n, seed = 3, 40
    venv = SyncVectorEnv([lambda: cartpole(8) for _ in range(n)], autoreset_mode=mode)
    env = RecordVectorEpisodes(venv, tmp_path / "ds")
    rng = np.random.default_rng(0)
    env.reset(seed=seed)
    reset_step = np.zeros(n, bool)  # NextStep: the sub-env resets at this step, its action is ignored
    acted = [[] for _ in range(n)]
    for _ in range(45):
        actions = rng.integers(0, 2, n)
        for i in np.flatnonzero(~reset_step):
            acted[i].append(actions[i])
        _, _, term, trunc, _ = env.step(actions)
        done = term | trunc
        if mode == AutoresetMode.NEXT_STEP:
            reset_step = done
        elif mode == AutoresetMode.DISABLED and done.any():
            env.reset(options={"reset_mask": done})
    env.close()
    ds = open_dataset(tmp_path / "ds")
    for i in range(n):
        eps = [ep for ep in ds if ep.metadata["env_index"] == i]
        assert [ep.metadata["seed"] for ep in eps] == [seed + i] + [-1] * (len(eps) - 1)
        recorded = np.concatenate([ep.columns["action"][:-1] for ep in eps])
        np.testing.assert_array_equal(recorded, acted[i])  # every executed action, no ignored one
        reference = cartpole(8)  # one env, as the sub-env: seeded once, then reset() continues its RNG
        outcomes = [check_against_replay(ep, reference, ep.metadata["seed"]) for ep in eps]
        assert all(len(ep) == 9 for ep, t in zip(eps[:-1], outcomes) if not t)
        assert len(eps) >= 3


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_vector_infos_and_step_fields_follow_each_sub_env(tmp_path, mode):
    """SameStep takes the final observation/info from info['final_obs'/'final_info']."""
    make = lambda: gymnasium.wrappers.TimeLimit(NestedEnv(horizon=6), 4)  # noqa: E731 - truncates after 4
    venv = SyncVectorEnv([make, make], autoreset_mode=mode)
    step_fn = lambda obs, a, r, term, trunc, info: {"t": np.int64(info["t"]), "obs_t": obs["inner"][0]}  # noqa: E731
    env = RecordVectorEpisodes(venv, tmp_path / "ds", step_fn=step_fn, record_infos=True)
    env.reset(seed=1)
    for _ in range(9):
        _, _, term, trunc, _ = env.step(np.full((2, 1), 0.5, np.float32))
        if mode == AutoresetMode.DISABLED and (term | trunc).any():
            env.reset(options={"reset_mask": term | trunc})
    env.close()
    eps = list(open_dataset(tmp_path / "ds"))
    # NextStep spends a step on each reset: 4 + reset + 4 actions; the others 4 + 4 + 1
    assert [len(ep) for ep in eps] == ([5] * 4 if mode == AutoresetMode.NEXT_STEP else [5] * 4 + [2] * 2)
    assert [ep.metadata["env_index"] for ep in eps] == [0, 1] * (len(eps) // 2)
    for ep in eps:
        n = len(ep)
        check_flags(ep, terminal=False)
        np.testing.assert_array_equal(ep.columns["info/t"], np.arange(n))  # info returned with o_t
        np.testing.assert_array_equal(ep.columns["observation/inner/0"], np.arange(n) % 3)
        np.testing.assert_array_equal(ep.columns["t"], [*range(1, n), 0])
        np.testing.assert_array_equal(ep.columns["obs_t"], [*(np.arange(1, n) % 3), 0])


def test_sub_info_honours_masks():
    info = {
        "a": np.array([1, 2]),
        "_a": np.array([True, False]),
        "d": {"b": np.array([3.0, 4.0]), "_b": np.array([False, True])},
        "_d": np.array([True, True]),
    }
    assert sub_info(info, 0) == {"a": 1, "d": {}}
    assert sub_info(info, 1) == {"d": {"b": 4.0}}


# ------------------------------------------------------------------ dm_env
class CountdownEnv:
    """A tiny dm_env: observation [t, 10 t]; reward = 2 * action + t; ends after ``horizon`` steps."""

    def __init__(self, horizon: int, truncate: bool):
        import dm_env

        self.dm_env, self.horizon, self.truncate, self.t = dm_env, horizon, truncate, 0

    def _obs(self):
        return np.array([self.t, 10 * self.t], np.int32)

    def reset(self):
        self.t = 0
        return self.dm_env.restart(self._obs())

    def step(self, action):
        if self.t >= self.horizon:  # dm_env: stepping after LAST starts a new episode
            return self.reset()
        self.t += 1
        reward = 2.0 * float(action) + self.t
        if self.t < self.horizon:
            return self.dm_env.transition(reward, self._obs(), discount=0.5)
        end = self.dm_env.truncation if self.truncate else self.dm_env.termination
        return end(reward, self._obs())

    def observation_spec(self):
        return self.dm_env.specs.Array((2,), np.int32)

    def action_spec(self):
        return self.dm_env.specs.DiscreteArray(5)

    def close(self):
        self.closed = True


@pytest.mark.parametrize("truncate", [False, True])
def test_dm_env_timesteps_are_realigned(tmp_path, truncate):
    import dm_env

    inner = CountdownEnv(3, truncate)
    step_fn = lambda ts, a: {"next_t": ts.observation[0]}  # noqa: E731 - ts is what action a produced
    env = RecordingEnvironment(inner, tmp_path / "ds", step_fn, metadata={"agent_id": "x"})
    assert isinstance(env, dm_env.Environment) and env.horizon == 3
    timesteps = [env.reset()]
    for a in (1, 2, 3, 4, 0, 2):  # 4: ignored (after LAST, it starts episode 2)
        timesteps.append(env.step(a))
    env.reset()  # mid-episode: episode 2 is truncated after 2 actions
    env.step(1)
    env.close()  # episode 3 is in progress: truncated after 1 action
    assert inner.closed
    eps = list(open_dataset(tmp_path / "ds"))
    assert len(eps) == 3 and [len(ep) for ep in eps] == [4, 3, 1 + 1]
    first, second = eps[0], eps[1]
    # step i: (o_i, a_i, r_{i+1}, d_{i+1}) from the TimeSteps; final step holds o_T with zeros
    np.testing.assert_array_equal(first.columns["observation"], np.stack([ts.observation for ts in timesteps[:4]]))
    np.testing.assert_array_equal(first.columns["action"], [1, 2, 3, 0])
    np.testing.assert_array_equal(first.columns["reward"], [ts.reward for ts in timesteps[1:4]] + [0.0])
    np.testing.assert_array_equal(first.columns["reward"], [2 + 1, 4 + 2, 6 + 3, 0])
    np.testing.assert_array_equal(first.columns["discount"], [0.5, 0.5, 1.0 if truncate else 0.0, 0.0])
    assert first.columns["discount"].dtype == np.float64
    np.testing.assert_array_equal(first.columns["next_t"], [1, 2, 3, 0])
    check_flags(first, terminal=not truncate)
    assert timesteps[4].first()
    np.testing.assert_array_equal(second.columns["observation"][:, 0], [0, 1, 2])
    np.testing.assert_array_equal(second.columns["action"], [0, 2, 0])
    check_flags(second, terminal=False)
    check_flags(eps[2], terminal=False)
    np.testing.assert_array_equal(eps[2].columns["reward"], [2 + 1, 0])
    assert all(ep.metadata["agent_id"] == "x" for ep in eps)
