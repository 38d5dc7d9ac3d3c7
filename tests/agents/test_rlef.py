"""Entailment-feedback actor-critic: the value loss by hand, the exact policy gradient of the
KL-regularised objective (by enumeration), convergence to π* ∝ π_a·exp(((1−α)/α)·R) on a
bandit and on a two-token tree with padding, and the importance weights at and beyond lag 0."""

from __future__ import annotations

import math

import pytest
import torch

from seedrl.agents.rlef import LMRLEFConfig, RLEFConfig, rlef_loss
from seedrl.config import ConfigError, load_config


def test_value_loss_and_monte_carlo_returns_by_hand():
    # α = 0: r = R at the last token. Row 0 has 2 tokens (its 3rd value is padding junk), row 1 has 3.
    # MC returns: row 0 (1, 1), row 1 (−2, −2, −2); ½(V − G)² over the 5 valid tokens:
    # (½·0.25 + ½·1 + ½·4 + ½·1 + 0) / 5 = 0.625
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    values = torch.tensor([[0.5, 0.0, 5.0], [0.0, -1.0, -2.0]], requires_grad=True)
    tok = torch.full((2, 3), -1.0) * mask
    cfg = RLEFConfig(alpha=0.0, value_coef=1.0)
    loss, logs = rlef_loss(tok, tok.clone(), values, mask, torch.tensor([1.0, -2.0]), cfg)
    assert logs["value_loss"] == pytest.approx(0.625)
    assert logs["return"] == pytest.approx((1.0 - 2.0) / 2)
    loss.backward()
    # d/dV of Σ ½(V − G)² / 5: (V − G)/5 at valid tokens, 0 at padding
    assert torch.allclose(values.grad, torch.tensor([[-0.1, -0.2, 0.0], [0.4, 0.2, 0.0]]))


def test_policy_gradient_term_by_hand():
    """One 2-token sequence, α = 0.5, V = 0: r = (−0.5·(−0.2), 0.5·3 − 0.5·0.4); MC advantages are
    the returns-to-go; the gradient on each token's log-prob is −A_t (one sequence)."""
    tok = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    anchor = torch.tensor([[-0.8, -2.4]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, logs = rlef_loss(tok, anchor, torch.zeros(1, 2), mask, torch.tensor([3.0]), RLEFConfig(alpha=0.5))
    loss.backward()
    r1 = 0.5 * 3.0 - 0.5 * (-2.0 + 2.4)
    r0 = -0.5 * (-1.0 + 0.8)
    assert torch.allclose(tok.grad, -torch.tensor([[r0 + r1, r1]]))
    assert logs["kl"] == pytest.approx(-1.0 + 0.8 - 2.0 + 2.4)


# ----------------------------------------------------------------------------- a bandit
def _bandit_step(logits, value, anchor_logits, reward, alpha, importance="token"):
    """All K one-token completions as rows, drawn from a uniform behaviour: the untruncated
    importance weights make the mean over rows the exact expectation under π."""
    k = logits.shape[0]
    tok = torch.log_softmax(logits, -1)[:, None]
    anc = torch.log_softmax(anchor_logits, -1)[:, None]
    mu = torch.full((k, 1), -math.log(k))
    cfg = RLEFConfig(alpha=alpha, value_coef=1.0, importance=importance, importance_clip=None)
    return rlef_loss(tok, anc, value.expand(k, 1), torch.ones(k, 1, dtype=torch.bool), reward, cfg, mu)


@pytest.mark.parametrize("alpha", [0.3, 0.6])
def test_bandit_reaches_the_kl_regularised_optimum(alpha):
    anchor_logits = torch.log(torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05]))
    reward = torch.tensor([0.0, 1.0, 0.5, 2.0, -1.0])
    logits = torch.zeros(5, requires_grad=True)
    value = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([logits, value], lr=0.05)
    for _ in range(1500):
        loss, _ = _bandit_step(logits, value, anchor_logits, reward, alpha)
        opt.zero_grad()
        loss.backward()
        opt.step()
    target = torch.softmax(anchor_logits + (1 - alpha) / alpha * reward, -1)
    assert torch.allclose(torch.softmax(logits.detach(), -1), target, atol=2e-3), (torch.softmax(logits, -1), target)


# ----------------------------------------------------------------------------- a two-token tree with padding
# Token 0 first ends the completion (length 1, padded); tokens 1 and 2 take one more token of 3.
SEQS = [(0,)] + [(a, b) for a in (1, 2) for b in range(3)]


class Tree:
    """A tabular policy over SEQS: logits θ0 at the root, θ1[a] after first token a; values v0, v1[a]."""

    def __init__(self, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.anchor0, self.anchor1 = torch.randn(3, generator=g), torch.randn(3, 3, generator=g)
        self.reward = torch.randn(len(SEQS), generator=g)
        self.th0 = torch.randn(3, generator=g).requires_grad_(True)
        self.th1 = torch.randn(3, 3, generator=g).requires_grad_(True)
        self.v0 = torch.randn(1, generator=g).requires_grad_(True)
        self.v1 = torch.randn(3, generator=g).requires_grad_(True)
        self.mask = torch.tensor([[True, len(s) == 2] for s in SEQS])

    @staticmethod
    def token_logprobs(l0, l1):
        lp0, lp1 = torch.log_softmax(l0, -1), torch.log_softmax(l1, -1)
        rows = [torch.stack([lp0[s[0]], lp1[s[0], s[1]] if len(s) == 2 else lp0.new_zeros(())]) for s in SEQS]
        return torch.stack(rows)

    def seq_probs(self):
        tok = self.token_logprobs(self.th0, self.th1)
        return (tok * self.mask).sum(1).exp()

    def values(self):
        return torch.stack([torch.cat([self.v0, self.v1[s[0]][None]]) for s in SEQS])

    def objective(self, alpha):
        """J = Σ_y π(y)·[(1 − α)·R(y) − α·log π(y)/π_a(y)], exactly."""
        lp = (self.token_logprobs(self.th0, self.th1) * self.mask).sum(1)
        la = (self.token_logprobs(self.anchor0, self.anchor1) * self.mask).sum(1)
        return (lp.exp() * ((1 - alpha) * self.reward - alpha * (lp - la))).sum()

    def uniform_behaviour(self):
        """μ with μ(y) = 1/7 for every sequence: first token (1/7, 3/7, 3/7), then 1/3 each."""
        first = torch.log(torch.tensor([1 / 7, 3 / 7, 3 / 7]))
        return torch.stack([torch.stack([first[s[0]], torch.tensor(-math.log(3) if len(s) == 2 else 0.0)]) for s in SEQS])

    def loss(self, cfg, behaviour):
        tok = self.token_logprobs(self.th0, self.th1)
        anc = self.token_logprobs(self.anchor0, self.anchor1).detach()
        return rlef_loss(tok, anc, self.values(), self.mask, self.reward, cfg, behaviour)


def _policy_grad(tree, loss):
    return torch.autograd.grad(loss, [tree.th0, tree.th1])


def test_sequence_weights_give_the_exact_gradient_of_the_regularised_objective():
    """Rows drawn uniformly (μ = 1/7 each), weighted by π(y)/μ(y), Monte-Carlo advantages with an
    arbitrary value baseline: the loss gradient is −∇J exactly (values only a baseline)."""
    tree = Tree(seed=3)
    alpha = 0.3
    cfg = RLEFConfig(alpha=alpha, importance="sequence", importance_clip=None, value_coef=0.0)
    loss, _ = tree.loss(cfg, tree.uniform_behaviour())
    got = _policy_grad(tree, loss)
    want = torch.autograd.grad(-tree.objective(alpha), [tree.th0, tree.th1])
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-6), (g, w)


def test_two_token_tree_reaches_the_sequence_level_optimum():
    tree = Tree(seed=5)
    alpha = 0.4
    cfg = RLEFConfig(alpha=alpha, importance="sequence", importance_clip=None, value_coef=0.5)
    opt = torch.optim.Adam([tree.th0, tree.th1, tree.v0, tree.v1], lr=0.05)
    mu = tree.uniform_behaviour()
    for _ in range(2500):
        loss, _ = tree.loss(cfg, mu)
        opt.zero_grad()
        loss.backward()
        opt.step()
    anchor = (tree.token_logprobs(tree.anchor0, tree.anchor1) * tree.mask).sum(1)
    target = torch.softmax(anchor + (1 - alpha) / alpha * tree.reward, 0)
    assert torch.allclose(tree.seq_probs().detach(), target, atol=3e-3), (tree.seq_probs(), target)


def test_on_policy_samples_with_gae_and_a_learned_critic_reach_the_optimum():
    """Sampled from π itself (lag 0), GAE(λ = 0.8) bootstrapping from learned values: the fixed
    point is still π* (the values converge to V^π, where GAE is unbiased)."""
    torch.manual_seed(0)
    tree = Tree(seed=5)
    alpha = 0.4
    cfg = RLEFConfig(alpha=alpha, gae_lambda=0.8, value_coef=1.0)
    opt = torch.optim.Adam([tree.th0, tree.th1, tree.v0, tree.v1], lr=0.02)
    for _ in range(2000):
        idx = torch.multinomial(tree.seq_probs().detach(), 256, replacement=True)
        tok = tree.token_logprobs(tree.th0, tree.th1)[idx]
        anc = tree.token_logprobs(tree.anchor0, tree.anchor1).detach()[idx]
        loss, _ = rlef_loss(tok, anc, tree.values()[idx], tree.mask[idx], tree.reward[idx], cfg, tok.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    anchor = (tree.token_logprobs(tree.anchor0, tree.anchor1) * tree.mask).sum(1)
    target = torch.softmax(anchor + (1 - alpha) / alpha * tree.reward, 0)
    assert torch.allclose(tree.seq_probs().detach(), target, atol=0.03), (tree.seq_probs(), target)


# ----------------------------------------------------------------------------- importance weights
@pytest.mark.parametrize("importance", ["token", "sequence"])
def test_importance_weights_are_one_at_lag_zero_and_change_the_gradient_at_lag(importance):
    tree = Tree(seed=1)
    cfg = RLEFConfig(alpha=0.2, importance=importance, importance_clip=1.0, value_coef=0.0)
    tok = tree.token_logprobs(tree.th0, tree.th1).detach()
    plain = _policy_grad(tree, tree.loss(cfg, None)[0])
    loss, logs = tree.loss(cfg, tok.clone())  # lag 0: μ = π
    assert logs["importance_weight"] == 1.0
    for g, w in zip(_policy_grad(tree, loss), plain):
        assert torch.equal(g, w)
    stale = tok + 0.5 * tree.mask  # the actor's weights gave these tokens more mass: π/μ < 1
    loss, logs = tree.loss(cfg, stale)
    assert logs["importance_weight"] < 1.0
    assert any(not torch.allclose(g, w) for g, w in zip(_policy_grad(tree, loss), plain))


def test_padding_does_not_leak_into_the_loss():
    """Junk log-probs, values and behaviour log-probs at padded positions change nothing."""
    tree = Tree(seed=2)
    cfg = RLEFConfig(alpha=0.3, value_coef=1.0, gae_lambda=0.9, normalize_advantages=True)
    tok = tree.token_logprobs(tree.th0, tree.th1)
    anc = tree.token_logprobs(tree.anchor0, tree.anchor1).detach()
    mu = tok.detach() - 0.1 * tree.mask
    pad = ~tree.mask
    base, logs = rlef_loss(tok, anc, tree.values(), tree.mask, tree.reward, cfg, mu)
    junk, logs2 = rlef_loss(tok + 7.0 * pad, anc - 3.0 * pad, tree.values() + 11.0 * pad, tree.mask, tree.reward, cfg,
                            mu + 5.0 * pad)
    assert torch.allclose(base, junk) and logs == pytest.approx(logs2)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="rlef.critic"):
        load_config(LMRLEFConfig, {"policy": "p", "out_dir": str(tmp_path), "rlef": {"critic_model": "x"}})
    with pytest.raises(ConfigError, match="alpha"):
        load_config(LMRLEFConfig, {"policy": "p", "out_dir": str(tmp_path), "rlef": {"alpha": 1.5}})


def test_entropy_bonus_and_advantage_normalisation():
    """c_H·H enters the loss with a minus sign; normalised advantages are (A − mean)/std over valid tokens."""
    logits = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    logp = torch.log_softmax(logits, -1)
    ent = -(logp.exp() * logp).sum(-1)
    mask = torch.tensor([[1, 1], [1, 0], [1, 1]], dtype=torch.bool)
    tok = logp[..., 0] * mask
    zeros = torch.zeros(3, 2)
    cfg = RLEFConfig(alpha=0.0, entropy_coef=0.3, value_coef=0.0)
    loss, _ = rlef_loss(tok, tok.detach(), zeros, mask, torch.zeros(3), cfg, entropies=ent)
    (g,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (want,) = torch.autograd.grad(-0.3 * (ent * mask).sum() / mask.sum(), logits)
    assert torch.allclose(g, want, atol=1e-6)
    with pytest.raises(ValueError, match="entropy_coef"):
        rlef_loss(tok, tok.detach(), zeros, mask, torch.zeros(3), cfg)
    # normalisation: MC returns (α = 0, V = 0) are R at every valid token: A = (1, 1, 2, 4, 4) -> standardised
    t = torch.zeros(3, 2, requires_grad=True)
    cfg = RLEFConfig(alpha=0.0, normalize_advantages=True, value_coef=0.0)
    loss, _ = rlef_loss(t, torch.zeros(3, 2), zeros, mask, torch.tensor([1.0, 2.0, 4.0]), cfg)
    (g,) = torch.autograd.grad(loss, t)
    a = torch.tensor([1.0, 1.0, 2.0, 4.0, 4.0])
    norm = (a - a.mean()) / a.std(unbiased=False)
    assert torch.allclose(g[mask], -norm / 3, atol=1e-5) and (g[~mask] == 0).all()
