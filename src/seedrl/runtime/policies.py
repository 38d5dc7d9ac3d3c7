"""Policy heads of central inference: how a model's first output becomes actions.

Inference calls ``head(out, rows, generator) -> (actions [B] int64, logp [B] float32)``
with ``out`` the model's first output for ``B`` environment rows (``rows [B]``: the
global environment index ``actor * num_envs + j`` of each row) and the server's seeded
generator. ``logp`` is the log-probability of the chosen action under the behaviour
policy, stored in the unrolls.

* :class:`SamplingHead` (IMPALA): ``out`` are logits; an exact softmax sample
  (:func:`~seedrl.runtime.inference.sample_actions`).
* :class:`EpsilonGreedyHead` (R2D2): ``out`` are Q-values; row r acts uniformly at random
  with probability ``ε[rows[r]]``, else greedily. One ε per environment slot, fixed for
  the run: the N = num_actors x num_envs environments get SEED's per-actor schedule
  ``ε_i = base^(1 + α i / (N − 1))``, because in SEED every actor steps one environment
  and owns one ε; here an actor steps many, and giving all of an actor's environments
  one ε would leave only num_actors distinct values. Fixed per slot, a restarted actor
  keeps its ε. ``logp = log(ε/A + (1 − ε)·[a = argmax Q])``, the ε-greedy probability of
  the taken action (R2D2's loss does not use it; it keeps replays self-describing).
"""

from __future__ import annotations

import numpy as np
import torch

from seedrl.agents.r2d2 import epsilon_greedy


class SamplingHead:
    """Softmax sampling of logits (Gumbel-max)."""

    def __call__(self, logits: torch.Tensor, rows: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        from seedrl.runtime.inference import sample_actions

        return sample_actions(logits, generator)

    def metrics(self) -> dict[str, float]:
        return {}


class EpsilonGreedyHead:
    """ε-greedy on Q-values with a fixed ε per environment row (``epsilons [N]``)."""

    def __init__(self, epsilons: np.ndarray):
        self.epsilons = np.asarray(epsilons, dtype=np.float64).reshape(-1)
        if self.epsilons.size == 0 or not ((self.epsilons >= 0) & (self.epsilons <= 1)).all():
            raise ValueError(f"epsilons must be a non-empty array of values in [0, 1], got {self.epsilons!r}")

    def __call__(self, q: torch.Tensor, rows: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        q = q.float()
        if torch.isnan(q).any():
            raise RuntimeError("InferenceServer: the Q-values contain NaN")
        eps = torch.from_numpy(self.epsilons[rows])
        actions = epsilon_greedy(q, eps, generator)
        greedy = q.argmax(dim=-1)
        prob = eps / q.shape[1] + (1.0 - eps) * (actions == greedy).double()
        return actions.numpy(), np.log(prob.numpy()).astype(np.float32)

    def metrics(self) -> dict[str, float]:
        return {"epsilon_min": float(self.epsilons.min()), "epsilon_max": float(self.epsilons.max())}
