"""BOND / J-BOND learners: the sampled losses, the anchors, and bandits reaching their analytic targets."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seedrl.agents.bond import BondConfig, backward_reward, best_anchor_index, bond_loss, move_anchor
from seedrl.agents.bond_bandit import (
    BanditBondConfig,
    exact_fixed_point,
    expected_backward_reward,
    iterated_target,
    train_bond_bandit,
)
from seedrl.config import ConfigError, load_config

REF = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
REW = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)


def kl(p, q):
    return float((p * (p / q).log()).sum())


# ---------------------------------------------------------------- independent expectations
# Written from the definitions, sharing no code with seedrl.ops.bond / bond_bandit.


def cdfs(ref, rew):
    """p_≤(y) = P_ref(r ≤ r(y)) and p_<(y) = P_ref(r < r(y))."""
    ref, rew = np.asarray(ref, np.float64), np.asarray(rew, np.float64)
    return (np.array([ref[rew <= r].sum() for r in rew]), np.array([ref[rew < r].sum() for r in rew]))


def bon_closed_form(ref, rew, n):
    """Distinct rewards: π_BoN(y) = F(y)^n − F(y⁻)^n."""
    le, lt = cdfs(ref, rew)
    return le**n - lt**n


def bon_enumerated(ref, rew, n):
    """Best of n by enumerating every n-tuple of samples, ties shared uniformly among the tied samples."""
    ref, rew = np.asarray(ref, np.float64), np.asarray(rew, np.float64)
    out = np.zeros(len(ref))
    for tup in itertools.product(range(len(ref)), repeat=n):
        prob = np.prod(ref[list(tup)])
        best = max(rew[i] for i in tup)
        winners = [i for i in tup if rew[i] == best]
        for i in winners:
            out[i] += prob / len(winners)
    return out


def mean_backward_reward(ref, rew, kind, n, k=None, floor=None):
    """R̄(y) = E[r_B(y)] from its definition."""
    le, lt = cdfs(ref, rew)
    if kind == "jbond":  # −log 16 when both of two anchor samples are strictly better
        return -math.log(16) * (1 - le) ** 2
    if kind == "exact":
        return np.log((le**n - lt**n) / (le - lt))
    floor = 1 / (k + 1) if floor is None else floor
    return (n - 1) * np.array([sum(math.comb(k, j) * p**j * (1 - p) ** (k - j) * math.log(max(j / k, floor))
                                   for j in range(k + 1)) for p in le])


def stationary_point(anchor, q, r_bar, beta, gamma=0.0):
    """Maximiser of (1−β)Σq log π + βΣπ(R̄ − log π/π_a) − γ KL(π‖π_a) on the simplex, from its
    stationarity condition (1−β)q/π + β(R̄ − log π/π_a − 1) − γ(log π/π_a + 1) = λ, by nested bisection."""
    anchor, q, r_bar = (np.asarray(x, np.float64) for x in (anchor, q, r_bar))
    if beta + gamma == 0:
        return q

    def pi_of(lam):
        lo, hi = np.full(len(q), -80.0), np.full(len(q), 10.0)  # log π
        for _ in range(120):
            mid = (lo + hi) / 2
            pi, lr = np.exp(mid), mid - np.log(anchor)
            g = (1 - beta) * q / pi + beta * (r_bar - lr - 1) - gamma * (lr + 1) - lam
            lo, hi = np.where(g > 0, mid, lo), np.where(g > 0, hi, mid)
        return np.exp((lo + hi) / 2)

    lo, hi = -1e3, 1e3
    for _ in range(120):
        lam = (lo + hi) / 2
        lo, hi = (lam, hi) if pi_of(lam).sum() > 1 else (lo, lam)
    return pi_of((lo + hi) / 2)


def tv(p, q):
    return 0.5 * float(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum())


BO2, BO4, BO8 = (bon_closed_form(REF, REW, n) for n in (2, 4, 8))


def test_independent_expectations_agree_with_known_numbers():
    """algorithms.md's worked example: Bo2 = (0.25, 0.39, 0.36), Bo4 = (0.0625, 0.3471, 0.5904)."""
    np.testing.assert_allclose(BO2, [0.25, 0.39, 0.36], atol=1e-12)
    np.testing.assert_allclose(BO4, [0.0625, 0.3471, 0.5904], atol=1e-12)
    np.testing.assert_allclose(bon_enumerated(REF, REW, 4), BO4, atol=1e-12)
    # the nested bisection solves β = 1 in closed form: π ∝ π_a·exp(R̄/(1 + γ))
    r_bar = mean_backward_reward(REF, REW, "jbond", 2)
    for gamma in (0.0, 1.5):
        tilt = REF.numpy() * np.exp(r_bar / (1 + gamma))
        np.testing.assert_allclose(stationary_point(REF, BO2, r_bar, 1.0, gamma), tilt / tilt.sum(), atol=1e-9)


# ---------------------------------------------------------------- exact targets


def test_fixed_points_of_the_worked_example():
    bo2 = exact_fixed_point(REF, REW, BondConfig(n=2, beta=0.0, backward_reward="jbond"))
    assert torch.allclose(bo2, torch.tensor([0.25, 0.39, 0.36], dtype=torch.float64), atol=1e-6)
    j1 = exact_fixed_point(REF, REW, BondConfig(n=2, beta=1.0, backward_reward="jbond"))
    assert torch.allclose(j1, torch.tensor([0.348, 0.374, 0.278], dtype=torch.float64), atol=6e-4)
    # the closed form: anchor · 16^{-(1 - p_<=)^2}
    p_le = torch.tensor([0.5, 0.8, 1.0], dtype=torch.float64)
    closed = REF * 16.0 ** (-((1 - p_le) ** 2))
    assert torch.allclose(j1, closed / closed.sum(), atol=1e-8)
    # beta = 0.5: the stationarity condition, solved independently
    jh = exact_fixed_point(REF, REW, BondConfig(n=2, beta=0.5, backward_reward="jbond"))
    np.testing.assert_allclose(jh.numpy(), stationary_point(REF, BO2, mean_backward_reward(REF, REW, "jbond", 2), 0.5),
                               atol=1e-6)
    # exact r_BOND: the backward optimum is Best-of-N itself; log p_<= alone gives pi_ref p_<=^{N-1}/Z
    np.testing.assert_allclose(exact_fixed_point(REF, REW, BondConfig(n=4, beta=1.0, backward_reward="exact")).numpy(),
                               BO4, atol=1e-7)
    lq = exact_fixed_point(REF, REW, BondConfig(n=4, beta=1.0, backward_reward="log_quantile", quantile_samples=100_000))
    tilted = REF * torch.tensor([0.5, 0.8, 1.0], dtype=torch.float64) ** 3
    assert torch.allclose(lq, tilted / tilted.sum(), atol=1e-3)
    np.testing.assert_allclose(iterated_target(REF, REW, BondConfig(n=2, beta=0.0), 3).numpy(), BO8, atol=1e-7)


@settings(max_examples=30)
@given(
    st.lists(st.floats(0.05, 1.0), min_size=2, max_size=5),
    st.lists(st.integers(0, 3), min_size=5, max_size=5),
    st.sampled_from(["jbond", "exact", "log_quantile"]),
    st.floats(0.0, 3.0),
)
def test_fixed_point_closed_forms_with_ties(weights, reward_levels, kind, gamma):
    ref = torch.tensor(weights, dtype=torch.float64)
    ref = ref / ref.sum()
    rew = torch.tensor(reward_levels[: len(weights)], dtype=torch.float64)
    n = 2 if kind == "jbond" else 3
    forward = exact_fixed_point(ref, rew, BondConfig(n=n, beta=0.0, backward_reward=kind, anchor_kl_coef=0.0))
    q = bon_enumerated(ref, rew, n)
    np.testing.assert_allclose(forward.numpy(), q, atol=1e-6)
    r_bar = mean_backward_reward(ref, rew, kind, n, k=5)
    cfg = BondConfig(n=n, beta=1.0, backward_reward=kind, quantile_samples=5, anchor_kl_coef=gamma)
    tilt = ref.numpy() * np.exp(r_bar / (1 + gamma))
    np.testing.assert_allclose(exact_fixed_point(ref, rew, cfg).numpy(), tilt / tilt.sum(), atol=1e-6)
    mixed = exact_fixed_point(ref, rew, BondConfig(n=n, beta=0.4, backward_reward=kind, quantile_samples=5,
                                                   anchor_kl_coef=gamma))
    np.testing.assert_allclose(mixed.numpy(), stationary_point(ref, q, r_bar, 0.4, gamma), atol=1e-5)


@pytest.mark.parametrize("levels", [[0.0, 1.0, 2.0], [0.0, 1.0, 1.0]])
def test_expected_log_quantile_reward_matches_enumeration(levels):
    """E[(n-1) log max(p̂_<=, floor)] by enumerating every tuple of k anchor samples."""
    rew = torch.tensor(levels, dtype=torch.float64)
    k, n = 3, 4
    cfg = BondConfig(n=n, backward_reward="log_quantile", quantile_samples=k)
    want = torch.zeros(3, dtype=torch.float64)
    for tup in itertools.product(range(3), repeat=k):
        prob = float(np.prod([REF[i] for i in tup]))
        r_b = backward_reward(rew[:, None], rew[list(tup)][None].expand(3, -1), cfg)[:, 0]
        want += prob * r_b.double()
    assert torch.allclose(expected_backward_reward(REF, rew, cfg), want, atol=1e-6)
    # J-BOND's expectation: -log 16 times the chance that both anchor samples are strictly better
    p_le, _ = cdfs(REF, rew)
    jb = expected_backward_reward(REF, rew, BondConfig(n=2, backward_reward="jbond"))
    np.testing.assert_allclose(jb.numpy(), -math.log(16) * (1 - p_le) ** 2, atol=1e-12)


# ---------------------------------------------------------------- sampled pieces


def test_jbond_reward_and_best_anchor_with_ties():
    cfg = BondConfig(n=2, backward_reward="jbond")
    pol = torch.tensor([[0.0, 1.0, 2.0]])
    anchors = torch.tensor([[1.0, 2.0]])
    assert torch.allclose(backward_reward(pol, anchors, cfg), torch.tensor([[-math.log(16), 0.0, 0.0]]))
    gen = torch.Generator().manual_seed(0)
    ar = torch.tensor([[3.0, 1.0, 3.0, 2.0]]).expand(4000, -1)
    idx = best_anchor_index(ar, 4, gen)
    counts = torch.bincount(idx, minlength=4)
    assert counts[1] == 0 and counts[3] == 0  # always a best sample
    assert abs(counts[0].item() / 4000 - 0.5) < 0.04  # ties broken uniformly
    assert best_anchor_index(ar, 2, gen).eq(0).all()  # only the first n compete


def test_bond_loss_pieces_and_errors():
    cfg = BondConfig(n=2, beta=0.0, backward_reward="jbond")
    lp = torch.zeros(3, 2, requires_grad=True)
    best = torch.tensor([[-1.0], [-2.0], [-3.0]], requires_grad=True)
    loss, logs = bond_loss(lp, torch.zeros(3, 2), torch.zeros(3, 2), best, torch.ones(3, 1), cfg)
    assert loss.item() == pytest.approx(2.0) and logs["forward_nll"] == pytest.approx(2.0)
    # weighted anchor samples: the forward NLL is their weighted mean
    two = torch.tensor([[-1.0, -3.0], [-2.0, -2.0], [-3.0, -1.0]])
    _, logs = bond_loss(lp, torch.zeros(3, 2), torch.zeros(3, 2), two, torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]]), cfg)
    assert logs["forward_nll"] == pytest.approx((2.0 + 2.0 + 1.0) / 3)
    # the anchor penalty's advantage lowers samples whose log-ratio to the anchor is high
    cfg = BondConfig(n=2, beta=0.0, backward_reward="jbond", anchor_kl_coef=1.0)
    lp = torch.tensor([[0.0, -1.0]], requires_grad=True)
    loss, _ = bond_loss(lp, torch.tensor([[-1.0, -1.0]]), torch.zeros(1, 2), torch.zeros(1, 1, requires_grad=True),
                        torch.ones(1, 1), cfg)
    loss.backward()
    assert lp.grad[0, 0] > 0 > lp.grad[0, 1]  # gradient descent lowers log pi of the over-weighted sample
    with pytest.raises(ValueError, match="must all be"):
        bond_loss(torch.zeros(2, 2), torch.zeros(2, 3), torch.zeros(2, 2), torch.zeros(2, 1), torch.ones(2, 1), cfg)
    with pytest.raises(ValueError, match="forward_logprobs"):
        bond_loss(torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(3, 1), torch.ones(3, 1), cfg)
    with pytest.raises(ValueError, match="forward_weights"):
        bond_loss(torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 2), torch.ones(2, 1), cfg)


def test_anchor_moves():
    policy = [torch.tensor([1.0, 2.0])]
    anchor = [torch.tensor([0.0, 0.0])]
    assert not move_anchor(anchor, policy, 7, BondConfig(anchor="fixed"))
    periodic = BondConfig(anchor="periodic", anchor_every=5)
    assert not move_anchor(anchor, policy, 4, periodic) and anchor[0].eq(0).all()
    assert move_anchor(anchor, policy, 5, periodic) and torch.equal(anchor[0], policy[0])
    odd = [torch.randn(1000, dtype=torch.float32) * 1e3]
    anchor = [torch.randn(1000, dtype=torch.float32)]
    move_anchor(anchor, odd, 5, periodic)
    assert torch.equal(anchor[0], odd[0])  # bit-exact copy
    anchor = [torch.tensor([0.0, 0.0])]
    move_anchor(anchor, policy, 1, BondConfig(anchor="ema", anchor_ema=0.25))
    assert torch.allclose(anchor[0], torch.tensor([0.25, 0.5]))


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="n must be 2"):
        load_config(BanditBondConfig, {"bond": {"backward_reward": "jbond", "n": 4}})
    with pytest.raises(ConfigError, match="beta"):
        load_config(BanditBondConfig, {"bond": {"beta": 1.5}})
    with pytest.raises(ConfigError, match="reference"):
        load_config(BanditBondConfig, {"reference": [0.5, 0.6], "rewards": [0, 1]})


# ---------------------------------------------------------------- bandit training reaches the targets


def _train(tmp_path, name, bond, **kw):
    cfg = load_config(BanditBondConfig, {"out_dir": str(tmp_path), "name": name, "log": {"every": 100}, "bond": bond,
                                         "steps": 800, "prompts_per_step": 256, **kw})
    return train_bond_bandit(cfg)


@pytest.mark.usefixtures("one_torch_thread")
def test_bond_reaches_best_of_n(tmp_path):
    out = _train(tmp_path, "bond", {"n": 4, "beta": 0.5, "backward_reward": "exact"})
    assert tv(out["probs"], BO4) < 0.01, out
    assert out["kl_ref"] == pytest.approx(0.5598, abs=0.02)  # algorithms.md: KL(Bo4 || ref) = 0.5598
    # with the Monte Carlo log-quantile reward it reaches that reward's own fixed point
    out = _train(tmp_path, "bond_mc", {"n": 4, "beta": 0.5, "backward_reward": "log_quantile", "quantile_samples": 8})
    target = stationary_point(REF, BO4, mean_backward_reward(REF, REW, "log_quantile", 4, k=8), 0.5)
    assert tv(out["probs"], target) < 0.015, (out, target)
    assert tv(target, BO4) > 0.03  # that fixed point is not Bo4 itself
    assert (tmp_path / "bond_mc" / "metrics.jsonl").exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_pool_forward_estimator_reaches_the_same_target(tmp_path):
    """Weighting every anchor sample by its Best-of-n pick chance has the same expectation."""
    out = _train(tmp_path, "pool", {"n": 4, "beta": 0.0, "backward_reward": "log_quantile", "quantile_samples": 8,
                                    "forward_estimator": "pool"})
    assert tv(out["probs"], BO4) < 0.01, out


@pytest.mark.usefixtures("one_torch_thread")
def test_iterative_bond_reaches_best_of_n_to_the_m(tmp_path):
    out = _train(tmp_path, "iter", {"n": 2, "beta": 0.0, "anchor": "periodic", "anchor_every": 400},
                 steps=1200, prompts_per_step=512)
    assert tv(out["probs"], BO8) < 0.02, out  # three rounds of Bo2


@pytest.mark.usefixtures("one_torch_thread")
def test_jbond_fixed_anchor_beta_sweep(tmp_path):
    r_bar = mean_backward_reward(REF, REW, "jbond", 2)
    for beta in (0.0, 0.5, 1.0):
        out = _train(tmp_path, f"jb{beta}", {"n": 2, "beta": beta, "backward_reward": "jbond"})
        target = stationary_point(REF, BO2, r_bar, beta)
        assert tv(out["probs"], target) < 0.015, (beta, out, target)
    np.testing.assert_allclose(stationary_point(REF, BO2, r_bar, 1.0), [0.348, 0.374, 0.278], atol=6e-4)


@pytest.mark.usefixtures("one_torch_thread")
def test_anchor_regulariser_reduces_kl_to_the_anchor(tmp_path):
    kls = [_train(tmp_path, f"g{g}", {"n": 2, "beta": 1.0, "backward_reward": "jbond", "anchor_kl_coef": g})["kl_anchor_exact"]
           for g in (0.0, 2.0)]
    r_bar = mean_backward_reward(REF, REW, "jbond", 2)
    target = [kl(torch.from_numpy(stationary_point(REF, BO2, r_bar, 1.0, g)), REF) for g in (0.0, 2.0)]
    assert kls[1] < 0.5 * kls[0], kls
    assert kls == pytest.approx(target, abs=0.006)


@pytest.mark.usefixtures("one_torch_thread")
def test_ema_anchor_keeps_improving(tmp_path):
    """With an EMA anchor J-BOND keeps distilling Bo2 of a moving anchor: it ends past Bo2(pi_ref)."""
    out = _train(tmp_path, "ema", {"n": 2, "beta": 0.5, "backward_reward": "jbond", "anchor": "ema", "anchor_ema": 0.05})
    bo2_reward = float((BO2 * REW.numpy()).sum())
    assert out["reward"] > bo2_reward + 0.1, out
    assert out["kl_anchor_exact"] < out["kl_ref"]
