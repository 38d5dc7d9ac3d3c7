"""The environment layer actors use: batched environments with same-step auto-reset.

* :class:`EnvBatch` / :class:`StepResult` (``seedrl.envs.base``): the interface.
* :class:`GymnasiumBatch`: Gymnasium environments stepped in a Python loop.
* :class:`EnvpoolBatch`: EnvPool, with its next-step reset turned into same-step reset.
* :class:`AtariEnv` (``seedrl.envs.atari``): DQN/IMPALA Atari preprocessing on ale-py.
* :class:`CountingEnv` (``seedrl/Counting-v0``): a deterministic toy for tests.
* ``seedrl/MemoryCue-v0`` (``seedrl.envs.memory_cue``): remember a cue across a corridor (R2D2's memory task).
* ``seedrl/PixelCue-v0`` (``seedrl.envs.pixel_cue``): a pixel toy behind the real Atari preprocessing.
* :class:`EnvConfig` and :func:`make_env_batch`: build an actor's batch from config.
"""

from seedrl.envs.base import (
    CONTINUE_GAME_OPTION,
    REAL_DONE_KEY,
    EnvBatch,
    EpisodeStats,
    StepResult,
)
from seedrl.envs.config import EnvConfig
from seedrl.envs.envpool_batch import EnvpoolBatch, envpool_supports
from seedrl.envs.factory import envpool_options, make_env, make_env_batch, resolve_backend
from seedrl.envs.gymnasium_batch import GymnasiumBatch
from seedrl.envs.memory_cue import MEMORY_CUE_ID
from seedrl.envs.pixel_cue import PIXEL_CUE_ID
from seedrl.envs.toy import COUNTING_ID, CountingEnv


def __getattr__(name: str):
    if name == "AtariEnv":  # imported lazily: ale-py is an optional dependency
        from seedrl.envs.atari import AtariEnv

        return AtariEnv
    raise AttributeError(f"module 'seedrl.envs' has no attribute {name!r}")


__all__ = [
    "AtariEnv",
    "CONTINUE_GAME_OPTION",
    "COUNTING_ID",
    "CountingEnv",
    "EnvBatch",
    "EnvConfig",
    "EnvpoolBatch",
    "EpisodeStats",
    "GymnasiumBatch",
    "MEMORY_CUE_ID",
    "PIXEL_CUE_ID",
    "REAL_DONE_KEY",
    "StepResult",
    "envpool_options",
    "envpool_supports",
    "make_env",
    "make_env_batch",
    "resolve_backend",
]
