"""The environment a person plays: built from an env id or a run config, with a frame to show.

``ENV_OR_CONFIG`` is a YAML run config (its ``env:`` section is used, so a
person plays exactly what an agent trains on: Atari with its preprocessing,
the recorded observations being the agent's) or an environment id: a
registered Gymnasium id (``CartPole-v1``, ``ALE/Pong-v5``) or an Atari game
name (``Pong``: ``kind: atari`` with its default preprocessing).

Frames shown are ``env.render()`` in ``rgb_array`` mode for Gymnasium
environments, and the emulator's native 210x160 RGB screen for ``kind: atari``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from seedrl.envs.config import EnvConfig
from seedrl.errors import EnvironmentSpecError


@dataclass
class PlayEnv:
    """An environment, how to draw it, and what its action ids mean (None if it does not say)."""

    env: gym.Env
    config: EnvConfig
    frame: Callable[[], np.ndarray]
    meanings: list[str] | None


def env_config(env_or_config: str) -> EnvConfig:
    """The :class:`EnvConfig` of a YAML config's ``env:`` section, or of an env id (see the module doc)."""
    from seedrl.config.loader import ConfigError, load_config, read_yaml_file

    if env_or_config.endswith((".yaml", ".yml")) or Path(env_or_config).is_file():
        data = read_yaml_file(env_or_config) or {}
        section = data.get("env") if isinstance(data, dict) else None
        if not isinstance(section, dict):
            raise EnvironmentSpecError(f"ENV_OR_CONFIG: {env_or_config!r} has no 'env:' section")
        try:
            return load_config(EnvConfig, {**section, "num_envs": 1})
        except ConfigError as err:
            raise type(err)(f"{env_or_config}: env.{err}", err.path) from None
    from seedrl.envs.checks import check_env_id

    try:
        check_env_id(env_or_config, key="ENV_OR_CONFIG")
        return EnvConfig(kind="gym", id=env_or_config, num_envs=1)
    except EnvironmentSpecError as gym_err:
        try:
            from seedrl.envs.atari import atari_game

            atari_game(env_or_config)
        except (ImportError, ValueError):
            raise gym_err from None
        return EnvConfig(kind="atari", id=env_or_config, num_envs=1)


def make_play_env(cfg: EnvConfig) -> PlayEnv:
    """Build ``cfg``'s environment with a frame source; :class:`EnvironmentSpecError` if it cannot be drawn."""
    if cfg.kind == "atari":
        from seedrl.envs.factory import make_env

        env = make_env(cfg)
        ale = env.unwrapped.ale
        return PlayEnv(env, cfg, ale.getScreenRGB, list(env.unwrapped.get_action_meanings()))
    # rgb_array rendering never opens a window: no display needed (and no SDL complaint about one), no banner
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    kwargs: dict[str, Any] = {}
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    modes = gym.spec(cfg.id).kwargs.get("render_modes") or _render_modes(cfg.id)
    if "rgb_array" not in modes:
        raise EnvironmentSpecError(f"ENV_OR_CONFIG: {cfg.id!r} has no 'rgb_array' rendering (render modes: "
                                   f"{list(modes) or 'none'}), so it cannot be shown in the page")
    try:
        env = gym.make(cfg.id, render_mode="rgb_array", **kwargs)
    except Exception as err:  # gymnasium and the env's own constructor raise many kinds
        raise EnvironmentSpecError(f"ENV_OR_CONFIG: {cfg.id!r} cannot be built: {type(err).__name__}: {err}") from err
    try:  # draw once now: a missing renderer (pygame) is an error before the page opens, not a broken page
        env.reset(seed=cfg.seed)
        _rgb(env.render(), cfg.id)
    except EnvironmentSpecError:
        env.close()
        raise
    except Exception as err:
        env.close()
        raise EnvironmentSpecError(f"ENV_OR_CONFIG: {cfg.id!r} cannot draw its frames: {type(err).__name__}: {err}"
                                   ) from err
    meanings = getattr(env.unwrapped, "get_action_meanings", None)
    return PlayEnv(env, cfg, lambda: _rgb(env.render(), cfg.id), list(meanings()) if meanings else None)


def _render_modes(env_id: str) -> list[str]:
    """The ``render_modes`` an environment class declares in its metadata."""
    entry = gym.spec(env_id).entry_point
    cls = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
    return list(getattr(cls, "metadata", {}).get("render_modes", []))


def _rgb(frame: Any, env_id: str) -> np.ndarray:
    a = np.asarray(frame)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise EnvironmentSpecError(f"ENV_OR_CONFIG: {env_id!r} rendered {a.dtype} {a.shape}, not an RGB frame")
    return a
