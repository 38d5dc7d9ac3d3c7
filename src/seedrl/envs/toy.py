"""A tiny deterministic environment for runtime tests: ``CountingEnv`` (``seedrl/Counting-v0``).

Its observation says exactly where it is, ``[tag, episode, step]`` (int64):

* ``tag``: the seed of the last seeded reset (``-1`` if never seeded), so a
  test can tell which environment of a batch an observation came from;
* ``episode``: episodes started since that seeded reset (0, 1, 2, ...);
* ``step``: steps taken in the current episode (0 at reset).

The reward is 1 when ``action == step % num_actions`` and 0 otherwise, so the
optimal policy (read off the observation) scores ``episode_length``. An
episode ends after ``episode_length`` steps, with ``terminated`` or, when
``truncate=True``, with ``truncated`` (a time limit, to test bootstrapping).
``step_delay`` seconds of sleep per step simulate a slow environment.
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np

COUNTING_ID = "seedrl/Counting-v0"


class CountingEnv(gym.Env):
    """Deterministic counter environment; see the module docstring."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self, episode_length: int = 5, num_actions: int = 2, truncate: bool = False, step_delay: float = 0.0
    ) -> None:
        if episode_length < 1 or num_actions < 1 or step_delay < 0:
            raise ValueError("episode_length and num_actions must be >= 1, step_delay >= 0")
        self.episode_length = episode_length
        self.num_actions = num_actions
        self.truncate = truncate
        self.step_delay = step_delay
        big = np.iinfo(np.int64).max
        self.observation_space = gym.spaces.Box(-1, big, (3,), np.int64)
        self.action_space = gym.spaces.Discrete(num_actions)
        self._tag, self._episode, self._step = -1, -1, 0

    def _obs(self) -> np.ndarray:
        return np.array([self._tag, self._episode, self._step], np.int64)

    @staticmethod
    def optimal_action(obs: np.ndarray, num_actions: int = 2) -> int:
        """The rewarded action for observation ``obs``."""
        return int(obs[..., 2] % num_actions)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._tag, self._episode = int(seed), -1
        self._episode += 1
        self._step = 0
        return self._obs(), {}

    def step(self, action: int):
        if self.step_delay:
            time.sleep(self.step_delay)
        reward = 1.0 if int(action) == self._step % self.num_actions else 0.0
        self._step += 1
        ended = self._step >= self.episode_length
        terminated = ended and not self.truncate
        truncated = ended and self.truncate
        return self._obs(), reward, terminated, truncated, {}


if COUNTING_ID not in gym.registry:
    gym.register(COUNTING_ID, entry_point=CountingEnv)
