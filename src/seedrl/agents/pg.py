"""KL-regularised policy gradient for language models: REINFORCE with a
leave-one-out baseline (RLOO), the baseline the distillation methods are
compared against.

For each prompt x, K completions y_1..y_K are sampled from the policy π. With
sequence log-probabilities log π(y) = Σ_t log π(y_t | x, y_<t) and a fixed
reference π_ref, the objective is

    J(π) = E_y~π [ r(x, y) ] − β · KL(π(·|x) ‖ π_ref(·|x)),

whose maximiser is π*(y|x) ∝ π_ref(y|x) · exp(r(x, y) / β).

Two ways to put the KL in (``kl_mode``):

* ``"reward"``: the sampled KL ``k_i = log π(y_i) − log π_ref(y_i)`` is
  subtracted from the reward, ``R_i = r_i − β·k_i`` (no gradient through
  k_i), and the REINFORCE gradient of R follows. This is the exact gradient
  of J (the score-function term of the KL is carried by R).
* ``"loss"``: the reward is left alone and ``β · Σ_t k3_t`` is added to the
  loss, with the per-token estimator ``k3 = exp(Δ) − Δ − 1``,
  ``Δ = log π_ref(y_t|c_t) − log π(y_t|c_t)``, ``c_t = (x, y_<t)`` (GRPO's
  choice). Its *value* is an unbiased, non-negative estimate of the per-token
  KL(π(·|c_t) ‖ π_ref(·|c_t)), but its pathwise gradient on ``y_t ~ π(·|c_t)``
  is ``E_{y_t}[(1 − π_ref/π) ∇log π] = ∇ KL(π_ref(·|c_t) ‖ π(·|c_t))``, the
  *forward* KL of the next-token distributions, taken with the contexts
  ``c_t`` (drawn from π) held fixed: no score-function term carries how the
  prefix distribution moves. The sum is therefore the gradient of a
  sequence-level objective only for **one-token completions** (L = 1, a
  bandit), where it maximises ``E[r] − β·KL(π_ref ‖ π)``, whose optimum is
  ``π*(y) = β·π_ref(y) / (λ − r(y))`` with λ normalising, not the exponential
  tilt (both fixed points are tested on a bandit). For longer completions it
  is neither the sequence-level forward KL ``KL(π_ref(·|x) ‖ π(·|x))`` (that
  would weight contexts by π_ref) nor the reverse one (both checked by
  enumeration on two-token completions), and its fixed point has no closed
  form; use ``"reward"`` when the regularised optimum matters.

Baseline: the mean of the other K − 1 rewards of the same prompt (leave one
out), which keeps the estimator unbiased. Loss (to minimise)::

    L = − mean_i [ ρ̄_i · (R_i − b_i) · log π(y_i) ]   (+ β · mean_i ρ̄_i · Σ_t k3_{i,t} in "loss" mode)

**Off-policy correction.** The actors sample from weights that lag the
learner's, so ``y_i ~ μ`` (the behaviour policy), not π. Given the sampled
sequences' behaviour log-probs ``log μ(y_i)`` (the log-probs of the
distribution actually sampled from), each sample is weighted by the truncated
per-sequence importance ratio ``ρ̄_i = min(c, π(y_i)/μ(y_i))``
(:func:`seedrl.ops.truncated_importance_weights`, ``c = importance_clip``, no
gradient). Untruncated, ``E_μ[ρ_i (R_i − b_i) ∇log π(y_i)] = ∇J`` exactly: the
leave-one-out baseline depends only on the other samples, so its term is
``E[b_i]·E_π[∇log π] = 0``; the same weight makes the k3 term's expectation the
on-policy one. Without behaviour log-probs (or with μ = π) ``ρ̄ = 1``.

:class:`PGUpdate` is the learner step :func:`seedrl.runtime.lm_loop.train_lm` calls
(``algo: pg``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seedrl.ops.importance import truncated_importance_weights
from seedrl.runtime.lm_updates import Group, Request, behaviour_logprobs, mean_entropy


@dataclass
class PGConfig:
    """REINFORCE-LOO with a KL penalty to the reference policy."""

    samples_per_prompt: int = field(default=4, metadata={"help": "K completions per prompt (>= 2 for the baseline)", "min": 2})
    kl_coef: float = field(default=0.05, metadata={"help": "β, weight of KL(π ‖ π_ref)", "min": 0.0})
    kl_mode: str = field(default="reward", metadata={"help": "reward: penalty in the reward; loss: k3 estimator in the loss", "choices": ["reward", "loss"]})
    normalize_advantages: bool = field(default=False, metadata={"help": "divide advantages by their batch std"})
    importance_clip: float | None = field(default=1.0, metadata={
        "help": "c of the truncated importance weight min(c, π/μ) correcting policy lag; null = untruncated",
        "min_exclusive": 0.0})


def leave_one_out_baseline(rewards: torch.Tensor) -> torch.Tensor:
    """b_{p,i} = (Σ_j r_{p,j} − r_{p,i}) / (K − 1) for rewards ``[P, K]``."""
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [prompts, K >= 2], got shape {tuple(rewards.shape)}")
    k = rewards.shape[1]
    return (rewards.sum(1, keepdim=True) - rewards) / (k - 1)


def rloo_loss(
    seq_logprobs: torch.Tensor,
    token_logprobs: torch.Tensor,
    ref_token_logprobs: torch.Tensor,
    mask: torch.Tensor,
    rewards: torch.Tensor,
    cfg: PGConfig,
    behaviour_logprobs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The RLOO loss of ``P·K`` completions grouped by prompt (rows p·K .. p·K+K−1).

    Args:
        seq_logprobs: ``[P·K]`` log π(y_i), differentiable.
        token_logprobs: ``[P·K, L]`` per-token log π (differentiable; used in "loss" mode).
        ref_token_logprobs: ``[P·K, L]`` per-token log π_ref (no gradient).
        mask: ``[P·K, L]`` completion tokens.
        rewards: ``[P·K]`` task rewards.
        behaviour_logprobs: ``[P·K]`` log μ(y_i) of the distribution the samples were drawn
            from (module docstring); None = on-policy (all weights 1).
    """
    k = cfg.samples_per_prompt
    n = seq_logprobs.shape[0]
    if n % k or rewards.shape != (n,):
        raise ValueError(f"{n} completions and rewards {tuple(rewards.shape)} must be groups of samples_per_prompt={k}")
    m = mask.float()
    ref_seq = (ref_token_logprobs * m).sum(-1)
    kl_seq = (seq_logprobs.detach() - ref_seq).float()
    shaped = rewards.float() - cfg.kl_coef * kl_seq if cfg.kl_mode == "reward" else rewards.float()
    adv = (shaped.view(-1, k) - leave_one_out_baseline(shaped.view(-1, k))).reshape(-1)
    if cfg.normalize_advantages:
        adv = adv / (adv.std() + 1e-8)
    if behaviour_logprobs is None:
        rho = torch.ones_like(adv)
    else:
        rho = truncated_importance_weights(seq_logprobs.float(), behaviour_logprobs.float(), cfg.importance_clip)
    loss = -(rho * adv.detach() * seq_logprobs).mean()
    if cfg.kl_mode == "loss":
        delta = (ref_token_logprobs - token_logprobs) * m
        k3 = (torch.exp(delta) - delta - 1) * m
        loss = loss + cfg.kl_coef * (rho * k3.sum(-1)).mean()
    return loss, {
        "loss": loss.item(),
        "reward": rewards.float().mean().item(),
        "kl": kl_seq.mean().item(),
        "shaped_reward": shaped.mean().item(),
        "length": m.sum(-1).mean().item(),
        "importance_weight": rho.mean().item(),
    }


class PGUpdate:
    """REINFORCE with a leave-one-out baseline and a KL penalty to the reference: ``K`` policy
    samples per prompt, scored by the learner (with gradient) and by the served reference."""

    def __init__(self, cfg, learner_policy, checkpoint: Path | None = None):
        self.cfg, self.policy, self.server = cfg, learner_policy, None

    def requests(self) -> list[Request]:
        return [Request("policy", self.cfg.pg.samples_per_prompt)]

    def served_models(self) -> dict[str, Any]:
        return {}

    def loss(self, batch: list[Group]) -> tuple[torch.Tensor, dict[str, float]]:
        k = self.cfg.pg.samples_per_prompt
        prompts = [g.prompt_tokens for g in batch for _ in range(k)]
        completions = [c.tokens for g in batch for c in g.completions]
        rewards = torch.from_numpy(np.concatenate([g.rewards for g in batch]))
        ref = self.server.score("reference", prompts, completions).result()
        scores = self.policy.score(prompts, completions)
        mu = behaviour_logprobs([c for g in batch for c in g.completions]).to(scores.sequence_logprobs.device)
        loss, logs = rloo_loss(scores.sequence_logprobs, scores.token_logprobs, ref.token_logprobs.to(scores.token_logprobs.device),
                               scores.mask, rewards, self.cfg.pg, mu)
        return loss, {**logs, "entropy": mean_entropy(scores)}

    def after_update(self, step: int) -> None:
        pass

    def save(self, path: Path) -> None:
        pass
