"""Start-up checks of an :class:`~seedrl.envs.config.EnvConfig`: the id exists, the spaces fit the agent.

Both run while the config loads (before a run folder exists), and raise
:class:`~seedrl.errors.EnvironmentSpecError` naming ``env.id`` and its value.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from seedrl.errors import EnvironmentSpecError

if TYPE_CHECKING:
    from seedrl.envs.config import EnvConfig

__all__ = ["check_env_id", "check_discrete_actions"]

#: Gymnasium namespaces registered by importing a package
_NAMESPACE_PACKAGES = {"ALE": "ale_py"}


def check_env_id(env_id: str, key: str = "env.id") -> None:
    """Raise :class:`EnvironmentSpecError` naming ``key`` unless Gymnasium knows ``env_id`` (with Gymnasium's hint)."""
    import gymnasium as gym

    import seedrl.envs.toy  # noqa: F401  (registers seedrl/Counting-v0)

    namespace = env_id.split("/", 1)[0] if "/" in env_id else None
    package = _NAMESPACE_PACKAGES.get(namespace or "")
    if package is not None:
        try:
            gym.register_envs(importlib.import_module(package))
        except ImportError:
            raise EnvironmentSpecError(f"{key}={env_id!r}: the {namespace} environments need the "
                                       f"'{package}' package, which is not installed") from None
    try:
        gym.spec(env_id)
    except gym.error.Error as err:
        raise EnvironmentSpecError(f"{key}={env_id!r}: not a registered Gymnasium environment ({err})") from None


def check_discrete_actions(cfg: EnvConfig, agent: str) -> None:
    """Build one environment of ``cfg`` and raise unless its actions are ``Discrete(n)`` from 0
    and its observations a ``Box`` (what ``agent``'s actor-critic takes)."""
    from gymnasium import spaces

    from seedrl.envs.factory import make_env

    try:
        env = make_env(cfg)
    except EnvironmentSpecError:
        raise
    except Exception as err:
        raise EnvironmentSpecError(f"env.id={cfg.id!r}: cannot build the environment: {type(err).__name__}: "
                                   f"{err}") from err
    try:
        act, obs = env.action_space, env.observation_space
    finally:
        env.close()
    if not isinstance(act, spaces.Discrete) or int(act.start) != 0:
        kind = "continuous" if isinstance(act, spaces.Box) else "non-discrete"
        raise EnvironmentSpecError(f"env.id={cfg.id!r} has a {kind} action space {act}; {agent} needs discrete "
                                   "actions (Discrete(n) starting at 0)")
    if not isinstance(obs, spaces.Box):
        raise EnvironmentSpecError(f"env.id={cfg.id!r} has observation space {obs}; {agent} needs a Box "
                                   "(an array or an image)")
