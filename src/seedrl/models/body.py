"""The shared body of the game networks: torso, optional previous action/reward inputs, optional LSTM core.

:class:`~seedrl.models.ActorCritic` (policy and value heads) and
:class:`~seedrl.models.q_network.QNetwork` (Q-value head) put their heads on
this body, so both share one implementation of the conventions:

* ``step`` is one step for a batch of ``B`` environments (central inference);
  ``unroll`` is ``T`` steps for ``B`` sequences (the learner): the torso runs
  once on all ``T*B`` frames, the LSTM input projection is one matrix product,
  and only the recurrence loops over time. Both give the same numbers.
* ``first[t, b]`` marks the first step of an episode: the recurrent state of
  that row is set to zeros *before* the step, and the previous action and
  reward (which belong to the previous episode) are treated as zeros too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from seedrl.models.torsos import ImpalaResNet, MLPTorso, NatureCNN, SmallCNN

__all__ = ["RecurrentBody", "State", "TORSOS", "build_torso", "discrete_actions"]

#: Recurrent state: ``(h, c)`` each ``[B, lstm_size]``, or ``()`` for a feed-forward model.
State = tuple[torch.Tensor, ...]

#: Torso names accepted by :func:`build_torso` (besides ``"auto"``).
TORSOS = ("mlp", "nature", "small", "impala")


def discrete_actions(action_space, owner: str) -> int:
    """The number of actions of a ``Discrete(n)`` space with ``start == 0`` (else a one-line error naming ``owner``)."""
    from gymnasium import spaces

    if not isinstance(action_space, spaces.Discrete):
        raise TypeError(f"{owner}.from_spaces: action space must be Discrete, got {action_space}")
    if int(action_space.start) != 0:
        raise ValueError(f"{owner}.from_spaces: Discrete start must be 0, got {action_space}")
    return int(action_space.n)


def build_torso(observation_space, torso: str, hidden: Sequence[int], activation: str, owner: str) -> nn.Module:
    """The torso for a Gymnasium ``Box`` observation space.

    ``torso="auto"`` picks ``"mlp"`` for a 1-D ``Box`` and ``"nature"`` for a
    channels-first ``uint8`` image ``Box`` ``(C, H, W)``; anything else must be
    named. ``"mlp"`` flattens any ``Box``; ``hidden`` and ``activation`` only
    apply to it.
    """
    from gymnasium import spaces

    if not isinstance(observation_space, spaces.Box):
        raise TypeError(f"{owner}.from_spaces: observation space must be a Box, got {observation_space}")
    shape = tuple(observation_space.shape)
    if torso == "auto":
        if len(shape) == 1:
            torso = "mlp"
        elif len(shape) == 3 and observation_space.dtype == "uint8":
            torso = "nature"
        else:
            raise ValueError(
                f"{owner}.from_spaces: cannot choose a torso for {observation_space} "
                f"(auto handles 1-D Box and uint8 (C, H, W) images); pass torso= one of {TORSOS}"
            )
    if torso == "mlp":
        return MLPTorso(int(torch.Size(shape).numel()), hidden, activation)
    if torso == "nature":
        return NatureCNN(shape)
    if torso == "small":
        return SmallCNN(shape)
    if torso == "impala":
        return ImpalaResNet(shape)
    raise ValueError(f"{owner}.from_spaces: torso must be 'auto' or one of {TORSOS}, got {torso!r}")


class RecurrentBody(nn.Module):
    """``torso -> [prev action one-hot, clipped prev reward] -> [LSTM]``; subclasses add heads.

    Args:
        torso: module mapping ``[N, *obs_shape]`` to ``[N, torso.output_dim]``.
        num_actions: size of the discrete action set.
        lstm_size: LSTM width, or ``None`` for a feed-forward body.
        use_prev_action_reward: concatenate the one-hot previous action and the
            clipped previous reward to the torso features, as IMPALA and R2D2 do.
        reward_clip: previous rewards are clipped to ``[-reward_clip, reward_clip]``
            (``None``: not clipped).

    ``core_input_dim`` is the width of the LSTM input (torso features plus the
    optional previous action and reward); ``body_dim`` the width of what
    :meth:`_body_step` / :meth:`_body_unroll` return.
    """

    def __init__(
        self,
        torso: nn.Module,
        num_actions: int,
        lstm_size: int | None = None,
        use_prev_action_reward: bool = False,
        reward_clip: float | None = 1.0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if num_actions < 1:
            raise ValueError(f"{name}: num_actions must be >= 1, got {num_actions}")
        if lstm_size is not None and lstm_size < 1:
            raise ValueError(f"{name}: lstm_size must be >= 1 or None, got {lstm_size}")
        if reward_clip is not None and not reward_clip > 0:
            raise ValueError(f"{name}: reward_clip must be > 0 or None, got {reward_clip}")
        self.torso = torso
        self.num_actions = int(num_actions)
        self.lstm_size = lstm_size
        self.use_prev_action_reward = bool(use_prev_action_reward)
        self.reward_clip = reward_clip
        self.core_input_dim = int(torso.output_dim) + (self.num_actions + 1 if use_prev_action_reward else 0)
        # LSTMCell only holds the parameters (standard names and init); the math is below.
        self.core = nn.LSTMCell(self.core_input_dim, lstm_size) if lstm_size is not None else None
        self.body_dim = lstm_size if lstm_size is not None else self.core_input_dim

    # ------------------------------------------------------------------ state
    @property
    def is_recurrent(self) -> bool:
        return self.core is not None

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Zero state for ``batch_size`` rows: ``(h, c)``, or ``()`` when feed-forward."""
        if self.core is None:
            return ()
        ref = self.core.weight_ih
        zeros = torch.zeros(batch_size, self.core.hidden_size, dtype=ref.dtype, device=device or ref.device)
        return (zeros, zeros.clone())

    # ------------------------------------------------------------------ body passes
    def _body_step(self, obs, state: State, first, prev_action, prev_reward) -> tuple[torch.Tensor, State]:
        """One step: ``obs [B, ...]`` -> ``(features [B, body_dim], new_state)``."""
        batch = obs.shape[0]
        first = self._check_first(first, (batch,))
        x = self._core_input(self.torso(obs), first, prev_action, prev_reward, (batch,))
        if self.core is None:
            return x, ()
        h, c = self._reset(self._check_state(state, batch), first)
        h, c = self._lstm(F.linear(x, self.core.weight_ih, self.core.bias_ih), h, c)
        return h, (h, c)

    def _body_unroll(self, obs, state0: State, first, prev_action, prev_reward) -> tuple[torch.Tensor, State]:
        """``T`` steps: ``obs [T, B, ...]`` -> ``(features [T*B, body_dim], final_state)``, time-major rows."""
        features, states = self._body_unroll_states(obs, state0, first, prev_action, prev_reward)
        return features, tuple(s[-1] for s in states)

    def _body_unroll_states(self, obs, state0: State, first, prev_action, prev_reward) -> tuple[torch.Tensor, State]:
        """Like :meth:`_body_unroll`, with the state after every step: ``(features [T*B, body_dim],
        (h [T, B, H], c [T, B, H]))``, or ``()`` for the states of a feed-forward body."""
        steps, batch = obs.shape[:2]
        first = self._check_first(first, (steps, batch))
        flat_first = None if first is None else first.reshape(-1)
        flat = lambda x: None if x is None else x.reshape(-1)  # noqa: E731
        features = self.torso(obs.reshape(steps * batch, *obs.shape[2:]))
        x = self._core_input(features, flat_first, flat(prev_action), flat(prev_reward), (steps, batch))
        if self.core is None:
            return x, ()
        h, c = self._check_state(state0, batch)
        xproj = F.linear(x, self.core.weight_ih, self.core.bias_ih).reshape(steps, batch, -1)
        hs, cs = [], []
        for t in range(steps):
            h, c = self._reset((h, c), None if first is None else first[t])
            h, c = self._lstm(xproj[t], h, c)
            hs.append(h)
            cs.append(c)
        h_all = torch.stack(hs)
        return h_all.reshape(steps * batch, -1), (h_all, torch.stack(cs))

    # ------------------------------------------------------------------ pieces
    def _lstm(self, xproj: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One LSTM step given the precomputed input projection (PyTorch gate order i, f, g, o)."""
        gates = xproj + F.linear(h, self.core.weight_hh, self.core.bias_hh)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    @staticmethod
    def _reset(state: State, first: torch.Tensor | None) -> State:
        if first is None:
            return state
        mask = first.unsqueeze(-1)
        return tuple(torch.where(mask, torch.zeros((), dtype=s.dtype, device=s.device), s) for s in state)

    def _core_input(self, features, first, prev_action, prev_reward, shape) -> torch.Tensor:
        if not self.use_prev_action_reward:
            return features
        name = type(self).__name__
        if prev_action is None or prev_reward is None:
            raise ValueError(f"{name}: use_prev_action_reward=True needs prev_action and prev_reward")
        n = features.shape[0]
        if prev_action.numel() != n or prev_reward.numel() != n:
            raise ValueError(
                f"{name}: prev_action and prev_reward must have shape {tuple(shape)}, "
                f"got {tuple(prev_action.shape)} and {tuple(prev_reward.shape)}"
            )
        prev_action = prev_action.reshape(n).long()
        reward = prev_reward.reshape(n).to(features.dtype)
        if self.reward_clip is not None:
            reward = reward.clamp(-self.reward_clip, self.reward_clip)
        if first is not None:  # the previous episode's action and reward are not inputs
            prev_action = prev_action.masked_fill(first, 0)
            reward = reward.masked_fill(first, 0.0)
        one_hot = F.one_hot(prev_action, self.num_actions).to(features.dtype)
        if first is not None:
            one_hot = one_hot.masked_fill(first.unsqueeze(-1), 0.0)
        return torch.cat([features, one_hot, reward.unsqueeze(-1)], dim=-1)

    def _check_first(self, first: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor | None:
        if first is None:
            return None
        if tuple(first.shape) != shape:
            raise ValueError(f"{type(self).__name__}: first must have shape {shape}, got {tuple(first.shape)}")
        return first if first.dtype == torch.bool else first.bool()

    def _check_state(self, state: State, batch: int) -> State:
        size = self.core.hidden_size
        if len(state) != 2 or any(tuple(s.shape) != (batch, size) for s in state):
            shapes = [tuple(s.shape) for s in state]
            raise ValueError(f"{type(self).__name__}: state must be (h, c) of shape {(batch, size)} each, got {shapes}")
        return state
