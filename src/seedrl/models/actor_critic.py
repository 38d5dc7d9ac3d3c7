"""Actor-critic network: torso, optional LSTM core, policy and value heads.

Two entry points share the same weights and the same arithmetic:

* :meth:`ActorCritic.step` -- one step for a batch of ``B`` environments, the
  central inference call;
* :meth:`ActorCritic.unroll` -- ``T`` steps for ``B`` sequences, the learner
  call: the torso runs once on all ``T*B`` frames, the LSTM input projection is
  one matrix product, and only the recurrence loops over time.

``first[t, b]`` marks the first step of an episode: the recurrent state of that
row is set to zeros *before* the step, and the previous action and reward (which
belong to the previous episode) are treated as zeros too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from seedrl.models.torsos import ImpalaResNet, MLPTorso, NatureCNN

__all__ = ["ActorCritic", "State", "TORSOS"]

#: Recurrent state: ``(h, c)`` each ``[B, lstm_size]``, or ``()`` for a feed-forward model.
State = tuple[torch.Tensor, ...]

#: Names accepted by :meth:`ActorCritic.from_spaces` (besides ``"auto"``).
TORSOS = ("mlp", "nature", "impala")


class ActorCritic(nn.Module):
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
        super().__init__()
        if num_actions < 1:
            raise ValueError(f"ActorCritic: num_actions must be >= 1, got {num_actions}")
        if lstm_size is not None and lstm_size < 1:
            raise ValueError(f"ActorCritic: lstm_size must be >= 1 or None, got {lstm_size}")
        if reward_clip is not None and not reward_clip > 0:
            raise ValueError(f"ActorCritic: reward_clip must be > 0 or None, got {reward_clip}")
        self.torso = torso
        self.num_actions = int(num_actions)
        self.lstm_size = lstm_size
        self.use_prev_action_reward = bool(use_prev_action_reward)
        self.reward_clip = reward_clip
        core_in = int(torso.output_dim) + (self.num_actions + 1 if use_prev_action_reward else 0)
        # LSTMCell only holds the parameters (standard names and init); the math is below.
        self.core = nn.LSTMCell(core_in, lstm_size) if lstm_size is not None else None
        head_in = lstm_size if lstm_size is not None else core_in
        self.policy = nn.Linear(head_in, self.num_actions)
        self.value = nn.Linear(head_in, 1)
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
        from gymnasium import spaces

        if not isinstance(action_space, spaces.Discrete):
            raise TypeError(f"ActorCritic.from_spaces: action space must be Discrete, got {action_space}")
        if int(action_space.start) != 0:
            raise ValueError(f"ActorCritic.from_spaces: Discrete start must be 0, got {action_space}")
        if not isinstance(observation_space, spaces.Box):
            raise TypeError(f"ActorCritic.from_spaces: observation space must be a Box, got {observation_space}")
        shape = tuple(observation_space.shape)
        if torso == "auto":
            if len(shape) == 1:
                torso = "mlp"
            elif len(shape) == 3 and observation_space.dtype == "uint8":
                torso = "nature"
            else:
                raise ValueError(
                    f"ActorCritic.from_spaces: cannot choose a torso for {observation_space} "
                    f"(auto handles 1-D Box and uint8 (C, H, W) images); pass torso= one of {TORSOS}"
                )
        if torso == "mlp":
            net: nn.Module = MLPTorso(int(torch.Size(shape).numel()), hidden, activation)
        elif torso == "nature":
            net = NatureCNN(shape)
        elif torso == "impala":
            net = ImpalaResNet(shape)
        else:
            raise ValueError(f"ActorCritic.from_spaces: torso must be 'auto' or one of {TORSOS}, got {torso!r}")
        return cls(net, int(action_space.n), lstm_size, use_prev_action_reward, reward_clip)

    # ------------------------------------------------------------------ state
    @property
    def is_recurrent(self) -> bool:
        return self.core is not None

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Zero state for ``batch_size`` rows: ``(h, c)``, or ``()`` when feed-forward."""
        if self.core is None:
            return ()
        ref = self.policy.weight
        zeros = torch.zeros(batch_size, self.core.hidden_size, dtype=ref.dtype, device=device or ref.device)
        return (zeros, zeros.clone())

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
        batch = obs.shape[0]
        first = self._check_first(first, (batch,))
        x = self._core_input(self.torso(obs), first, prev_action, prev_reward, (batch,))
        if self.core is None:
            return (*self._heads(x), ())
        h, c = self._reset(self._check_state(state, batch), first)
        h, c = self._lstm(F.linear(x, self.core.weight_ih, self.core.bias_ih), h, c)
        return (*self._heads(h), (h, c))

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
        first = self._check_first(first, (steps, batch))
        flat_first = None if first is None else first.reshape(-1)
        flat = lambda x: None if x is None else x.reshape(-1)  # noqa: E731
        features = self.torso(obs.reshape(steps * batch, *obs.shape[2:]))
        x = self._core_input(features, flat_first, flat(prev_action), flat(prev_reward), (steps, batch))
        if self.core is None:
            out, final = x, ()
        else:
            h, c = self._check_state(state0, batch)
            xproj = F.linear(x, self.core.weight_ih, self.core.bias_ih).reshape(steps, batch, -1)
            outs = []
            for t in range(steps):
                h, c = self._reset((h, c), None if first is None else first[t])
                h, c = self._lstm(xproj[t], h, c)
                outs.append(h)
            out, final = torch.stack(outs).reshape(steps * batch, -1), (h, c)
        logits, values = self._heads(out)
        return logits.reshape(steps, batch, -1), values.reshape(steps, batch), final

    def forward(self, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor, State]:
        """Same as :meth:`unroll` (so module hooks and wrappers see the learner call)."""
        return self.unroll(*args, **kwargs)

    # ------------------------------------------------------------------ pieces
    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy(x), self.value(x).squeeze(-1)

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
        if prev_action is None or prev_reward is None:
            raise ValueError("ActorCritic: use_prev_action_reward=True needs prev_action and prev_reward")
        n = features.shape[0]
        if prev_action.numel() != n or prev_reward.numel() != n:
            raise ValueError(
                f"ActorCritic: prev_action and prev_reward must have shape {tuple(shape)}, "
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

    @staticmethod
    def _check_first(first: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor | None:
        if first is None:
            return None
        if tuple(first.shape) != shape:
            raise ValueError(f"ActorCritic: first must have shape {shape}, got {tuple(first.shape)}")
        return first if first.dtype == torch.bool else first.bool()

    def _check_state(self, state: State, batch: int) -> State:
        size = self.core.hidden_size
        if len(state) != 2 or any(tuple(s.shape) != (batch, size) for s in state):
            shapes = [tuple(s.shape) for s in state]
            raise ValueError(f"ActorCritic: state must be (h, c) of shape {(batch, size)} each, got {shapes}")
        return state
