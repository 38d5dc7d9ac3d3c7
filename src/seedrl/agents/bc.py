"""Behaviour cloning (BC): fit a policy to a dataset's actions by maximum likelihood.

Training data are windows of ``T`` consecutive steps of RLDS episodes
(:class:`~seedrl.data.torch.WindowDataset`, padded at an episode's end), so a
recurrent torso is unrolled over each window from a zero state, exactly as the
IMPALA learner unrolls its sequences; a feed-forward torso sees the same
steps independently. Observations enter the model as the environment gives
them (an Atari frame stack is the stacked observation the actors recorded).

The loss on a batch of windows (``B`` windows, ``T`` steps, ``m_{t,b}`` the
loss mask) is the masked mean of a per-step term ``ℓ``::

    L = Σ_{t,b} m_{t,b} · ℓ(a_{t,b}, x_{t,b}) / Σ_{t,b} m_{t,b}

* discrete actions (cross-entropy): ``ℓ = − log softmax(z(x))[a]``;
* continuous, ``loss: nll`` (Gaussian negative log-likelihood, diagonal)::

      ℓ = Σ_d [ ½ ((a_d − μ_d(x)) / σ_d)² + log σ_d + ½ log 2π ]

* continuous, ``loss: mse``: ``ℓ = Σ_d (a_d − μ_d(x))²`` (σ is not learned).

The mask ``m`` keeps real steps (not padding) that are decisions (not the
``is_last`` step, whose action RLDS leaves empty) and, with ``burn_in = k``,
drops the first ``k`` steps of windows that start mid-episode: those only warm
up the recurrent state (R2D2's burn-in); a window that starts at an episode's
first step has the true initial state and keeps every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from seedrl.config import ConfigError
from seedrl.models.gaussian import split_gaussian

__all__ = ["BCConfig", "BCStep", "GaussianHead", "bc_loss", "build_bc_model", "loss_mask"]

LOSSES = ("auto", "nll", "mse")


@dataclass
class BCConfig:
    """What to clone and how (the ``agent`` section of an ``algo: bc`` config)."""

    dataset: Path | None = field(default=None, metadata={"help": "RLDS dataset directory in the store (required)"})
    where: list[str] = field(default_factory=list, metadata={
        "help": "keep episodes meeting every condition KEY OP VALUE, as `seedrl data filter --where` "
                "(KEY: return, length or a metadata key), e.g. ['return>=400']"})
    labels: list[str] = field(default_factory=list, metadata={
        "help": "keep episodes annotated with every one of these labels (seedrl data annotate)"})
    without_labels: list[str] = field(default_factory=list, metadata={
        "help": "drop episodes annotated with any of these labels"})
    updates: int = field(default=2000, metadata={"help": "learner updates (batches) to train for", "min": 1})
    batch_size: int = field(default=32, metadata={"help": "windows per batch", "min": 1})
    window: int = field(default=16, metadata={"help": "T: steps per window (a recurrent torso is unrolled over it)",
                                              "min": 1})
    burn_in: int = field(default=0, metadata={
        "help": "steps at the start of a mid-episode window that only warm up the recurrent state (no loss)", "min": 0})
    loss: str = field(default="auto", metadata={
        "help": "continuous actions: nll (Gaussian negative log-likelihood) or mse; auto = nll. Discrete actions "
                "always use cross-entropy", "choices": list(LOSSES)})
    eval_every: int = field(default=0, metadata={
        "help": "updates between evaluations on the live environment (metric eval_return); 0 = only at the end",
        "min": 0})
    eval_episodes: int = field(default=10, metadata={"help": "episodes of each live evaluation; 0 = none", "min": 0})

    def validate(self) -> None:
        if self.burn_in >= self.window:
            raise ConfigError(f"config error: 'agent.burn_in' = {self.burn_in} must be below 'agent.window' = "
                              f"{self.window} (no step of a mid-episode window would be learned)", "agent.burn_in")


def build_bc_model(model_cfg, observation_space, action_space) -> torch.nn.Module:
    """:class:`~seedrl.models.ActorCritic` for ``Discrete`` actions (its logits are the policy),
    :class:`~seedrl.models.gaussian.GaussianPolicy` for a 1-D ``Box``."""
    from gymnasium import spaces

    if isinstance(action_space, spaces.Discrete):
        from seedrl.models.config import build_model

        return build_model(model_cfg, observation_space, action_space)
    if model_cfg.use_prev_action_reward:
        raise ConfigError("config error: 'model.use_prev_action_reward' = True needs discrete actions (a one-hot "
                          f"input); the action space is {action_space}", "model.use_prev_action_reward")
    from seedrl.models.gaussian import GaussianPolicy

    return GaussianPolicy.from_spaces(observation_space, action_space, model_cfg.torso, model_cfg.lstm_size,
                                      model_cfg.hidden, model_cfg.activation)


def loss_mask(mask: torch.Tensor, is_first: torch.Tensor, is_last: torch.Tensor, burn_in: int) -> torch.Tensor:
    """``m [T, B]`` of the module docstring from the window mask, ``is_first`` and ``is_last`` (all ``[T, B]``)."""
    m = mask & ~is_last
    if burn_in:
        warm = torch.zeros_like(m)
        warm[:burn_in] = True
        m = m & ~(warm & ~is_first[:1])  # windows starting an episode keep their first steps
    return m


def bc_loss(out: torch.Tensor, actions: torch.Tensor, m: torch.Tensor, kind: str) -> tuple[torch.Tensor, dict]:
    """The loss of the module docstring for the model's first output ``out`` (``[T, B, A]`` logits, or
    ``[T, B, 2 D]`` Gaussian parameters), ``actions`` ``[T, B]`` (int) or ``[T, B, D]``, mask ``m [T, B]``.
    ``kind``: ``ce`` (discrete), ``nll`` or ``mse``. Returns the loss and its logged terms."""
    w = m.float()
    count = w.sum().clamp_min(1.0)
    if kind == "ce":
        logp = F.log_softmax(out.float(), dim=-1)
        per = -logp.gather(-1, actions.long().clamp_min(0).unsqueeze(-1)).squeeze(-1)
        loss = (per * w).sum() / count
        with torch.no_grad():
            acc = ((out.argmax(-1) == actions.long()).float() * w).sum() / count
            entropy = (-(logp.exp() * logp).sum(-1) * w).sum() / count
        return loss, {"loss": loss.item(), "accuracy": acc.item(), "entropy": entropy.item()}
    mean, log_std = split_gaussian(out.float())
    err = actions.float() - mean
    if kind == "mse":
        per = (err ** 2).sum(-1)
    elif kind == "nll":
        per = (0.5 * (err / log_std.exp()) ** 2 + log_std + 0.5 * math.log(2 * math.pi)).sum(-1)
    else:
        raise ValueError(f"bc_loss: kind must be ce, nll or mse, got {kind!r}")
    loss = (per * w).sum() / count
    with torch.no_grad():
        mse = ((err ** 2).mean(-1) * w).sum() / count
    return loss, {"loss": loss.item(), "mse": mse.item(), "std": log_std.exp().mean().item()}


class BCStep:
    """The learner step: ``loss(batch)`` for a collated ``(steps, mask)`` window batch (batch-major,
    as :class:`~seedrl.data.torch.WindowDataset` gives it)."""

    def __init__(self, model: torch.nn.Module, cfg: BCConfig, discrete: bool):
        self.model, self.cfg = model, cfg
        self.kind = "ce" if discrete else ("mse" if cfg.loss == "mse" else "nll")

    def loss(self, batch: tuple[dict[str, Any], torch.Tensor]) -> tuple[torch.Tensor, dict]:
        steps, mask = batch
        tm = lambda x: x.transpose(0, 1)  # noqa: E731  [B, T, ...] -> time-major [T, B, ...]
        obs, actions = tm(steps["observation"]), tm(steps["action"])
        first, last, mask = tm(steps["is_first"]).bool(), tm(steps["is_last"]).bool(), tm(mask)
        prev_action = torch.zeros_like(actions) if self.kind != "ce" else torch.cat(
            [torch.zeros_like(actions[:1]), actions[:-1]]).long()
        prev_reward = torch.cat([torch.zeros_like(tm(steps["reward"])[:1]), tm(steps["reward"])[:-1]]).float()
        batch_size = obs.shape[1]
        out, _, _ = self.model.unroll(obs, self.model.initial_state(batch_size), first, prev_action, prev_reward)
        return bc_loss(out, actions, loss_mask(mask, first, last, self.cfg.burn_in), self.kind)


class GaussianHead:
    """Actions of a Gaussian policy's ``[μ, log σ]``: ``μ`` (greedy) or a sample ``μ + σ ε``; logp of the action."""

    def __init__(self, greedy: bool):
        self.greedy = greedy

    def __call__(self, out: torch.Tensor, rows: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        mean, log_std = split_gaussian(out.float())
        noise = torch.zeros_like(mean) if self.greedy else torch.randn(mean.shape, generator=generator)
        action = mean + log_std.exp() * noise
        logp = (-0.5 * noise ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return action.numpy().astype(np.float32), logp.numpy().astype(np.float32)

    def metrics(self) -> dict[str, float]:
        return {}
