"""Best-of-N quantities for BOND / J-BOND (Sessa et al., 2024, arXiv 2407.14622).

A reference policy π_ref over completions y, a reward r. With
``p_≤(y) = P_{y'~π_ref}[r(y') ≤ r(y)]`` and ``p_<(y)`` likewise with ``<``,
the Best-of-N distribution (ties split in proportion to π_ref) is

    π_BoN(y) = π_ref(y) · (p_≤(y)^N − p_<(y)^N) / (p_≤(y) − p_<(y)),

which is ``p_≤^N − p_<^N`` per reward level and, with distinct rewards,
``π_ref · p_≤^{N−1} · Σ_{i=1..N} (p_</p_≤)^{i−1}``. Properties used by the
tests: Best-of-n applied M times is Best-of-n^M, and
``KL(π_BoN ‖ π_ref) ≤ log N − (N−1)/N`` (equality for continuous rewards).

The BOND backward term is a policy gradient on the reward
``log π_BoN(y)/π_ref(y)``; with a Monte Carlo quantile ``p̂_≤`` from k
reference samples it is approximated by ``(N−1)·log p̂_≤(y)`` (dropping the
Σ term), whose backward-KL optimum is ``π_ref·p_≤^{N−1}/Z`` rather than
π_BoN; :func:`bon_log_ratio` gives the exact value for tabular checks.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "best_of_n_probs",
    "bon_kl_upper_bound",
    "bon_log_ratio",
    "bon_pool_weights",
    "bond_reward",
    "jbond_reward",
    "quantiles",
    "quantile_estimate",
]


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    return n


def quantiles(ref_probs: torch.Tensor, rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``(p_≤, p_<)`` of every completion of a categorical reference ``[..., K]``."""
    if ref_probs.shape != rewards.shape:
        raise ValueError(f"ref_probs.shape = {tuple(ref_probs.shape)} and rewards.shape = {tuple(rewards.shape)} differ")
    le = (rewards[..., None, :] <= rewards[..., :, None]).to(ref_probs.dtype)
    lt = (rewards[..., None, :] < rewards[..., :, None]).to(ref_probs.dtype)
    p = ref_probs[..., None, :]
    return (le * p).sum(-1), (lt * p).sum(-1)


def best_of_n_probs(ref_probs: torch.Tensor, rewards: torch.Tensor, n: int) -> torch.Tensor:
    """π_BoN over the K completions of a categorical reference ``[..., K]`` (ties handled)."""
    _check_n(n)
    p_le, p_lt = quantiles(ref_probs, rewards)
    tie = p_le - p_lt
    safe = torch.where(tie > 0, tie, torch.ones_like(tie))
    return torch.where(ref_probs > 0, ref_probs * (p_le**n - p_lt**n) / safe, torch.zeros_like(ref_probs))


def bon_kl_upper_bound(n: int) -> float:
    """``log N − (N − 1)/N``: KL(π_BoN ‖ π_ref) for continuous rewards, a bound otherwise."""
    return math.log(_check_n(n)) - (n - 1) / n


def bon_log_ratio(p_le: torch.Tensor, p_lt: torch.Tensor, n: int) -> torch.Tensor:
    """Exact ``log π_BoN(y)/π_ref(y) = log((p_≤^N − p_<^N)/(p_≤ − p_<))``, stably.

    Written as ``(N−1)·log p_≤ + log Σ_{j<N} s^j`` with ``s = p_</p_≤``; the
    geometric sum is ``−expm1(N·log1p(−d))/d`` for ``d = 1 − s > 0`` and ``N`` at
    ``d = 0`` (the continuous limit ``log N + (N−1) log p_≤``).
    """
    _check_n(n)
    if torch.any(p_le <= 0) or torch.any(p_lt < 0) or torch.any(p_lt > p_le):
        raise ValueError("bon_log_ratio needs 0 <= p_< <= p_<= and p_<= > 0")
    if n == 1:
        return torch.zeros_like(p_le)
    d = ((p_le - p_lt) / p_le).clamp(max=1.0)
    safe = torch.where(d > 0, d, torch.ones_like(d))
    geo = torch.where(d > 0, -torch.expm1(n * torch.log1p(-d.clamp(max=1 - 1e-300))) / safe, torch.full_like(d, float(n)))
    geo = torch.where(d >= 1.0, torch.ones_like(d), geo)
    return (n - 1) * torch.log(p_le) + torch.log(geo)


def quantile_estimate(reward: torch.Tensor, ref_rewards: torch.Tensor, floor: float | None = None) -> torch.Tensor:
    """Monte Carlo ``p̂_≤(y) = (1/k) Σ_i 1[r(y_i) ≤ r(y)]`` from k reference samples ``[..., k]``.

    Unbiased for p_≤. ``floor`` (default ``1/(k+1)``) keeps ``log p̂_≤`` finite
    when no reference sample scored at or below ``y``.
    """
    if ref_rewards.shape[:-1] != reward.shape:
        raise ValueError(f"ref_rewards.shape = {tuple(ref_rewards.shape)} must be reward.shape + (k,) = {tuple(reward.shape)} + (k,)")
    k = ref_rewards.shape[-1]
    p = (ref_rewards <= reward[..., None]).to(torch.float64 if reward.dtype == torch.float64 else torch.float32).mean(-1)
    return p.clamp(min=1.0 / (k + 1) if floor is None else floor)


def bond_reward(p_hat_le: torch.Tensor, n: int) -> torch.Tensor:
    """The BOND backward-term reward ``(N − 1)·log p̂_≤(y)`` (no gradient)."""
    _check_n(n)
    return ((n - 1) * torch.log(p_hat_le)).detach()


def jbond_reward(reward: torch.Tensor, anchor_reward_1: torch.Tensor, anchor_reward_2: torch.Tensor) -> torch.Tensor:
    """J-BOND's backward reward: ``−log 16`` if ``r(y) < min(r(y'_1), r(y'_2))`` else 0."""
    worse = reward < torch.minimum(anchor_reward_1, anchor_reward_2)
    return torch.where(worse, torch.full_like(reward, -math.log(16.0), dtype=torch.float32), torch.zeros_like(reward, dtype=torch.float32))


def bon_pool_weights(pool_rewards: torch.Tensor, n: int) -> torch.Tensor:
    """Chance ``[P, m]`` that each of ``m`` i.i.d. samples is the Best-of-n pick of ``n`` of them
    drawn without replacement (ties broken uniformly).

    ``w_j = (C(c_≤, n) − C(c_<, n)) / (C(m, n)·c_=)`` with ``c_≤, c_<, c_=`` the numbers of pool
    rewards ``≤, <, =`` ``r_j``. Every size-``n`` subset of i.i.d. samples is itself i.i.d., so
    ``Σ_j w_j f(y_j)`` is an unbiased estimate of ``E_{y~Bo_n}[f(y)]`` (a U-statistic, the
    Rao-Blackwellisation of "pick the best of the first n"). Rows sum to 1."""
    _check_n(n)
    m = pool_rewards.shape[-1]
    if n > m:
        raise ValueError(f"n={n} exceeds the pool of {m} samples")
    c_le = (pool_rewards[..., None, :] <= pool_rewards[..., :, None]).sum(-1)
    c_lt = (pool_rewards[..., None, :] < pool_rewards[..., :, None]).sum(-1)
    total = math.comb(m, n)
    table = torch.tensor([math.comb(c, n) / total for c in range(m + 1)], dtype=torch.float64)
    return (table[c_le] - table[c_lt]) / (c_le - c_lt).to(torch.float64)
