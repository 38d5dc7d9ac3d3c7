"""Recording the episodes an actor plays, as RLDS episodes (off by default).

Each actor process records into its own segment of one dataset (the store
takes concurrent writers without a lock). Episodes are sampled at
``rate``, decided when they start, so long runs can keep a fraction.
"""

from __future__ import annotations

import numpy as np

from seedrl.data import DatasetWriter


class BatchRecorder:
    """Records a batch of auto-resetting environments (the actors' :class:`EnvBatch`)."""

    def __init__(self, path: str, num_envs: int, rate: float, *, seed: int, actor_id: int):
        self.writer = DatasetWriter(path)
        self.rate = rate
        self.rng = np.random.default_rng([seed, actor_id, 0x5EED])
        self.actor_id = actor_id
        self.episodes: list = [None] * num_envs
        self.last_obs: list = [None] * num_envs
        self.count = 0

    def _begin(self, i: int, obs) -> None:
        keep = self.rng.random() < self.rate
        self.episodes[i] = self.writer.episode({"agent_id": f"actor-{self.actor_id}", "env_index": i}) if keep else None
        self.last_obs[i] = np.array(obs)

    def start(self, obs) -> None:
        for i in range(len(self.episodes)):
            self._begin(i, obs[i])

    def step(self, actions, result) -> None:
        for i, ep in enumerate(self.episodes):
            ended = bool(result.terminated[i] or result.truncated[i])
            if ep is not None:
                action = np.asarray(actions[i])
                reward = np.float32(result.reward[i])
                ep.append(
                    {
                        "observation": self.last_obs[i],
                        "action": action,
                        "reward": reward,
                        "discount": np.float32(0.0 if result.terminated[i] else 1.0),
                        "is_first": len(ep) == 0,
                        "is_last": False,
                        "is_terminal": False,
                    }
                )
                if ended:
                    ep.append(
                        {
                            "observation": np.asarray(result.final_obs[i]),
                            "action": np.zeros_like(action),
                            "reward": np.float32(0.0),
                            "discount": np.float32(0.0),
                            "is_first": False,
                            "is_last": True,
                            "is_terminal": bool(result.terminated[i]),
                        }
                    )
                    self.count += 1
            if ended:
                self._begin(i, result.obs[i])
            elif ep is not None:
                self.last_obs[i] = np.array(result.obs[i])

    def close(self) -> None:
        """Unfinished episodes are dropped; finished ones are already committed."""
        self.writer.close()
