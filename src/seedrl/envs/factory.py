"""``make_env_batch``: build the :class:`~seedrl.envs.base.EnvBatch` an :class:`EnvConfig` describes."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym

from seedrl.envs import memory_cue, pixel_cue, toy  # noqa: F401  (register seedrl/MemoryCue-v0, seedrl/PixelCue-v0, seedrl/Counting-v0)
from seedrl.envs.base import EnvBatch
from seedrl.envs.config import EnvConfig
from seedrl.envs.envpool_batch import EnvpoolBatch, envpool_supports
from seedrl.envs.gymnasium_batch import GymnasiumBatch
from seedrl.errors import EnvironmentSpecError

_NO_LIMIT = 2**30


def envpool_task(cfg: EnvConfig) -> str:
    """The EnvPool task id for ``cfg`` (``"Pong"`` -> ``"Pong-v5"``; gym ids unchanged)."""
    if cfg.kind == "atari":
        from seedrl.envs.atari import envpool_task_id

        return envpool_task_id(cfg.id)
    return cfg.id


def resolve_backend(cfg: EnvConfig) -> str:
    """``'gymnasium'`` or ``'envpool'``: ``cfg.backend``, with ``'auto'`` resolved.

    ``auto`` picks EnvPool when it is installed and registers the task.
    Raises ValueError when ``backend='envpool'`` cannot serve the task.
    """
    if cfg.backend == "gymnasium":
        return "gymnasium"
    supported = envpool_supports(envpool_task(cfg))
    if cfg.backend == "envpool" and not supported:
        raise EnvironmentSpecError(f"envpool is not installed or does not support {cfg.id!r} (task {envpool_task(cfg)!r})")
    return "envpool" if supported else "gymnasium"


def make_env(cfg: EnvConfig) -> gym.Env:
    """One Gymnasium environment as ``cfg`` describes it (unseeded; the batch seeds it on reset)."""
    if cfg.kind == "atari":
        from seedrl.envs.atari import AtariEnv

        return AtariEnv(
            cfg.id,
            frame_skip=cfg.frame_skip,
            frame_stack=cfg.frame_stack,
            noop_max=cfg.noop_max,
            sticky_action_prob=cfg.sticky_action_prob,
            full_action_space=cfg.full_action_space,
            episodic_life=cfg.episodic_life,
            max_episode_frames=cfg.max_episode_frames or None,
            resize=cfg.resize,
            grayscale=cfg.grayscale,
        )
    kwargs: dict[str, Any] = {}
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    return gym.make(cfg.id, **kwargs)


def envpool_options(cfg: EnvConfig) -> dict[str, Any]:
    """``envpool.make_gymnasium`` options giving the same preprocessing as :func:`make_env`."""
    if cfg.kind != "atari":
        return {} if cfg.max_episode_steps is None else {"max_episode_steps": cfg.max_episode_steps}
    frames = cfg.max_episode_frames
    return {
        "stack_num": cfg.frame_stack,
        "frame_skip": cfg.frame_skip,
        "noop_max": max(1, cfg.noop_max),  # EnvPool always plays at least one no-op
        "repeat_action_probability": cfg.sticky_action_prob,
        "full_action_space": cfg.full_action_space,
        "episodic_life": cfg.episodic_life,
        "reward_clip": False,
        "use_fire_reset": False,
        "img_height": cfg.resize,
        "img_width": cfg.resize,
        "gray_scale": cfg.grayscale,
        "use_inter_area_resize": True,
        "max_episode_steps": frames // cfg.frame_skip if frames else _NO_LIMIT,
    }


def make_env_batch(cfg: EnvConfig, num_envs: int | None = None, seed: int | None = None) -> EnvBatch:
    """The batch of ``num_envs`` (default ``cfg.num_envs``) environments an actor steps.

    Environment ``j`` is seeded ``seed + j`` (default ``cfg.seed``) by the first
    ``reset()``. The batch is not reset yet.
    """
    n = cfg.num_envs if num_envs is None else num_envs
    base_seed = cfg.seed if seed is None else seed
    if isinstance(n, str):
        raise ValueError(f"env.num_envs = {n!r} is chosen by a training run at start; give a number here")
    if n < 1:
        raise ValueError(f"num_envs must be >= 1, got {n}")
    if resolve_backend(cfg) == "envpool":
        threads = cfg.envpool_threads or min(n, os.cpu_count() or 1)
        return EnvpoolBatch(envpool_task(cfg), n, seed=base_seed, num_threads=threads, **envpool_options(cfg))
    return GymnasiumBatch([lambda: make_env(cfg)] * n, seed=base_seed)
