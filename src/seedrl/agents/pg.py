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
  ``Δ = log π_ref(y_t) − log π(y_t)`` (GRPO's choice: its *value* is an
  unbiased, non-negative estimate of KL(π‖π_ref), but its pathwise gradient
  on samples from π is ``E_π[(1 − π_ref/π) ∇log π] = ∇ KL(π_ref ‖ π)``, the
  *forward* KL). So this mode maximises ``E[r] − β·KL(π_ref ‖ π)``, whose
  optimum is ``π*(y) = β·π_ref(y) / (λ − r(y))`` with λ normalising, not the
  exponential tilt. Both fixed points are tested.

Baseline: the mean of the other K − 1 rewards of the same prompt (leave one
out), which keeps the estimator unbiased. Loss (to minimise)::

    L = − mean_i [ (R_i − b_i) · log π(y_i) ]   (+ β · mean_i Σ_t k3_{i,t} in "loss" mode)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PGConfig:
    """REINFORCE-LOO with a KL penalty to the reference policy."""

    samples_per_prompt: int = field(default=4, metadata={"help": "K completions per prompt (>= 2 for the baseline)", "min": 2})
    kl_coef: float = field(default=0.05, metadata={"help": "β, weight of KL(π ‖ π_ref)", "min": 0.0})
    kl_mode: str = field(default="reward", metadata={"help": "reward: penalty in the reward; loss: k3 estimator in the loss", "choices": ["reward", "loss"]})
    normalize_advantages: bool = field(default=False, metadata={"help": "divide advantages by their batch std"})


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
) -> tuple[torch.Tensor, dict[str, float]]:
    """The RLOO loss of ``P·K`` completions grouped by prompt (rows p·K .. p·K+K−1).

    Args:
        seq_logprobs: ``[P·K]`` log π(y_i), differentiable.
        token_logprobs: ``[P·K, L]`` per-token log π (differentiable; used in "loss" mode).
        ref_token_logprobs: ``[P·K, L]`` per-token log π_ref (no gradient).
        mask: ``[P·K, L]`` completion tokens.
        rewards: ``[P·K]`` task rewards.
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
    loss = -(adv.detach() * seq_logprobs).mean()
    if cfg.kl_mode == "loss":
        delta = (ref_token_logprobs - token_logprobs) * m
        k3 = (torch.exp(delta) - delta - 1) * m
        loss = loss + cfg.kl_coef * k3.sum(-1).mean()
    return loss, {
        "loss": loss.item(),
        "reward": rewards.float().mean().item(),
        "kl": kl_seq.mean().item(),
        "shaped_reward": shaped.mean().item(),
        "length": m.sum(-1).mean().item(),
    }
