"""RLOO with a KL penalty: closed forms and convergence to π* ∝ π_ref·exp(r/β) on a bandit."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from seedrl.agents.pg import PGConfig, leave_one_out_baseline, rloo_loss


@given(st.lists(st.lists(st.floats(-5, 5), min_size=4, max_size=4), min_size=1, max_size=5))
def test_leave_one_out_baseline_is_the_mean_of_the_others(rows):
    r = torch.tensor(rows, dtype=torch.float64)
    b = leave_one_out_baseline(r)
    for p in range(r.shape[0]):
        for i in range(4):
            others = [r[p, j] for j in range(4) if j != i]
            assert torch.isclose(b[p, i], sum(others) / 3, atol=1e-12)


def test_baseline_needs_two_samples():
    with pytest.raises(ValueError, match="K >= 2"):
        leave_one_out_baseline(torch.zeros(3, 1))


def _bandit(kl_mode: str, beta: float, steps: int = 3000, k: int = 8, seed: int = 0) -> torch.Tensor:
    """Completions are single tokens of a 4-token vocabulary: exact optimum known."""
    torch.manual_seed(seed)
    ref_logits = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1]))
    reward = torch.tensor([0.0, 1.0, 0.5, 2.0])
    logits = ref_logits.clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=0.02)
    cfg = PGConfig(samples_per_prompt=k, kl_coef=beta, kl_mode=kl_mode)
    for _ in range(steps):
        logp = torch.log_softmax(logits, -1)
        y = torch.multinomial(logp.exp().detach(), 16 * k, replacement=True)
        tok = logp[y][:, None]
        ref_tok = torch.log_softmax(ref_logits, -1)[y][:, None]
        loss, _ = rloo_loss(tok[:, 0], tok, ref_tok, torch.ones_like(tok, dtype=torch.bool), reward[y], cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
    target = torch.softmax(ref_logits + reward / beta, -1)
    return torch.softmax(logits.detach(), -1), target


def test_reward_mode_converges_to_the_exponential_tilt():
    got, target = _bandit("reward", beta=1.0)
    assert torch.allclose(got, target, atol=0.03), (got, target)


def _forward_kl_optimum(ref: torch.Tensor, reward: torch.Tensor, beta: float) -> torch.Tensor:
    """argmax E_π[r] − β·KL(π_ref‖π): π = β·ref/(λ − r), λ > max r found by bisection."""
    lo, hi = reward.max().item() + 1e-9, reward.max().item() + beta * 10
    for _ in range(200):
        lam = (lo + hi) / 2
        total = (beta * ref / (lam - reward)).sum()
        lo, hi = (lam, hi) if total > 1 else (lo, lam)
    return beta * ref / (lam - reward)


def test_loss_mode_k3_optimises_the_forward_kl():
    got, _ = _bandit("loss", beta=1.0)
    ref = torch.tensor([0.4, 0.3, 0.2, 0.1])
    target = _forward_kl_optimum(ref, torch.tensor([0.0, 1.0, 0.5, 2.0]), 1.0)
    assert torch.allclose(got, target, atol=0.03), (got, target)


def test_gradient_is_the_reinforce_estimator():
    torch.manual_seed(1)
    seq = torch.randn(8, requires_grad=True)
    rewards = torch.randn(8)
    zeros = torch.zeros(8, 1)
    loss, _ = rloo_loss(seq, zeros, zeros, torch.ones(8, 1, dtype=torch.bool), rewards, PGConfig(samples_per_prompt=4, kl_coef=0.0))
    loss.backward()
    adv = (rewards.view(2, 4) - leave_one_out_baseline(rewards.view(2, 4))).reshape(-1)
    assert torch.allclose(seq.grad, -adv / 8)


def test_group_size_mismatch_is_an_error():
    z = torch.zeros(6, 1)
    with pytest.raises(ValueError, match="samples_per_prompt=4"):
        rloo_loss(torch.zeros(6), z, z, z.bool(), torch.zeros(6), PGConfig(samples_per_prompt=4))
