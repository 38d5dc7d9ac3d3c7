"""``EnvpoolBatch``: EnvPool's C++ thread pool behind the :class:`~seedrl.envs.base.EnvBatch` interface.

EnvPool (gymnasium API, synchronous mode) auto-resets on the *next* step: at
the step where environment ``i`` ends, it returns the true last observation;
on the following ``step`` it ignores ``i``'s action, resets it and returns the
reset observation with reward 0 and ``elapsed_step == 0``.

This class turns that into same-step auto-reset. After each batched step, the
environments that just ended are stepped once more, on their own, with
``env.step(dummy_actions, env_id=ended)`` (EnvPool steps a subset by id): that
is exactly the reset EnvPool would have done on the next step, so each
environment's random stream is the one plain EnvPool would use. The
observation from the ending step goes to ``final_obs``; the reset observation
replaces it in ``obs``. An ending step therefore costs one extra, smaller
EnvPool call.

Atari specifics: rewards are EnvPool's unclipped rewards (``reward_clip`` is
forced off); ``info['terminated']`` (game over) marks the real end of a game,
so with ``episodic_life`` a lost life sets ``terminated`` but episode
statistics run for the whole game. EnvPool's own life-loss "reset" plays 1..
``noop_max`` no-op frames and pushes one frame onto the stack (our ale-py
backend plays none); both are valid, they are not bit-identical.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from seedrl.envs.base import EnvBatch, EpisodeStats, EpisodeTracker, StepResult, check_actions


def envpool_supports(task_id: str) -> bool:
    """Whether EnvPool is installed and registers ``task_id``."""
    try:
        import envpool
    except ImportError:
        return False
    return task_id in envpool.list_all_envs()


class EnvpoolBatch(EnvBatch):
    """``num_envs`` copies of EnvPool task ``task_id`` with same-step auto-reset.

    Args:
        task_id: an EnvPool task, e.g. ``"CartPole-v1"`` or ``"Pong-v5"``.
        num_envs: batch size (EnvPool runs in synchronous mode: ``batch_size == num_envs``).
        seed: EnvPool seeds environment ``j`` with ``seed + j``.
        num_threads: EnvPool worker threads; 0 lets EnvPool decide.
        **options: task options passed to ``envpool.make_gymnasium``
            (``max_episode_steps``, Atari's ``stack_num``, ``episodic_life``, ...).

    EnvPool cannot be re-seeded, so ``reset(seed)`` rebuilds the pool unless it
    is fresh from construction with that seed (an Atari pool takes ~0.2 s per
    environment to build). ``reset(None)`` on a used pool resets every
    environment in place, except with ``episodic_life``, where EnvPool would
    merely continue a game that still has lives, so it rebuilds the pool with a
    seed drawn deterministically from the previous one.
    """

    def __init__(self, task_id: str, num_envs: int, seed: int = 0, num_threads: int = 0, **options: Any) -> None:
        import envpool

        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self._envpool = envpool
        self.task_id = task_id
        self.num_envs = num_envs
        self._num_threads = num_threads
        self._options = dict(options)
        self._env = self._make(seed)
        self._seed = seed
        self._fresh = True
        self._started = False
        self._seed_rng = np.random.default_rng(seed)
        self._tracker = EpisodeTracker(num_envs)
        self._all_ids = np.arange(num_envs, dtype=np.int32)

    def _make(self, seed: int):
        with warnings.catch_warnings():  # EnvPool builds float64 Box bounds for float32 spaces
            warnings.filterwarnings("ignore", message=".*precision lowered by casting", category=UserWarning)
            env = self._envpool.make_gymnasium(
                self.task_id,
                num_envs=self.num_envs,
                batch_size=self.num_envs,
                num_threads=self._num_threads,
                seed=int(seed),
                **self._options,
            )
            self.observation_space = env.observation_space
            self.action_space = env.action_space
        return env

    def _rebuild(self, seed: int) -> None:
        self._env.close()
        self._env = self._make(seed)
        self._seed = seed
        self._fresh = True

    def _in_order(self, info: dict, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """``arrays`` reordered by ``info['env_id']`` (a no-op when already in order)."""
        ids = np.asarray(info["env_id"])
        if np.array_equal(ids, self._all_ids):
            return arrays
        order = np.argsort(ids)
        return tuple(a[order] for a in arrays)

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is None:
            if self._started and self._options.get("episodic_life"):
                self._rebuild(int(self._seed_rng.integers(2**31 - self.num_envs)))
        elif not (self._fresh and seed == self._seed):
            self._rebuild(seed)
            self._seed_rng = np.random.default_rng(seed)
        obs, info = self._env.reset()
        (obs,) = self._in_order(info, obs)
        self._tracker.clear()
        self._fresh = False
        self._started = True
        return np.array(obs)

    def step(self, actions: Any) -> StepResult:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = check_actions(actions, self.num_envs)
        obs, reward, terminated, truncated, info = self._env.step(actions)
        obs, reward, terminated, truncated = self._in_order(info, obs, reward, terminated, truncated)
        terminated = np.asarray(terminated, bool)
        game_over = None
        if "terminated" in info and "lives" in info:  # Atari: the game itself is over, not just a life
            (game_over,) = self._in_order(info, np.asarray(info["terminated"], bool))
            terminated = terminated | game_over
        truncated = np.asarray(truncated, bool) & ~terminated
        reward = np.asarray(reward, np.float32)
        self._tracker.add(reward)
        final_obs: dict[int, np.ndarray] = {}
        episodes: list[EpisodeStats] = []
        ended = np.flatnonzero(terminated | truncated)
        if len(ended):
            obs = np.array(obs)
            for i in ended:
                final_obs[int(i)] = obs[i].copy()
                if game_over is None or game_over[i] or truncated[i]:
                    episodes.append(self._tracker.finish(int(i)))
            dummy = np.zeros((len(ended), *actions.shape[1:]), actions.dtype)
            reset_obs, _, _, _, reset_info = self._env.step(dummy, ended.astype(np.int32))
            obs[np.asarray(reset_info["env_id"])] = reset_obs
        return StepResult(obs, reward, terminated, truncated, final_obs, episodes)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
