"""IMPALA: actor-critic with V-trace off-policy correction (Espeholt et al. 2018).

Loss on a batch of unrolls (time-major, T transitions, B environments)::

    ρ_t      = π(a_t|x_t) / μ(a_t|x_t)                       (μ: the behaviour policy at inference)
    v_s, A_s = vtrace(log π, log μ, r, γ_t, V, V(x_T))        (seedrl.ops.vtrace, no gradient)
    L        = − mean_t,b[ log π(a_t|x_t) · A_t ]
               + baseline_cost · ½ · mean_t,b[ (v_t − V(x_t))² ]
               − entropy_cost · mean_t,b[ H(π(·|x_t)) ]

with γ_t = γ·(1 − terminal_{t+1}). An episode that ends by a time limit is
not a terminal: its last transition bootstraps from V(final observation),
passed to V-trace as ``truncation_bootstrap_values``. Rewards are clipped to
[−reward_clip, reward_clip] in the loss only (Atari: 1); the environments
report raw scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from seedrl.ops import vtrace
from seedrl.runtime.unrolls import Unroll


@dataclass
class ImpalaConfig:
    """V-trace actor-critic hyper-parameters (SEED RL's defaults where they exist)."""

    discount: float = field(default=0.99, metadata={"help": "γ", "min": 0.0, "max": 1.0})
    lambda_: float = field(default=1.0, metadata={"help": "V-trace λ", "min": 0.0, "max": 1.0})
    clip_rho: float = field(default=1.0, metadata={"help": "ρ̄, clip of importance weights in δ", "min_exclusive": 0.0})
    clip_c: float = field(default=1.0, metadata={"help": "c̄, clip of the trace coefficients", "min_exclusive": 0.0})
    clip_pg_rho: float = field(default=1.0, metadata={"help": "ρ̄_pg, clip in the policy-gradient advantage", "min_exclusive": 0.0})
    baseline_cost: float = field(default=0.5, metadata={"help": "weight of the value loss", "min": 0.0})
    entropy_cost: float = field(default=0.01, metadata={"help": "weight of the entropy bonus", "min": 0.0})
    reward_clip: float | None = field(default=None, metadata={"help": "clip rewards to ±this in the loss (Atari: 1.0); null = none"})


class ImpalaTerms(NamedTuple):
    """The pieces of the IMPALA loss of one batch (tensors keep their graph; see :func:`impala_terms`)."""

    pg_loss: torch.Tensor  #: − mean[ log π(a_t|x_t) · A_t ]
    baseline_loss: torch.Tensor  #: ½ mean[ (v_t − V(x_t))² ] (not yet times baseline_cost)
    entropy: torch.Tensor  #: mean[ H(π(·|x_t)) ] (not yet times entropy_cost)
    logits: torch.Tensor  #: [T + 1, B, A] learner logits
    values: torch.Tensor  #: [T + 1, B] learner values
    target_logp: torch.Tensor  #: [T, B] log π(a_t|x_t)
    behaviour_logp: torch.Tensor  #: [T, B] log μ(a_t|x_t), recorded by inference
    pg_advantages: torch.Tensor  #: [T, B] V-trace advantages A_t (no gradient)
    vs: torch.Tensor  #: [T, B] V-trace value targets (no gradient)
    rewards: torch.Tensor  #: [T, B] rewards as the loss sees them (clipped)
    discounts: torch.Tensor  #: [T, B] γ_t = γ·(1 − terminal_{t+1})

    def weighted(self, cfg: ImpalaConfig) -> dict[str, torch.Tensor]:
        """The three summands of the loss: ``pg``, ``baseline`` (× baseline_cost), ``entropy`` (× −entropy_cost)."""
        return {"pg": self.pg_loss, "baseline": cfg.baseline_cost * self.baseline_loss,
                "entropy": -cfg.entropy_cost * self.entropy}


class PolicyOutputs(NamedTuple):
    """The learner's forward pass over one batch of unrolls (tensors keep their graph)."""

    logits: torch.Tensor  #: [T + 1, B, A]
    values: torch.Tensor  #: [T + 1, B]
    log_pi: torch.Tensor  #: [T, B, A] log π(·|x_t)
    target_logp: torch.Tensor  #: [T, B] log π(a_t|x_t)
    behaviour_logp: torch.Tensor  #: [T, B] log μ(a_t|x_t), recorded by inference

    def entropy(self) -> torch.Tensor:
        """mean_t,b[ H(π(·|x_t)) ]."""
        return mean_entropy(self.log_pi)


def mean_entropy(log_pi: torch.Tensor) -> torch.Tensor:
    """mean over all leading axes of H(π) = −Σ_a π(a) log π(a), from ``log_pi [..., A]``."""
    return -(log_pi.exp() * log_pi).sum(-1).mean()


def taken_log_probs(logits: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log π(·|x) [..., A], log π(a|x) [...])`` from ``logits [..., A]`` and the taken actions ``action [...]``."""
    log_pi = F.log_softmax(logits, dim=-1)
    return log_pi, log_pi.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)


def policy_outputs(model: torch.nn.Module, batch: Unroll) -> PolicyOutputs:
    """The model's logits and values over ``batch`` and the log-probabilities of the taken actions."""
    a = {k: torch.from_numpy(batch.arrays[k]) for k in ("obs", "first", "prev_action", "prev_reward", "action", "logp")}
    logits, values, _ = model.unroll(a["obs"], batch.state0, a["first"], a["prev_action"], a["prev_reward"])
    logits, values = logits.float(), values.float()
    log_pi, target_logp = taken_log_probs(logits[:-1], a["action"][:-1])
    return PolicyOutputs(logits, values, log_pi, target_logp, a["logp"][:-1].float())


def impala_terms(model: torch.nn.Module, batch: Unroll, cfg: ImpalaConfig) -> ImpalaTerms:
    """The loss terms of one learner batch (what :func:`impala_loss` weighs and sums)."""
    a = {k: torch.from_numpy(v) for k, v in batch.arrays.items()}
    out = policy_outputs(model, batch)
    values, target_logp = out.values, out.target_logp
    rewards = a["reward"][1:].float()
    if cfg.reward_clip is not None:
        rewards = rewards.clamp(-cfg.reward_clip, cfg.reward_clip)
    discounts = cfg.discount * (~a["terminated"][1:]).float()
    truncated = a["truncated"][1:]
    trunc_values = _truncation_values(model, batch, values)
    behaviour_logp = out.behaviour_logp
    targets = vtrace(
        target_log_probs=target_logp,
        behaviour_log_probs=behaviour_logp,
        rewards=rewards,
        discounts=discounts,
        values=values[:-1],
        bootstrap_value=values[-1],
        clip_rho_threshold=cfg.clip_rho,
        clip_c_threshold=cfg.clip_c,
        clip_pg_rho_threshold=cfg.clip_pg_rho,
        lambda_=cfg.lambda_,
        truncated=truncated,
        truncation_bootstrap_values=trunc_values,
    )
    return ImpalaTerms(
        pg_loss=-(target_logp * targets.pg_advantages).mean(),
        baseline_loss=0.5 * ((targets.vs - values[:-1]) ** 2).mean(),
        entropy=out.entropy(),
        logits=out.logits,
        values=values,
        target_logp=target_logp,
        behaviour_logp=behaviour_logp,
        pg_advantages=targets.pg_advantages,
        vs=targets.vs,
        rewards=rewards,
        discounts=discounts,
    )


def impala_loss(model: torch.nn.Module, batch: Unroll, cfg: ImpalaConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """The IMPALA loss of one learner batch, and its logged terms."""
    t = impala_terms(model, batch, cfg)
    loss = sum(t.weighted(cfg).values())
    with torch.no_grad():
        log_rho = t.target_logp - t.behaviour_logp
        rho = log_rho.exp()
    return loss, {
        "loss": loss.item(),
        "pg_loss": t.pg_loss.item(),
        "baseline_loss": t.baseline_loss.item(),
        "entropy": t.entropy.item(),
        # E_μ[ρ] = Σ_a π(a|x) = 1 for any π: mean_rho stays ~1 however far π moves from μ.
        # How far it moved: the mean |log ρ| and the share of ρ cut by clip_rho.
        "mean_rho": float(rho.mean()),
        "mean_abs_log_rho": float(log_rho.abs().mean()),
        "rho_clipped": float((rho > cfg.clip_rho).float().mean()),
        "value_mean": t.values.mean().item(),
    }


def _truncation_values(model: torch.nn.Module, batch: Unroll, values: torch.Tensor) -> torch.Tensor:
    """V(final observation) at truncated transitions (zeros elsewhere, where V-trace ignores them).

    Entry ``(t, n)`` of ``batch.final_obs`` is the last observation of an
    episode cut by a time limit on the transition into entry t, i.e.
    transition t − 1. It is evaluated with a fresh recurrent state (exact for
    feed-forward policies; for recurrent ones an approximation of the state
    the episode would have carried).
    """
    out = torch.zeros_like(values[1:])
    if not batch.final_obs:
        return out
    keys = sorted(batch.final_obs)
    obs = torch.from_numpy(np.stack([batch.final_obs[k] for k in keys]))
    n = len(keys)
    with torch.no_grad():
        _, v, _ = model.step(
            obs,
            model.initial_state(n),
            torch.ones(n, dtype=torch.bool),
            torch.zeros(n, *batch.arrays["action"].shape[2:], dtype=torch.from_numpy(batch.arrays["action"][:1, :1]).dtype),
            torch.zeros(n),
        )
    for (t, env), value in zip(keys, v.float()):
        out[t - 1, env] = value
    return out
