"""GAE(λ) / Monte-Carlo returns of padded token episodes and per-token KL reward shaping:
hand-computed values on a padded 3-and-4-token example, brute force on random ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seedrl.ops import kl_shaped_rewards, masked_gae

# time-major [T = 4, B = 2]: column 0 has 3 tokens (the 4th is padding holding junk), column 1 has 4
MASK = torch.tensor([[1, 1], [1, 1], [1, 1], [0, 1]], dtype=torch.bool)
REWARDS = torch.tensor([[0.0, -0.1], [0.0, 0.2], [1.0, 0.0], [9.0, 2.0]], dtype=torch.float64)
VALUES = torch.tensor([[0.5, 1.0], [0.2, 0.0], [0.4, 0.5], [7.0, -1.0]], dtype=torch.float64)


def test_monte_carlo_returns_by_hand():
    adv, ret = masked_gae(rewards=REWARDS, values=VALUES, mask=MASK, gamma=1.0, lambda_=1.0)
    assert torch.allclose(ret, torch.tensor([[1.0, 2.1], [1.0, 2.2], [1.0, 2.0], [0.0, 2.0]], dtype=torch.float64))
    assert torch.allclose(adv, torch.tensor([[0.5, 1.1], [0.8, 2.2], [0.6, 1.5], [0.0, 3.0]], dtype=torch.float64))


def test_gae_by_hand():
    # γ = 0.9, λ = 0.5 (γλ = 0.45). Column 0: δ = (0.9·0.2 − 0.5, 0.9·0.4 − 0.2, 1 − 0.4) = (−0.32, 0.16, 0.6)
    # (the step after the last token is terminal), A_1 = 0.16 + 0.45·0.6, A_0 = −0.32 + 0.45·0.43.
    # Column 1: δ = (−1.1, 0.65, −1.4, 3), A = (−0.817625, 0.6275, −0.05, 3).
    adv, ret = masked_gae(rewards=REWARDS, values=VALUES, mask=MASK, gamma=0.9, lambda_=0.5)
    want_adv = torch.tensor([[-0.1265, -0.817625], [0.43, 0.6275], [0.6, -0.05], [0.0, 3.0]], dtype=torch.float64)
    assert torch.allclose(adv, want_adv)
    assert torch.allclose(ret, torch.where(MASK, want_adv + VALUES, 0))


def test_td0_is_the_one_step_error():
    adv, _ = masked_gae(rewards=REWARDS, values=VALUES, mask=MASK, gamma=0.9, lambda_=0.0)
    assert torch.allclose(adv[:3, 0], torch.tensor([-0.32, 0.16, 0.6], dtype=torch.float64))


def _brute_gae(r, v, length, gamma, lam):
    adv = np.zeros(len(r))
    for t in range(length):
        total = 0.0
        for k in range(t, length):
            v_next = v[k + 1] if k + 1 < length else 0.0
            total += (gamma * lam) ** (k - t) * (r[k] + gamma * v_next - v[k])
        adv[t] = total
    return adv


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.floats(0, 1), st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_gae_matches_brute_force(T, B, gamma, lam, seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, size=B)
    mask = torch.from_numpy(np.arange(T)[:, None] < lengths[None])
    r, v = rng.normal(size=(T, B)), rng.normal(size=(T, B))
    adv, ret = masked_gae(rewards=torch.from_numpy(r), values=torch.from_numpy(v), mask=mask, gamma=gamma, lambda_=lam)
    for b in range(B):
        want = _brute_gae(r[:, b], v[:, b], lengths[b], gamma, lam)
        np.testing.assert_allclose(adv[:, b].numpy(), want, atol=1e-9)
        if lam == 1.0:  # Monte Carlo: the values are only a baseline
            mc = [sum(gamma ** (k - t) * r[k, b] for k in range(t, lengths[b])) for t in range(lengths[b])]
            np.testing.assert_allclose(ret[: lengths[b], b].numpy(), mc, atol=1e-9)


def test_gae_refuses_bad_input():
    with pytest.raises(ValueError, match="prefix"):
        masked_gae(rewards=REWARDS, values=VALUES, mask=torch.tensor([[1, 1], [0, 1], [1, 1], [0, 1]]).bool())
    with pytest.raises(ValueError, match="lambda_"):
        masked_gae(rewards=REWARDS, values=VALUES, mask=MASK, lambda_=1.5)
    with pytest.raises(ValueError, match="values"):
        masked_gae(rewards=REWARDS, values=VALUES[:3], mask=MASK)


def test_kl_shaped_rewards_by_hand():
    # column 0: 3 tokens, R = 2, α = 0.25: −α·(log π − log π_a) = (−0.125, 0, 0.25), + (1 − α)·R = 1.5 at t = 2
    # column 1: 1 token, R = −1: −0.25·0.2 + 0.75·(−1) = −0.8
    logp = torch.tensor([[-1.0, -0.2], [-0.5, -3.0], [-2.0, -3.0], [-9.0, -3.0]])
    anchor = torch.tensor([[-1.5, -0.4], [-0.5, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    mask = torch.tensor([[1, 1], [1, 0], [1, 0], [0, 0]], dtype=torch.bool)
    r = kl_shaped_rewards(rewards=torch.tensor([2.0, -1.0]), logprobs=logp, anchor_logprobs=anchor, mask=mask, alpha=0.25)
    assert torch.allclose(r, torch.tensor([[-0.125, -0.8], [0.0, 0.0], [1.75, 0.0], [0.0, 0.0]]))
    assert not r.requires_grad


def test_kl_shaped_return_is_the_regularised_objective():
    """Summed over a sequence: (1 − α)·R − α·log π(y)/π_a(y)."""
    g = torch.Generator().manual_seed(0)
    logp, anchor = -torch.rand(5, 3, generator=g), -torch.rand(5, 3, generator=g)
    mask = torch.arange(5)[:, None] < torch.tensor([5, 2, 1])[None]
    R = torch.tensor([0.3, -1.0, 2.0])
    r = kl_shaped_rewards(rewards=R, logprobs=logp, anchor_logprobs=anchor, mask=mask, alpha=0.4)
    want = 0.6 * R - 0.4 * ((logp - anchor) * mask).sum(0)
    assert torch.allclose(r.sum(0), want)


def test_kl_shaping_refuses_empty_sequences_and_bad_alpha():
    z = torch.zeros(2, 1)
    with pytest.raises(ValueError, match="at least one valid token"):
        kl_shaped_rewards(rewards=torch.zeros(1), logprobs=z, anchor_logprobs=z, mask=torch.zeros(2, 1, dtype=torch.bool), alpha=0.1)
    with pytest.raises(ValueError, match="alpha"):
        kl_shaped_rewards(rewards=torch.zeros(1), logprobs=z, anchor_logprobs=z, mask=torch.ones(2, 1, dtype=torch.bool), alpha=2.0)
