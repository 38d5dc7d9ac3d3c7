"""Q-network for R2D2: torso, LSTM core (or an MLP layer of the same width), plain or dueling head.

(Skeleton: the implementation follows.)
"""

from __future__ import annotations

import torch
from torch import nn

from seedrl.models.actor_critic import State

__all__ = ["QNetwork"]


class QNetwork(nn.Module):
    """Same call conventions as :class:`~seedrl.models.ActorCritic`, returning Q-values instead of (logits, value)."""

    @classmethod
    def from_spaces(cls, cfg, obs_space, act_space, *, dueling: bool, recurrent: bool) -> "QNetwork":
        raise NotImplementedError

    @property
    def is_recurrent(self) -> bool:
        raise NotImplementedError

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        raise NotImplementedError

    def step(self, obs, state, first, prev_action=None, prev_reward=None) -> tuple[torch.Tensor, State]:
        """``q [B, A]`` and the new state."""
        raise NotImplementedError

    def unroll(self, obs, state0, first, prev_action=None, prev_reward=None) -> tuple[torch.Tensor, State]:
        """``q [T, B, A]`` and the final state."""
        raise NotImplementedError
