"""Gaussian policy for continuous (``Box``) actions: torso, optional LSTM core, mean head, state-free log-std.

The policy is ``π(a|x) = N(a; μ(x), diag σ²)`` with ``μ`` a linear head on the
body's features and ``log σ`` one learned vector (clamped to ``[LOG_STD_MIN,
LOG_STD_MAX]``), as in PPO / SAC-style continuous-control baselines. Its first
output is ``[μ, log σ]`` concatenated (``[..., 2 D]``) so that the same
``step`` / ``unroll`` calls as :class:`~seedrl.models.ActorCritic` serve it; the
second output is a zero value (the policy has no critic). Previous action and
reward inputs are one-hot for discrete actions only, so they are refused here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from seedrl.models.body import RecurrentBody, State, build_torso

__all__ = ["GaussianPolicy", "LOG_STD_MAX", "LOG_STD_MIN", "split_gaussian"]

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def split_gaussian(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[..., 2 D]`` -> ``(μ [..., D], log σ [..., D])``."""
    mean, log_std = out.chunk(2, dim=-1)
    return mean, log_std


class GaussianPolicy(RecurrentBody):
    """``torso -> [LSTM] -> μ``, plus a learned ``log σ`` (see the module docstring)."""

    def __init__(self, torso: nn.Module, action_dim: int, lstm_size: int | None = None):
        super().__init__(torso, action_dim, lstm_size, use_prev_action_reward=False, reward_clip=None)
        self.action_dim = int(action_dim)
        self.mean = nn.Linear(self.body_dim, self.action_dim)
        self.log_std = nn.Parameter(torch.zeros(self.action_dim))
        nn.init.orthogonal_(self.mean.weight, gain=0.01)
        nn.init.zeros_(self.mean.bias)

    @classmethod
    def from_spaces(cls, observation_space, action_space, torso: str = "auto", lstm_size: int | None = None,
                    hidden: Sequence[int] = (64, 64), activation: str = "tanh") -> GaussianPolicy:
        """A policy for a Gymnasium ``Box`` observation space and a 1-D ``Box`` action space."""
        from gymnasium import spaces

        if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1:
            raise TypeError(f"GaussianPolicy.from_spaces: action space must be a 1-D Box, got {action_space}")
        net = build_torso(observation_space, torso, hidden, activation, "GaussianPolicy")
        return cls(net, int(np.prod(action_space.shape)), lstm_size)

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean(x)
        log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).expand_as(mean)
        return torch.cat([mean, log_std], dim=-1)

    def step(self, obs, state: State, first=None, prev_action=None, prev_reward=None):
        """One step for ``B`` rows: ``([μ, log σ] [B, 2 D], zeros [B], new_state)``."""
        x, state = self._body_step(obs, state, first, None, None)
        out = self._out(x)
        return out, out.new_zeros(out.shape[0]), state

    def unroll(self, obs, state0: State, first=None, prev_action=None, prev_reward=None):
        """``T`` steps for ``B`` rows: ``([μ, log σ] [T, B, 2 D], zeros [T, B], final_state)``."""
        steps, batch = obs.shape[:2]
        x, final = self._body_unroll(obs, state0, first, None, None)
        out = self._out(x).reshape(steps, batch, -1)
        return out, out.new_zeros(steps, batch), final

    def forward(self, *args, **kwargs):
        return self.unroll(*args, **kwargs)
