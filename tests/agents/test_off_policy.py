"""Off-policy correction of the language learners, by exact enumeration on a tiny vocabulary.

Completions are two tokens over a 3-token vocabulary (9 sequences), from a
tabular autoregressive policy. The learner's expected gradient with samples
from a lagged behaviour policy μ, weighted by ``min(c, π/μ)`` with ``c = None``,
must equal the on-policy one (and, for the KL-in-reward PG, the exact gradient
of ``J = E_π r − β KL(π‖π_ref)``), computed by enumerating every pair of samples.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from seedrl.agents.bond import BondConfig, bond_loss
from seedrl.agents.pg import PGConfig, rloo_loss
from seedrl.ops import truncated_importance_weights

V = 3
SEQS = torch.tensor(list(itertools.product(range(V), repeat=2)))  # [9, 2]
REWARD = torch.tensor([0.3, -1.0, 2.0, 0.5, 1.5, -0.2, 0.0, 0.8, 1.1], dtype=torch.float64)


def _table(seed: int) -> torch.Tensor:
    return torch.randn(1 + V, V, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def token_logprobs(theta: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
    """``[N, 2]`` log π(y_0) and log π(y_1 | y_0) of the tabular policy."""
    first = torch.log_softmax(theta[0], -1)[seqs[:, 0]]
    second = torch.log_softmax(theta[1 + seqs[:, 0]], -1).gather(1, seqs[:, 1:]).squeeze(1)
    return torch.stack([first, second], 1)


def seq_probs(theta: torch.Tensor) -> torch.Tensor:
    return token_logprobs(theta, SEQS).sum(1).exp()


THETA, LAGGED, REF = _table(0), _table(1), _table(2)


def expected_pg_grad(sample_theta, cfg, corrected: bool, reward=REWARD) -> torch.Tensor:
    """E over pairs (y_a, y_b) ~ sample_theta of ∇ rloo_loss, by enumeration (K = 2, one prompt)."""
    theta = THETA.clone().requires_grad_(True)
    q = seq_probs(sample_theta)
    pairs = torch.tensor(list(itertools.product(range(9), repeat=2)))  # [81, 2]
    total = 0.0
    for a, b in pairs.tolist():
        seqs = SEQS[[a, b]]
        tok = token_logprobs(theta, seqs)
        mu = token_logprobs(sample_theta, seqs).sum(1) if corrected else None
        loss, _ = rloo_loss(tok.sum(1), tok, token_logprobs(REF, seqs), torch.ones(2, 2, dtype=torch.bool),
                            reward[[a, b]], cfg, mu)
        total = total + q[a] * q[b] * loss
    (grad,) = torch.autograd.grad(total, theta)
    return grad


def exact_objective_grad(beta: float) -> torch.Tensor:
    theta = THETA.clone().requires_grad_(True)
    pi = seq_probs(theta)
    log_ratio = token_logprobs(theta, SEQS).sum(1) - token_logprobs(REF, SEQS).sum(1)
    j = (pi * REWARD).sum() - beta * (pi * log_ratio).sum()
    (grad,) = torch.autograd.grad(j, theta)
    return grad


def test_lagged_samples_corrected_give_the_exact_policy_gradient():
    cfg = PGConfig(samples_per_prompt=2, kl_coef=0.3, kl_mode="reward", importance_clip=None)
    want = -exact_objective_grad(0.3)
    corrected = expected_pg_grad(LAGGED, cfg, corrected=True)
    assert torch.allclose(corrected, want, atol=1e-10), (corrected - want).abs().max()
    # the check has teeth: the uncorrected lagged gradient is visibly off
    naive = expected_pg_grad(LAGGED, cfg, corrected=False)
    assert (naive - want).abs().max() > 0.05
    # on-policy samples: nothing to correct
    assert torch.allclose(expected_pg_grad(THETA, cfg, corrected=False), want, atol=1e-10)


def test_k3_loss_mode_corrected_equals_its_on_policy_expectation():
    cfg = PGConfig(samples_per_prompt=2, kl_coef=0.7, kl_mode="loss", importance_clip=None)
    on_policy = expected_pg_grad(THETA, cfg, corrected=False)
    corrected = expected_pg_grad(LAGGED, cfg, corrected=True)
    assert torch.allclose(corrected, on_policy, atol=1e-10)
    assert (expected_pg_grad(LAGGED, cfg, corrected=False) - on_policy).abs().max() > 0.05


def test_truncation_is_a_no_op_on_policy_and_binds_off_policy():
    cfg = PGConfig(samples_per_prompt=2, kl_coef=0.3, importance_clip=1.0)
    want = -exact_objective_grad(0.3)
    assert torch.allclose(expected_pg_grad(THETA, cfg, corrected=True), want, atol=1e-10)
    rho = truncated_importance_weights(token_logprobs(THETA, SEQS).sum(1), token_logprobs(LAGGED, SEQS).sum(1), 1.0)
    assert rho.max() == 1.0 and rho.min() < 0.5
    with pytest.raises(ValueError, match="clip"):
        truncated_importance_weights(torch.zeros(2), torch.zeros(2), 0.0)
    with pytest.raises(ValueError, match="behaviour_logprobs"):
        truncated_importance_weights(torch.zeros(2), torch.zeros(3), 1.0)


def test_bond_backward_term_corrected_equals_on_policy():
    """β = 1 (backward only), r_B a fixed function of y: E_μ[ρ̄ ∇L] = E_π[∇L] with c = None."""
    cfg = BondConfig(n=2, beta=1.0, backward_reward="jbond", anchor_kl_coef=0.2, importance_clip=None)
    anchor_lp = token_logprobs(REF, SEQS).sum(1)

    def expected(sample_theta, corrected):
        theta = THETA.clone().requires_grad_(True)
        q = seq_probs(sample_theta)
        total = 0.0
        for a, b in itertools.product(range(9), repeat=2):
            idx = [a, b]
            lp = token_logprobs(theta, SEQS[idx]).sum(1)[None]
            mu = token_logprobs(sample_theta, SEQS[idx]).sum(1)[None] if corrected else None
            loss, _ = bond_loss(lp, anchor_lp[idx][None], REWARD[idx][None], torch.zeros(1, 1), torch.ones(1, 1), cfg, mu)
            total = total + q[a] * q[b] * loss
        return torch.autograd.grad(total, theta)[0]

    on_policy = expected(THETA, False)
    assert torch.allclose(expected(LAGGED, True), on_policy, atol=1e-10)
    assert (expected(LAGGED, False) - on_policy).abs().max() > 0.05


def test_k3_gradient_is_the_per_token_forward_kl_with_contexts_held_fixed():
    """pg.py's docstring: E_π[∇ Σ_t k3_t] = Σ_t E_{c_t~π}[∇ KL(π_ref(·|c_t) ‖ π(·|c_t))] (contexts not
    differentiated), which for two-token completions is not ∇ KL(π_ref ‖ π) of the sequences."""
    beta = 0.7
    cfg = PGConfig(samples_per_prompt=2, kl_coef=beta, kl_mode="loss")
    got = expected_pg_grad(THETA, cfg, corrected=False, reward=torch.zeros(9, dtype=torch.float64))

    theta = THETA.clone().requires_grad_(True)

    def forward_kl(ref_logits, logits):
        return (torch.softmax(ref_logits, -1) * (torch.log_softmax(ref_logits, -1) - torch.log_softmax(logits, -1))).sum()

    first = torch.softmax(THETA[0], -1)  # the context distribution of token 2, held fixed
    per_token = forward_kl(REF[0], theta[0]) + sum(first[y] * forward_kl(REF[1 + y], theta[1 + y]) for y in range(V))
    (want,) = torch.autograd.grad(per_token, theta)
    assert torch.allclose(got, beta * want, atol=1e-6)

    theta = THETA.clone().requires_grad_(True)
    ref_seq = seq_probs(REF)
    seq_kl = (ref_seq * (ref_seq.log() - token_logprobs(theta, SEQS).sum(1))).sum()
    (seq_grad,) = torch.autograd.grad(seq_kl, theta)
    assert (got - beta * seq_grad).abs().max() > 0.05
