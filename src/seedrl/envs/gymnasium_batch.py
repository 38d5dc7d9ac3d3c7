"""``GymnasiumBatch``: a list of Gymnasium environments stepped in a plain Python loop.

The actor process is already the unit of parallelism, so the batch steps its
environments one after another in-process (no subprocesses, no
``AsyncVectorEnv``). Auto-reset happens in the same step as the end of an
episode; see :mod:`seedrl.envs.base` for the exact contract.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from seedrl.envs.base import (
    CONTINUE_GAME_OPTION,
    REAL_DONE_KEY,
    EnvBatch,
    EpisodeStats,
    EpisodeTracker,
    StepResult,
    check_actions,
)


class GymnasiumBatch(EnvBatch):
    """Steps ``len(env_fns)`` Gymnasium environments sequentially, auto-resetting in the same step.

    Args:
        env_fns: one constructor per environment; all must build environments
            with the same observation and action spaces.
        seed: the seed used by the first ``reset()`` called without one
            (environment ``j`` gets ``seed + j``); ``None`` leaves them unseeded.

    An environment whose step returns ``info[REAL_DONE_KEY] = False`` (an Atari
    life lost with episodic life) is reset with
    ``options={CONTINUE_GAME_OPTION: True}`` so its game continues, and its
    episode statistics keep accumulating until the real end of the game.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], seed: int | None = None) -> None:
        if not env_fns:
            raise ValueError("GymnasiumBatch needs at least one environment")
        self.envs: list[gym.Env] = []
        try:
            for fn in env_fns:
                self.envs.append(fn())
        except BaseException:
            self.close()
            raise
        self.num_envs = len(self.envs)
        self.observation_space = self.envs[0].observation_space
        self.action_space = self.envs[0].action_space
        for j, env in enumerate(self.envs[1:], start=1):
            if env.observation_space != self.observation_space or env.action_space != self.action_space:
                self.close()
                raise ValueError(f"environment {j} has different spaces from environment 0")
        shape = self.observation_space.shape
        if shape is None:
            self.close()
            raise TypeError(f"GymnasiumBatch needs array observations, got {self.observation_space}")
        self._obs_shape = (self.num_envs, *shape)
        self._obs_dtype = self.observation_space.dtype
        self._discrete = isinstance(self.action_space, gym.spaces.Discrete)
        self._seed = seed
        self._started = False
        self._tracker = EpisodeTracker(self.num_envs)

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is None and not self._started:
            seed = self._seed
        obs = np.empty(self._obs_shape, self._obs_dtype)
        for j, env in enumerate(self.envs):
            obs[j], _ = env.reset(seed=None if seed is None else seed + j)
        self._tracker.clear()
        self._started = True
        return obs

    def step(self, actions: Any) -> StepResult:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = check_actions(actions, self.num_envs)
        n = self.num_envs
        obs = np.empty(self._obs_shape, self._obs_dtype)
        reward = np.empty(n, np.float32)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        final_obs: dict[int, np.ndarray] = {}
        episodes: list[EpisodeStats] = []
        returns, lengths = self._tracker.returns, self._tracker.lengths
        for i, env in enumerate(self.envs):
            action = int(actions[i]) if self._discrete else actions[i]
            o, r, term, trunc, info = env.step(action)
            reward[i] = r
            returns[i] += r
            lengths[i] += 1
            if term or trunc:
                terminated[i] = term
                truncated[i] = trunc and not term
                final_obs[i] = np.array(o, dtype=self._obs_dtype)
                if info.get(REAL_DONE_KEY, True):
                    episodes.append(self._tracker.finish(i))
                    o, _ = env.reset()
                else:
                    o, _ = env.reset(options={CONTINUE_GAME_OPTION: True})
            obs[i] = o
        return StepResult(obs, reward, terminated, truncated, final_obs, episodes)

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []
