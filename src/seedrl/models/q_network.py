"""Q-network for R2D2: torso, LSTM core (or one MLP layer of the same width), plain or dueling head.

Same call conventions as :class:`~seedrl.models.ActorCritic` (the shared
:class:`~seedrl.models.body.RecurrentBody`: ``initial_state``, ``step`` for
central inference, ``unroll`` for the learner, ``first`` resets, optional
previous action/reward inputs), but the output is ``Q(s, ·)`` instead of
(logits, value):

* plain head: ``Q = W x + b``;
* dueling head (Wang et al. 2016): ``Q(s, a) = V(s) + A(s, a) − mean_a' A(s, a')``,
  the identification R2D2 and SEED RL use.

``recurrent=False`` replaces the LSTM by ``ReLU(W x + b)`` of the same width and
keeps no state (``initial_state`` is ``()``), so a feed-forward agent has the
same head and about the same capacity: the ablation of the memory task.
"""

from __future__ import annotations

import torch
from torch import nn

from seedrl.models.body import RecurrentBody, State, build_torso, discrete_actions

__all__ = ["QNetwork"]


class QNetwork(RecurrentBody):
    """``torso -> [prev action one-hot, clipped prev reward] -> LSTM | ReLU layer -> Q [.., A]``.

    Args:
        torso: module mapping ``[N, *obs_shape]`` to ``[N, torso.output_dim]``.
        num_actions: size of the discrete action set.
        width: LSTM width (``recurrent``) or width of the ReLU layer replacing it.
        dueling: dueling head ``V + A − mean A`` instead of a linear Q head.
        recurrent: LSTM core with state ``(h, c)``; False: no state.
        use_prev_action_reward: feed the one-hot previous action and clipped previous reward.
        reward_clip: clip of the previous-reward input (``None``: none).
    """

    def __init__(
        self,
        torso: nn.Module,
        num_actions: int,
        width: int,
        *,
        dueling: bool = True,
        recurrent: bool = True,
        use_prev_action_reward: bool = False,
        reward_clip: float | None = 1.0,
    ) -> None:
        if width < 1:
            raise ValueError(f"QNetwork: width must be >= 1, got {width}")
        super().__init__(torso, num_actions, width if recurrent else None, use_prev_action_reward, reward_clip)
        self.width = int(width)
        self.dueling = bool(dueling)
        self.feedforward = None if recurrent else nn.Sequential(nn.Linear(self.core_input_dim, self.width), nn.ReLU())
        if self.dueling:
            self.value = nn.Linear(self.width, 1)
            self.advantage = nn.Linear(self.width, self.num_actions)
        else:
            self.q = nn.Linear(self.width, self.num_actions)

    @classmethod
    def from_spaces(cls, cfg, obs_space, act_space, *, dueling: bool, recurrent: bool) -> "QNetwork":
        """The Q-network that a :class:`~seedrl.models.ModelConfig` describes for Gymnasium spaces.

        The core width is ``cfg.lstm_size``, or the torso's output width when it
        is null (64 for the default MLP, 512 for the Nature CNN).
        """
        num_actions = discrete_actions(act_space, "QNetwork")
        torso = build_torso(obs_space, cfg.torso, cfg.hidden, cfg.activation, "QNetwork")
        width = cfg.lstm_size if cfg.lstm_size is not None else int(torso.output_dim)
        return cls(torso, num_actions, width, dueling=dueling, recurrent=recurrent,
                   use_prev_action_reward=cfg.use_prev_action_reward, reward_clip=cfg.reward_clip)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Zero state for ``batch_size`` rows: ``(h, c)``, or ``()`` when not recurrent."""
        return super().initial_state(batch_size, device)

    def step(self, obs, state, first, prev_action=None, prev_reward=None) -> tuple[torch.Tensor, State]:
        """One step for ``B`` rows (``obs [B, ...]``, ``first/prev_action/prev_reward [B]``): ``(q [B, A], new_state)``."""
        x, state = self._body_step(obs, state, first, prev_action, prev_reward)
        return self._head(x), state

    def unroll(self, obs, state0, first, prev_action=None, prev_reward=None) -> tuple[torch.Tensor, State]:
        """``T`` steps for ``B`` rows (``obs [T, B, ...]``, the rest ``[T, B]``): ``(q [T, B, A], final_state)``.

        Equal (up to float rounding) to calling :meth:`step` ``T`` times.
        """
        steps, batch = obs.shape[:2]
        x, final = self._body_unroll(obs, state0, first, prev_action, prev_reward)
        return self._head(x).reshape(steps, batch, -1), final

    def unroll_states(self, obs, state0, first, prev_action=None, prev_reward=None) -> tuple[torch.Tensor, State]:
        """Like :meth:`unroll`, with the state after every step: ``(q [T, B, A], (h [T, B, H], c [T, B, H]))``
        (``()`` when not recurrent). Row t is the state a :meth:`step` after entry t would carry."""
        steps, batch = obs.shape[:2]
        x, states = self._body_unroll_states(obs, state0, first, prev_action, prev_reward)
        return self._head(x).reshape(steps, batch, -1), states

    def forward(self, *args, **kwargs) -> tuple[torch.Tensor, State]:
        """Same as :meth:`unroll`."""
        return self.unroll(*args, **kwargs)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        if self.feedforward is not None:
            x = self.feedforward(x)
        if not self.dueling:
            return self.q(x)
        adv = self.advantage(x)
        return self.value(x) + adv - adv.mean(dim=-1, keepdim=True)
