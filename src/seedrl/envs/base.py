"""The batched environment interface that actors step.

An actor owns one :class:`EnvBatch` of ``N`` environments and holds no
network: it sends the batch's observations to central inference, gets ``N``
actions back and calls :meth:`EnvBatch.step`.

Auto-reset happens in the *same* step. When environment ``i`` ends an episode
at a step (``terminated[i] or truncated[i]``):

* ``result.obs[i]`` is already the first observation of its next episode, so
  the next action sent for ``i`` acts in the new episode;
* ``result.final_obs[i]`` is the true last observation of the finished one,
  which a learner needs to bootstrap a truncated episode (a terminal cuts the
  return, a truncation bootstraps from ``V(final_obs)``);
* ``result.reward[i]`` is the reward of the last transition of the finished
  episode.

``terminated`` and ``truncated`` are never both set: a step that is both a
terminal and a time limit counts as terminal.

Episode statistics (:class:`EpisodeStats` in ``result.episodes``) are the raw,
unclipped score of the *whole game*: with Atari's episodic-life option a lost
life sets ``terminated`` for the learner, but the game goes on and only its
true end (game over or time limit) reports an episode.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

#: ``info`` key a single environment sets to ``False`` when it ends an episode for
#: the learner (terminated on a lost life) although the real game goes on.
REAL_DONE_KEY = "real_done"
#: ``reset(options={CONTINUE_GAME_OPTION: True})`` asks an environment that
#: reported ``real_done=False`` to continue the current game rather than start anew.
CONTINUE_GAME_OPTION = "continue_game"


class EpisodeStats(NamedTuple):
    """One finished game: which environment, its raw return and its length in agent steps."""

    env_index: int
    episode_return: float
    length: int


@dataclasses.dataclass(slots=True)
class StepResult:
    """What :meth:`EnvBatch.step` returns for a batch of ``N`` environments.

    Attributes:
        obs: ``[N, *obs_shape]``; for an environment whose episode ended at this
            step, the first observation of its next episode.
        reward: ``[N]`` float32, raw (unclipped) rewards.
        terminated: ``[N]`` bool, the episode reached a terminal state (or, with
            episodic life, a life was lost).
        truncated: ``[N]`` bool, the episode was cut by a time limit (never set
            together with ``terminated``).
        final_obs: ``{i: last observation}`` for each ``i`` whose episode ended.
        episodes: full games that ended at this step, as
            ``(env_index, episode_return, length)`` tuples.
    """

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: dict[int, np.ndarray]
    episodes: list[EpisodeStats]

    @property
    def done(self) -> np.ndarray:
        """``[N]`` bool: the episode ended (terminated or truncated) at this step."""
        return self.terminated | self.truncated


class EnvBatch(abc.ABC):
    """``num_envs`` environments stepped together, with same-step auto-reset.

    Subclasses set ``num_envs``, ``observation_space`` and ``action_space``
    (the spaces of a *single* environment) and implement :meth:`reset`,
    :meth:`step` and :meth:`close`. Environment ``j`` of a batch reset with seed
    ``s`` is seeded ``s + j``.
    """

    num_envs: int
    observation_space: gym.Space
    action_space: gym.Space

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start a new episode in every environment and return ``obs [N, ...]``.

        ``seed`` seeds environment ``j`` with ``seed + j``. ``None`` on the first
        reset uses the seed the batch was built with; ``None`` later continues
        each environment's random stream. Episode statistics restart from zero.
        """

    @abc.abstractmethod
    def step(self, actions: Any) -> StepResult:
        """Apply ``actions [N]`` (one per environment) and return a :class:`StepResult`."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the environments; the batch is unusable afterwards."""

    def __enter__(self) -> EnvBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_envs={self.num_envs}, obs={self.observation_space})"


class EpisodeTracker:
    """Running raw return and length of the current game of each environment."""

    def __init__(self, num_envs: int) -> None:
        self.returns = np.zeros(num_envs, np.float64)
        self.lengths = np.zeros(num_envs, np.int64)

    def clear(self) -> None:
        self.returns[:] = 0.0
        self.lengths[:] = 0

    def add(self, rewards: np.ndarray) -> None:
        """Count one step with ``rewards [N]`` for every environment."""
        self.returns += rewards
        self.lengths += 1

    def finish(self, i: int) -> EpisodeStats:
        """Close environment ``i``'s game: return its stats and start counting anew."""
        stats = EpisodeStats(int(i), float(self.returns[i]), int(self.lengths[i]))
        self.returns[i] = 0.0
        self.lengths[i] = 0
        return stats


def check_actions(actions: Any, num_envs: int) -> np.ndarray:
    """``actions`` as an array with a leading dimension of ``num_envs`` (else ValueError)."""
    actions = np.asarray(actions)
    if actions.ndim == 0 or actions.shape[0] != num_envs:
        raise ValueError(f"expected {num_envs} actions (one per environment), got shape {actions.shape}")
    return actions
