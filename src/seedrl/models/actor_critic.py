"""Actor-critic network: torso, optional LSTM core, policy and value heads.

Two entry points share the same weights and the same arithmetic:

* :meth:`ActorCritic.step` -- one step for a batch of ``B`` environments, the
  central inference call;
* :meth:`ActorCritic.unroll` -- ``T`` steps for ``B`` sequences, the learner
  call: the torso runs once on all ``T*B`` frames, the LSTM input projection is
  one matrix product, and only the recurrence loops over time.

``first[t, b]`` marks the first step of an episode: the recurrent state of that
row is set to zeros *before* the step, and the previous action and reward (which
belong to the previous episode) are treated as zeros too. The torso, the
previous action/reward inputs and the LSTM are :class:`~seedrl.models.body.RecurrentBody`,
shared with the R2D2 Q-network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seedrl.models.body import TORSOS, RecurrentBody, State, build_torso, discrete_actions

__all__ = ["ActorCritic", "State", "TORSOS"]


class ActorCritic(RecurrentBody):
    """``torso -> [prev action one-hot, clipped prev reward] -> [LSTM] -> (policy logits, value)``.

    Args:
        torso: module mapping ``[N, *obs_shape]`` to ``[N, torso.output_dim]``.
        num_actions: size of the discrete action set.
        lstm_size: LSTM width, or ``None`` for a feed-forward model.
        use_prev_action_reward: concatenate the one-hot previous action and the
            clipped previous reward to the torso features, as IMPALA does.
        reward_clip: previous rewards are clipped to ``[-reward_clip, reward_clip]``
            (``None``: not clipped).
    """

    def __init__(
        self,
        torso: nn.Module,
        num_actions: int,
        lstm_size: int | None = None,
        use_prev_action_reward: bool = False,
        reward_clip: float | None = 1.0,
    ) -> None:
        super().__init__(torso, num_actions, lstm_size, use_prev_action_reward, reward_clip)
        self.policy = nn.Linear(self.body_dim, self.num_actions)
        self.value = nn.Linear(self.body_dim, 1)
        nn.init.orthogonal_(self.policy.weight, gain=0.01)  # near-uniform initial policy
        nn.init.zeros_(self.policy.bias)
        nn.init.orthogonal_(self.value.weight, gain=1.0)
        nn.init.zeros_(self.value.bias)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_spaces(
        cls,
        observation_space,
        action_space,
        torso: str = "auto",
        lstm_size: int | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        use_prev_action_reward: bool = False,
        reward_clip: float | None = 1.0,
    ) -> ActorCritic:
        """Build a model for Gymnasium spaces.

        ``action_space`` must be ``Discrete(n)`` with ``start == 0``.
        ``torso="auto"`` picks ``"mlp"`` for a 1-D ``Box`` and ``"nature"`` for a
        channels-first ``uint8`` image ``Box`` ``(C, H, W)``; anything else must
        be named. ``"mlp"`` flattens any ``Box``; ``hidden`` and ``activation``
        only apply to it.
        """
        num_actions = discrete_actions(action_space, "ActorCritic")
        net = build_torso(observation_space, torso, hidden, activation, "ActorCritic")
        return cls(net, num_actions, lstm_size, use_prev_action_reward, reward_clip)

    # ------------------------------------------------------------------ inference and learning
    def step(
        self,
        obs: torch.Tensor,
        state: State,
        first: torch.Tensor | None = None,
        prev_action: torch.Tensor | None = None,
        prev_reward: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """One step for ``B`` rows: ``obs [B, ...]``, ``first/prev_action/prev_reward [B]``.

        Returns ``(logits [B, A], value [B], new_state)``. ``first=None`` means no row starts an episode.
        """
        x, state = self._body_step(obs, state, first, prev_action, prev_reward)
        return (*self._heads(x), state)

    def unroll(
        self,
        obs: torch.Tensor,
        state0: State,
        first: torch.Tensor | None = None,
        prev_action: torch.Tensor | None = None,
        prev_reward: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """``T`` steps for ``B`` rows: ``obs [T, B, ...]``, ``first/prev_action/prev_reward [T, B]``.

        Returns ``(logits [T, B, A], values [T, B], final_state)``; equal (up to
        float rounding) to calling :meth:`step` ``T`` times.
        """
        steps, batch = obs.shape[:2]
        out, final = self._body_unroll(obs, state0, first, prev_action, prev_reward)
        logits, values = self._heads(out)
        return logits.reshape(steps, batch, -1), values.reshape(steps, batch), final

    def forward(self, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor, State]:
        """Same as :meth:`unroll` (so module hooks and wrappers see the learner call)."""
        return self.unroll(*args, **kwargs)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy(x), self.value(x).squeeze(-1)
