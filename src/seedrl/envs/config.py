"""``EnvConfig``: which environments an actor runs and how they are preprocessed.

Load it like every seedrl config (``seedrl.config.load_config``); the field
metadata gives the help text and the checked ranges and choices.
"""

from __future__ import annotations

import importlib.util

from dataclasses import dataclass, field
from typing import Literal

KINDS = ("gym", "atari")
BACKENDS = ("auto", "gymnasium", "envpool")


@dataclass
class EnvConfig:
    """Environment settings; the Atari-only fields are ignored for ``kind='gym'``."""

    kind: str = field(
        default="gym",
        metadata={"help": "'gym': any Gymnasium id; 'atari': an Atari game with DQN/IMPALA preprocessing",
                  "choices": list(KINDS)},
    )
    id: str = field(
        default="CartPole-v1",
        metadata={"help": "Gymnasium id (CartPole-v1, seedrl/Counting-v0) or Atari game (Pong, ALE/Pong-v5)"},
    )
    backend: str = field(
        default="auto",
        metadata={"help": "auto = envpool if installed and it supports the env, else gymnasium",
                  "choices": list(BACKENDS)},
    )
    num_envs: int | Literal["auto"] = field(default=16, metadata={
        "help": "environments per actor; auto = chosen by a training run at start (seedrl.runtime.layout)", "min": 1})
    seed: int = field(default=0, metadata={"help": "base seed: environment j of a batch gets seed + j", "min": 0})
    max_episode_steps: int | None = field(
        default=None,
        metadata={"help": "gym only: time limit in steps (truncation); null keeps the registered one", "min": 1},
    )
    envpool_threads: int = field(
        default=0, metadata={"help": "envpool worker threads per actor; 0 = min(num_envs, CPU count)", "min": 0}
    )
    frame_skip: int = field(default=4, metadata={"help": "atari: emulator frames per action", "min": 1})
    frame_stack: int = field(default=4, metadata={"help": "atari: frames stacked on the channel axis", "min": 1})
    noop_max: int = field(
        default=30,
        metadata={"help": "atari: up to this many no-op frames at reset (envpool plays at least 1)", "min": 0},
    )
    sticky_action_prob: float = field(
        default=0.25,
        metadata={"help": "atari: ALE repeat_action_probability (sticky actions)", "min": 0.0, "max": 1.0},
    )
    full_action_space: bool = field(default=False, metadata={"help": "atari: all 18 actions, not the minimal set"})
    episodic_life: bool = field(
        default=False,
        metadata={"help": "atari: a lost life is terminal for the learner; returns stay per full game"},
    )
    max_episode_frames: int = field(
        default=108_000,
        metadata={"help": "atari: time limit in emulator frames (agent steps x frame_skip); 0 = none", "min": 0},
    )
    resize: int = field(default=84, metadata={"help": "atari: square observation side in pixels", "min": 8,
                                              "max": 160})
    grayscale: bool = field(default=True, metadata={"help": "atari: greyscale frames (else RGB, 3 channels each)"})

    def validate(self) -> None:
        if not self.id:
            raise ValueError("id must not be empty")
        if self.kind == "gym":
            from seedrl.envs.checks import check_env_id

            check_env_id(self.id)
        if self.kind == "atari":
            if importlib.util.find_spec("ale_py") is not None:  # a learner-only host may lack it
                from seedrl.envs.atari import atari_game

                atari_game(self.id)  # raises ValueError for an unknown game
            if self.max_episode_frames and self.max_episode_frames < self.frame_skip:
                raise ValueError("max_episode_frames must be 0 or at least frame_skip")
