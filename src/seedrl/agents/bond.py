"""BOND and J-BOND: distil Best-of-N of an anchor policy into the policy
(Sessa et al., 2024, arXiv 2407.14622).

Let ``π_a`` be the anchor (the fixed reference for plain BOND), ``r`` the reward
and ``π_BoN = Bo_n(π_a)`` the distribution of the best of ``n`` anchor samples
(:mod:`seedrl.ops.bond`). BOND minimises the Jeffreys divergence

    J_β(π) = (1 − β)·KL(π_BoN ‖ π) + β·KL(π ‖ π_BoN).

* **Forward term** ``KL(π_BoN ‖ π)``: its gradient is ``−E_{y~π_BoN}[∇ log π(y)]``,
  so it is maximum likelihood of the best of ``n`` anchor samples (ties broken
  uniformly at random among the tied samples, which is exactly ``π_BoN``).
  ``forward_estimator: pool`` instead weights *every* anchor sample by its chance of
  being the best of ``n`` drawn from the pool (:func:`~seedrl.ops.bond.bon_pool_weights`):
  the same expectation, lower variance (with binary rewards a tie no longer sends the
  whole forward gradient to one arbitrary sample).
* **Backward term** ``KL(π ‖ π_BoN) = E_{y~π}[log π(y) − log π_a(y) − log π_BoN(y)/π_a(y)]``:
  a policy gradient on ``y ~ π`` with the reward
  ``R(y) = r_B(y) − (log π(y) − log π_a(y))`` where ``r_B`` estimates
  ``log π_BoN(y)/π_a(y)``:

  - ``log_quantile``: ``(n − 1)·log p̂_≤(y)`` from ``k`` anchor samples (floored);
    the backward-only objective ``E_π[E[r_B(y)] − log π(y)/π_a(y)]`` is maximised by
    ``π ∝ π_a·exp(E[(n − 1)·log p̂_≤(y)])`` (expectation over the ``k`` anchor
    samples, ``k·p̂ ~ Bin(k, p_≤(y))``), not ``π_a·E[p̂^{n−1}]``. Its ``k → ∞``
    limit ``π_a·p_≤^{n−1}/Z`` is ``π_BoN`` only approximately: for distinct rewards
    ``π_BoN(y)/(n·π_a(y)·p_≤^{n−1}) = (p_≤^n − p_<^n)/(n·π_a·p_≤^{n−1}) → 1`` as ``π_a(y) → 0``;
  - ``jbond``: J-BOND's ``−log 16`` if ``y`` is worse than *both* of two anchor
    samples, else 0 (``n = 2``); in expectation ``−log 16·(1 − p_≤(y))²``, so the
    backward optimum is ``π ∝ π_a·16^{−(1−p_≤)²}``;
  - ``exact`` (tabular only): ``log((p_≤^n − p_<^n)/(p_≤ − p_<))``, whose backward
    optimum is exactly ``π_BoN``.

  A baseline is subtracted: the mean of the other policy samples of the same prompt
  (leave one out) when there are several per prompt, else of the other prompts'.
* **Anchor regulariser** ``γ·KL(π ‖ π_a)`` (J-BOND): a further policy-gradient
  penalty ``−γ·(log π(y) − log π_a(y))`` in the advantage. Its gradient is that of
  ``+γ·KL`` in the loss, so it *reduces* the KL to the anchor (tested).

The loss, per batch of ``P`` prompts with ``S`` policy samples each::

    L = −(1 − β)·mean_p log π(y*_p) − mean_{p,s} ρ̄_{p,s}·A_{p,s}·log π(y_{p,s})
    A = β·(r_B − Δ) − γ·Δ − baseline,   Δ = log π(y) − log π_a(y)  (no gradient)

**Off-policy correction.** The policy samples come from the actors' lagging
weights ``μ``; with their behaviour log-probs, ``ρ̄ = min(c, π(y)/μ(y))`` per
sequence (:func:`seedrl.ops.truncated_importance_weights`, ``c =
importance_clip``) turns the backward policy gradient into the on-policy one in
expectation (exactly when untruncated; the leave-one-out baseline depends only
on the other samples, so it stays unbiased). ``ρ̄ = 1`` without behaviour
log-probs. The forward term needs no weight: its samples come from the anchor
itself (for ``ema``/``periodic`` anchors, from the served copy the learner
pushes after each move).

**Anchors.** ``fixed`` keeps ``π_a = π_ref`` (BOND). ``periodic`` copies the policy
into the anchor every ``anchor_every`` updates (iterative BOND: after ``M`` moves
the policy approaches ``Bo_{n^(M+1)}(π_ref)``). ``ema`` moves the anchor's
parameters ``θ_a ← (1 − η)·θ_a + η·θ`` after every update (J-BOND).

:class:`BondUpdate` is the learner step :func:`seedrl.runtime.lm_loop.train_lm` calls
(``algo: bond``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from seedrl.ops.bond import bon_pool_weights, bond_reward, jbond_reward, quantile_estimate
from seedrl.ops.importance import truncated_importance_weights
from seedrl.runtime.lm_updates import Group, Request, behaviour_logprobs, mean_entropy

__all__ = ["ANCHOR_DIR", "BondConfig", "BondUpdate", "anchor_samples_needed", "backward_reward", "best_anchor_index", "bond_loss", "forward_weights",
           "move_anchor", "quantile_of"]


@dataclass
class BondConfig:
    """BOND / J-BOND settings (``bond:`` in a config)."""

    n: int = field(default=4, metadata={"help": "Best-of-n of the anchor that is distilled (J-BOND: 2)", "min": 1})
    quantile_samples: int = field(default=16, metadata={"help": "k anchor samples per prompt for p̂_≤ (log_quantile)", "min": 1})
    beta: float = field(default=0.5, metadata={"help": "Jeffreys weight: 0 = forward KL only, 1 = backward KL only", "min": 0.0, "max": 1.0})
    backward_reward: str = field(default="log_quantile", metadata={
        "help": "log_quantile: (n-1) log p̂_≤; jbond: -log 16 if worse than both anchor samples (n = 2); exact: tabular only",
        "choices": ["log_quantile", "jbond", "exact"]})
    quantile_floor: float | None = field(default=None, metadata={"help": "floor of p̂_≤ before the log (default 1/(k+1))", "min_exclusive": 0.0})
    policy_samples: int = field(default=2, metadata={"help": "policy samples per prompt for the backward term", "min": 1})
    anchor: str = field(default="fixed", metadata={"help": "fixed (BOND), periodic (iterative BOND) or ema (J-BOND)",
                                                   "choices": ["fixed", "periodic", "ema"]})
    anchor_every: int = field(default=100, metadata={"help": "updates between anchor moves (periodic)", "min": 1})
    anchor_ema: float = field(default=0.02, metadata={"help": "η of the EMA anchor", "min_exclusive": 0.0, "max": 1.0})
    anchor_kl_coef: float = field(default=0.0, metadata={"help": "γ, weight of KL(π ‖ π_anchor) (J-BOND regulariser)", "min": 0.0})
    forward_estimator: str = field(default="best", metadata={
        "help": "best: likelihood of the best of the first n anchor samples; pool: every anchor sample weighted by its "
                "chance of being the best of n (same expectation, lower variance)", "choices": ["best", "pool"]})
    importance_clip: float | None = field(default=1.0, metadata={
        "help": "c of the truncated importance weight min(c, π/μ) of the policy samples (policy lag); null = untruncated",
        "min_exclusive": 0.0})

    def validate(self) -> None:
        if self.backward_reward == "jbond" and self.n != 2:
            raise ValueError(f"n: J-BOND's reward compares with two anchor samples, so n must be 2, got {self.n}")


def anchor_samples_needed(cfg: BondConfig) -> int:
    """Anchor samples per prompt: the best-of-n pool and the quantile samples share them."""
    if cfg.backward_reward == "jbond":
        return 2
    if cfg.backward_reward == "log_quantile" and cfg.beta > 0:
        return max(cfg.n, cfg.quantile_samples)
    return cfg.n


def backward_reward(policy_rewards: torch.Tensor, anchor_rewards: torch.Tensor, cfg: BondConfig) -> torch.Tensor:
    """``r_B`` of policy samples ``[P, S]`` from the rewards of the anchor samples ``[P, M]``."""
    if policy_rewards.dim() != 2 or anchor_rewards.dim() != 2 or policy_rewards.shape[0] != anchor_rewards.shape[0]:
        raise ValueError(f"policy_rewards [P, S] and anchor_rewards [P, M] must share P, got "
                         f"{tuple(policy_rewards.shape)} and {tuple(anchor_rewards.shape)}")
    if cfg.backward_reward == "jbond":
        return jbond_reward(policy_rewards, anchor_rewards[:, None, 0], anchor_rewards[:, None, 1])
    if cfg.backward_reward == "exact":
        raise ValueError("backward_reward: 'exact' needs the reference's exact quantiles (tabular); use log_quantile or jbond")
    return bond_reward(quantile_of(policy_rewards, anchor_rewards, cfg), cfg.n)


def quantile_of(policy_rewards: torch.Tensor, anchor_rewards: torch.Tensor, cfg: BondConfig) -> torch.Tensor:
    """``p̂_≤`` ``[P, S]`` of each policy sample against the first ``k`` anchor samples of its prompt (floored)."""
    k = min(cfg.quantile_samples, anchor_rewards.shape[1])
    pool = anchor_rewards[:, None, :k].expand(-1, policy_rewards.shape[1], -1)
    return quantile_estimate(policy_rewards, pool, cfg.quantile_floor)


def forward_weights(anchor_rewards: torch.Tensor, cfg: BondConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Weights ``[P, M]`` of the anchor samples in the forward term (rows sum to 1): one-hot on the
    best of the first n (``best``), or the Best-of-n pick probabilities over the pool (``pool``)."""
    if cfg.forward_estimator == "pool":
        return bon_pool_weights(anchor_rewards, cfg.n).to(torch.float32)
    one_hot = torch.zeros(anchor_rewards.shape, dtype=torch.float32)
    one_hot.scatter_(1, best_anchor_index(anchor_rewards, cfg.n, generator)[:, None], 1.0)
    return one_hot


def best_anchor_index(anchor_rewards: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Index ``[P]`` of the best of the first ``n`` anchor samples, ties broken uniformly at random."""
    pool = anchor_rewards[:, :n].double()
    best = pool.max(dim=1, keepdim=True).values
    noise = torch.rand(pool.shape, generator=generator, dtype=torch.float64)
    return torch.where(pool == best, noise, torch.full_like(noise, -1.0)).argmax(dim=1)


def _baseline(x: torch.Tensor) -> torch.Tensor:
    """Leave-one-out mean within each prompt ``[P, S]`` (S >= 2), else across prompts."""
    p, s = x.shape
    if s >= 2:
        return (x.sum(1, keepdim=True) - x) / (s - 1)
    if p >= 2:
        return (x.sum() - x) / (p - 1)
    return torch.zeros_like(x)


def bond_loss(
    policy_logprobs: torch.Tensor,
    anchor_logprobs: torch.Tensor,
    rewards_b: torch.Tensor,
    forward_logprobs: torch.Tensor,
    forward_weights: torch.Tensor,
    cfg: BondConfig,
    behaviour_logprobs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The Jeffreys BOND loss (module docstring).

    Args:
        policy_logprobs: ``[P, S]`` log π(y) of the policy samples (differentiable).
        anchor_logprobs: ``[P, S]`` log π_a(y) of the same samples (no gradient).
        rewards_b: ``[P, S]`` backward rewards ``r_B`` (:func:`backward_reward`).
        forward_logprobs: ``[P, M]`` log π of the anchor samples (differentiable where weighted).
        forward_weights: ``[P, M]`` their weights in the forward term, rows summing to 1
            (:func:`forward_weights`: one-hot on the best of n, or the pool weights).
        behaviour_logprobs: ``[P, S]`` log μ(y) of the distribution the policy samples were
            drawn from; None = on-policy (weights 1).
    """
    if policy_logprobs.shape != anchor_logprobs.shape or policy_logprobs.shape != rewards_b.shape or policy_logprobs.dim() != 2:
        raise ValueError(f"policy_logprobs {tuple(policy_logprobs.shape)}, anchor_logprobs {tuple(anchor_logprobs.shape)} "
                         f"and rewards_b {tuple(rewards_b.shape)} must all be [P, S]")
    if forward_weights.shape != forward_logprobs.shape or forward_logprobs.shape[:1] != policy_logprobs.shape[:1]:
        raise ValueError(f"forward_weights {tuple(forward_weights.shape)} and forward_logprobs "
                         f"{tuple(forward_logprobs.shape)} must both be [P = {policy_logprobs.shape[0]}, M]")
    beta, gamma = cfg.beta, cfg.anchor_kl_coef
    delta = (policy_logprobs.detach() - anchor_logprobs).float()
    shaped = beta * (rewards_b.float() - delta) - gamma * delta
    adv = (shaped - _baseline(shaped)).detach()
    forward = -(forward_weights.to(forward_logprobs.dtype) * forward_logprobs).sum(1).mean()
    if behaviour_logprobs is None:
        rho = torch.ones_like(adv)
    else:
        rho = truncated_importance_weights(policy_logprobs.float(), behaviour_logprobs.float(), cfg.importance_clip)
    backward = -(rho * adv * policy_logprobs).mean()
    loss = (1 - beta) * forward + backward
    return loss, {
        "loss": float(loss.detach()),
        "forward_nll": float(forward.detach()),
        "backward_reward": float(rewards_b.float().mean()),
        "log_quantile": float(rewards_b.float().mean() / max(cfg.n - 1, 1)) if cfg.backward_reward == "log_quantile"
        else float("nan"),
        "kl_anchor": float(delta.mean()),
        "importance_weight": float(rho.mean()),
    }


@torch.no_grad()
def move_anchor(anchor: Iterable[torch.Tensor], policy: Iterable[torch.Tensor], step: int, cfg: BondConfig) -> bool:
    """Update the anchor's parameters in place after update ``step`` (1-based); True if it moved.

    ``fixed``: never. ``periodic``: copied from the policy every ``anchor_every``
    updates. ``ema``: ``θ_a ← (1 − η)·θ_a + η·θ`` every update."""
    if cfg.anchor == "fixed" or (cfg.anchor == "periodic" and step % cfg.anchor_every):
        return False
    weight = 1.0 if cfg.anchor == "periodic" else cfg.anchor_ema
    for a, p in zip(anchor, policy, strict=True):
        if a.shape != p.shape:
            raise ValueError(f"anchor and policy parameters differ in shape: {tuple(a.shape)} vs {tuple(p.shape)}")
        if a.is_floating_point() and weight < 1.0:
            a.lerp_(p.detach().to(a.dtype), weight)
        else:  # an exact copy (a lerp with weight 1 can be an ulp off)
            a.copy_(p.detach())
    return True


ANCHOR_DIR = "anchor"  # the moving anchor inside a checkpoint folder


class BondUpdate:
    """BOND / J-BOND: forward term on the best anchor sample, backward policy gradient on
    the policy samples, anchor moved after each update as configured."""

    def __init__(self, cfg, learner_policy, checkpoint: Path | None = None):
        """``checkpoint``: the one a resumed run starts from (its saved anchor is restored)."""
        from seedrl.models.lm.policy import LMPolicy

        self.cfg, self.b, self.policy, self.server = cfg, cfg.bond, learner_policy, None
        self.anchor = self.served_anchor = None  # fixed anchor: the reference itself
        if self.b.anchor != "fixed":
            source = cfg.reference or cfg.policy
            if checkpoint is not None and (checkpoint / ANCHOR_DIR).is_dir():
                source = str(checkpoint / ANCHOR_DIR)
            self.anchor = LMPolicy.from_pretrained(source).eval()  # the learner's copy, moved in place
            self.served_anchor = LMPolicy.from_pretrained(source).eval()
        self.anchor_name = "reference" if self.anchor is None else "anchor"

    def requests(self) -> list[Request]:
        return [Request("policy", self.b.policy_samples), Request(self.anchor_name, anchor_samples_needed(self.b))]

    def served_models(self) -> dict[str, Any]:
        return {} if self.served_anchor is None else {"anchor": self.served_anchor}

    def loss(self, batch: list[Group]) -> tuple[torch.Tensor, dict[str, float]]:
        b, p, s = self.b, len(batch), self.b.policy_samples
        prompts = [g.prompt_tokens for g in batch]
        prompts_s = [x for x in prompts for _ in range(s)]
        policy_tokens = [c.tokens for g in batch for c in g.completions]
        pol_r = torch.from_numpy(np.stack([g.rewards for g in batch])).float()
        anc_r = torch.from_numpy(np.stack([g.anchor_rewards for g in batch])).float()
        weights = forward_weights(anc_r, b)
        # (prompt, anchor sample) pairs in the forward term; none when it has no weight (β = 1)
        used = weights.nonzero().tolist() if b.beta < 1 else []
        fwd_prompts = [prompts[i] for i, _ in used]
        fwd_tokens = [batch[i].anchor_completions[j].tokens for i, j in used]
        ref_f = self.server.score("reference", prompts_s, policy_tokens)
        anc_f = ref_f if self.anchor is None else self.server.score("anchor", prompts_s, policy_tokens)
        scores = self.policy.score(prompts_s + fwd_prompts, policy_tokens + fwd_tokens)
        lp = scores.sequence_logprobs
        pol_lp = lp[: p * s].view(p, s)
        fwd_lp = torch.zeros(weights.shape, dtype=lp.dtype, device=lp.device)
        if used:
            fwd_lp = fwd_lp.index_put(tuple(torch.tensor(used, device=lp.device).T), lp[p * s:])
        ref_seq = ref_f.result().sequence_logprobs.to(lp.device).view(p, s)
        anc_seq = anc_f.result().sequence_logprobs.to(lp.device).view(p, s)
        r_b = backward_reward(pol_r, anc_r, b) if b.beta > 0 else torch.zeros_like(pol_r)
        mu = behaviour_logprobs([c for g in batch for c in g.completions]).to(lp.device).view(p, s)
        loss, logs = bond_loss(pol_lp, anc_seq, r_b.to(lp.device), fwd_lp, weights.to(lp.device), b, mu)
        p_hat = quantile_of(pol_r, anc_r, b)
        mask = scores.mask[: p * s].float()
        return loss, {
            **logs,
            "reward": pol_r.mean().item(),
            "anchor_reward": anc_r.mean().item(),
            "best_anchor_reward": (weights * anc_r).sum(1).mean().item(),
            "log_quantile": torch.log(p_hat).mean().item(),
            "kl": (pol_lp.detach() - ref_seq).mean().item(),
            "length": mask.sum(-1).mean().item(),
            "entropy": mean_entropy(scores, slice(0, p * s)),
        }

    def after_update(self, step: int) -> None:
        if self.anchor is not None and move_anchor(self.anchor.parameters(), self.policy.parameters(), step, self.b):
            self.server.update_weights("anchor", self.anchor)

    def save(self, path: Path) -> None:
        if self.anchor is not None:
            self.anchor.model.save_pretrained(path / ANCHOR_DIR)
            self.anchor.tokenizer.save_pretrained(path / ANCHOR_DIR)
