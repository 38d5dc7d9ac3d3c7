"""``MemoryCue``: a memory-length task a feed-forward Q-network cannot solve (``seedrl/MemoryCue-v0``).

An episode is ``length + 1`` steps. Step 0 shows a cue, left or right, drawn
uniformly: the observation is ``[1, 0, 0]`` (left) or ``[0, 1, 0]`` (right).
The next ``length - 1`` observations are a blank corridor ``[0, 0, 0]``; the
last is the junction ``[0, 0, 1]``. Actions in the cue and corridor steps do
nothing and pay 0. The action taken at the junction ends the episode
(``terminated``) and pays ``+1`` if it names the cue's side (0 = left,
1 = right) and ``-1`` otherwise.

The junction looks the same whichever cue was shown, so any policy that
sees only the current observation scores 0 on average (a random one too);
remembering the cue for ``length`` steps scores 1. (A network fed its
previous action could carry the cue in its actions; the memory configs
leave ``model.use_prev_action_reward`` off.)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

MEMORY_CUE_ID = "seedrl/MemoryCue-v0"
LEFT, RIGHT = 0, 1


class MemoryCueEnv(gym.Env):
    """See the module docstring; ``length`` >= 1 steps between the cue and the junction."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, length: int = 5) -> None:
        if length < 1:
            raise ValueError(f"MemoryCueEnv: length must be >= 1, got {length}")
        self.length = length
        self.observation_space = gym.spaces.Box(0.0, 1.0, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._cue = LEFT
        self._t = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(3, np.float32)
        if self._t == 0:
            obs[self._cue] = 1.0
        elif self._t == self.length:
            obs[2] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._cue = int(self.np_random.integers(2))
        self._t = 0
        return self._obs(), {}

    def step(self, action: int):
        if self._t < self.length:
            self._t += 1
            return self._obs(), 0.0, False, False, {}
        reward = 1.0 if int(action) == self._cue else -1.0
        return self._obs(), reward, True, False, {}


if MEMORY_CUE_ID not in gym.registry:
    gym.register(MEMORY_CUE_ID, entry_point=MemoryCueEnv)
