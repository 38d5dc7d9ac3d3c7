"""The protocol between the language-model loop and an algorithm's learner step.

:func:`seedrl.runtime.lm_loop.train_lm` runs actors, the generation server,
checkpoints and metrics; an *update* object (one per algorithm, owned by its agent
module and listed in ``lm_loop.UPDATES``) says what the actors must sample per
prompt and turns a batch of :class:`Group` s into a loss (:class:`LMUpdate`):

* :class:`seedrl.agents.pg.PGUpdate`: REINFORCE-LOO with a KL penalty;
* :class:`seedrl.agents.bond.BondUpdate`: BOND / J-BOND (policy and anchor samples);
* :class:`seedrl.agents.gkd.GKDUpdate`: GKD (student and teacher samples);
* :class:`seedrl.agents.rlef.RLEFUpdate`: entailment-feedback actor-critic (a value
  head or a separate critic: trainable parameters of its own).

This module holds what they share: the batch types and the behaviour log-probs the
sampler records (the distribution actually sampled from, for the policy-lag
correction). ``PGUpdate`` and ``BondUpdate`` are still importable from here for one
release (deprecated: import them from their agent modules).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np
import torch

__all__ = ["Group", "LMUpdate", "Request", "behaviour_logprobs", "behaviour_token_logprobs", "make_group",
           "mean_entropy", "trainable_parameters"]


@dataclass
class Group:
    """Completions of one prompt with their rewards; anchor samples for BOND (teacher samples for GKD)."""

    prompt_tokens: list[int]
    completions: list[Any]
    rewards: np.ndarray
    anchor_completions: list[Any] | None = None
    anchor_rewards: np.ndarray | None = None
    example: Any = None  # the task's example of the prompt (GKD's fixed outputs)


def make_group(prompt, samples: list[list[Any]], reward_fn) -> Group:
    """The :class:`Group` of a drawn ``prompt`` from the completions of each request (the first: the
    policy's; a second: the anchor's or teacher's), all scored in one batched ``reward_fn`` call."""
    flat = [c for group in samples for c in group]
    rewards = np.asarray(reward_fn([prompt.text] * len(flat), [c.text for c in flat], [prompt.example] * len(flat))
                         if flat else [], dtype=np.float32)
    n0 = len(samples[0])
    group = Group(prompt.tokens, samples[0], rewards[:n0], example=prompt.example)
    if len(samples) > 1:
        group.anchor_completions, group.anchor_rewards = samples[1], rewards[n0:]
    return group


@dataclass
class Request:
    """What an actor asks the generation server for, per prompt: ``n`` samples of ``model``."""

    model: str
    n: int


class LMUpdate(Protocol):
    """An algorithm's learner step, built as ``Update(cfg, learner_policy, checkpoint)``
    (``checkpoint``: the one a resumed run starts from, to restore the update's own state);
    the loop sets ``update.server`` (the generation server) before the first ``loss``."""

    server: Any

    def requests(self) -> list[Request]:
        """Per prompt, the samples the actors draw (the first request is the policy's)."""

    def served_models(self) -> dict[str, Any]:
        """Models of its own the generation server must serve (an anchor, a teacher)."""

    def loss(self, batch: list[Group]) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss to minimise (differentiable) and the metrics of this batch."""

    # optional: ``prefetch(batch) -> None``. An update that has it sees each batch one update
    # early (the loop takes batch k + 1 off the queue before it trains on batch k) and may
    # ask central inference for what that batch needs (GKD: the teacher's distributions), so
    # the server computes it while the learner trains; ``loss`` of that batch follows, in order.

    def after_update(self, step: int) -> None:
        """Called after the optimizer step ``step`` (1-based) and the weight push."""

    def save(self, path: Path) -> None:
        """Write the update's own state into the checkpoint folder ``path``."""


def trainable_parameters(update) -> list[torch.Tensor]:
    """Parameters an update trains beside the policy's (a value head, a critic); an update
    without a ``parameters()`` method has none. The loop's optimizer takes them after the
    policy's, so their optimizer state is checkpointed and resumed with it."""
    params: Iterable[torch.Tensor] = update.parameters() if hasattr(update, "parameters") else ()
    return list(params)


def behaviour_logprobs(completions) -> torch.Tensor:
    """``[N]`` log μ(y) of each sampled completion: the sum of its sampling log-probs (the
    distribution actually sampled from, by the actor's weights of that moment)."""
    return torch.tensor([float(np.sum(c.sampling_logprobs, dtype=np.float64)) for c in completions])


def behaviour_token_logprobs(completions, length: int) -> torch.Tensor:
    """``[N, length]`` per-token log μ(y_t | x, y_<t) of each completion, 0 past its end."""
    out = torch.zeros(len(completions), length, dtype=torch.float32)
    for i, c in enumerate(completions):
        lp = np.asarray(c.sampling_logprobs, dtype=np.float32)
        out[i, : len(lp)] = torch.from_numpy(lp)
    return out


def mean_entropy(scores, rows: slice | None = None) -> float:
    """Mean next-token entropy over the completion tokens of ``scores`` (of ``rows``)."""
    ent, mask = scores.entropies.detach(), scores.mask
    if rows is not None:
        ent, mask = ent[rows], mask[rows]
    return ((ent * mask).sum() / mask.sum().clamp(min=1)).item()


def __getattr__(name: str):
    """``PGUpdate`` / ``BondUpdate`` / ``ANCHOR_DIR`` from their agent modules (deprecated here)."""
    homes = {"PGUpdate": "seedrl.agents.pg", "BondUpdate": "seedrl.agents.bond", "ANCHOR_DIR": "seedrl.agents.bond"}
    if name not in homes:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    warnings.warn(f"seedrl.runtime.lm_updates.{name} moved to {homes[name]}.{name}; import it from there",
                  DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(homes[name]), name)
