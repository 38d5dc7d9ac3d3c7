"""R2D2: recurrent Q-learning from prioritized sequence replay (Kapturowski et al. 2019), as in SEED RL.

(Skeleton: the math and the implementation follow.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from seedrl.runtime.unrolls import Unroll

__all__ = ["R2D2Config", "R2D2Step", "actor_epsilons", "epsilon_greedy", "r2d2_loss"]


@dataclass
class R2D2Config:
    """R2D2 hyper-parameters (the ``agent:`` section of ``algo: r2d2``; SEED RL's Atari defaults)."""

    burn_in: int = field(default=40, metadata={"help": "entries that only warm up the recurrent state (no gradient)", "min": 0})
    n_step: int = field(default=5, metadata={"help": "n of the n-step double-Q targets", "min": 1})
    discount: float = field(default=0.997, metadata={"help": "γ", "min": 0.0, "max": 1.0})
    target_update_period: int = field(default=2500, metadata={"help": "learner updates between target-network syncs", "min": 1})
    priority_eta: float = field(default=0.9, metadata={"help": "η of the sequence priority η·max|TD| + (1−η)·mean|TD|", "min": 0.0, "max": 1.0})
    value_rescaling: bool = field(default=True, metadata={"help": "learn h(Q) with h(x) = sign(x)(√(|x|+1) − 1) + εx"})
    rescaling_epsilon: float = field(default=1e-3, metadata={"help": "ε of the value rescaling h", "min": 0.0})
    dueling: bool = field(default=True, metadata={"help": "dueling head Q = V + A − mean_a A"})
    recurrent: bool = field(default=True, metadata={"help": "LSTM core; false: an MLP layer of the same width, no state"})
    epsilon_base: float = field(default=0.4, metadata={"help": "ε_i = base^(1 + alpha·i/(N−1)) for actor i of N", "min": 0.0, "max": 1.0})
    epsilon_alpha: float = field(default=7.0, metadata={"help": "alpha of the per-actor ε schedule", "min": 0.0})
    eval_epsilon: float = field(default=1e-3, metadata={"help": "ε of evaluation episodes", "min": 0.0, "max": 1.0})
    replay_capacity: int = field(default=100_000, metadata={"help": "sequences held by the replay (FIFO)", "min": 1})
    replay_alpha: float = field(default=0.9, metadata={"help": "priority exponent: P(i) ∝ p_i^α", "min": 0.0})
    replay_beta: float = field(default=0.6, metadata={"help": "importance-weight exponent ((1/N)/P(i))^β", "min": 0.0, "max": 1.0})
    min_replay: int = field(default=5_000, metadata={"help": "sequences stored before learning starts", "min": 1})
    replay_ratio: float = field(default=1.0, metadata={"help": "learner sequences sampled per sequence inserted", "min_exclusive": 0.0})

    def validate(self) -> None:
        """Raise :class:`~seedrl.config.ConfigError` naming ``agent.<field>`` and the value."""
        raise NotImplementedError


def actor_epsilons(num: int, base: float = 0.4, alpha: float = 7.0) -> np.ndarray:
    """Per-actor exploration ``ε_i = base^(1 + alpha·i/(num−1))``, ``i < num``; ``num == 1`` gives ``[base]``."""
    raise NotImplementedError


def epsilon_greedy(q: torch.Tensor, epsilon: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """ε-greedy actions of ``q [B, A]`` with per-row ``epsilon [B]``: int64 ``[B]``."""
    raise NotImplementedError


def r2d2_loss(online, target, batch: Unroll, weights: torch.Tensor, cfg: R2D2Config) -> tuple[torch.Tensor, np.ndarray, dict[str, float]]:
    """``(loss, new priorities [B], logs)`` of one replay batch of ``burn_in + L + 1`` entries."""
    raise NotImplementedError


class R2D2Step:
    """The learner-step object the runtime calls: loss, target-network syncs, insertion priorities."""

    uses_replay: ClassVar[bool] = True

    def __init__(self, online, cfg: R2D2Config):
        raise NotImplementedError

    def loss(self, batch: Unroll, weights: torch.Tensor) -> tuple[torch.Tensor, np.ndarray, dict[str, float]]:
        raise NotImplementedError

    def after_update(self, updates: int) -> None:
        """Copy the online weights into the target net every ``target_update_period`` updates."""
        raise NotImplementedError

    @torch.no_grad()
    def priorities(self, batch: Unroll) -> np.ndarray:
        """Insertion priorities ``[B]`` of fresh sequences."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, sd: dict) -> None:
        raise NotImplementedError
