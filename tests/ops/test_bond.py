"""Best-of-N quantities against the worked examples of the BOND paper notes, brute force and properties."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from seedrl.ops.bond import (
    best_of_n_probs,
    bon_kl_upper_bound,
    bon_log_ratio,
    bon_pool_weights,
    bond_reward,
    jbond_reward,
    quantile_estimate,
    quantiles,
)

REF = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
REWARD = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)


def _kl(p, q):
    return float((p * (p / q).log()).sum())


@pytest.mark.parametrize(
    "n, probs, kl",
    [(2, (0.25, 0.39, 0.36), 0.1406), (4, (0.0625, 0.3471, 0.5904), 0.5598), (8, None, 1.0685)],
)
def test_worked_examples(n, probs, kl):
    pi = best_of_n_probs(REF, REWARD, n)
    if probs is not None:
        assert torch.allclose(pi, torch.tensor(probs, dtype=torch.float64), atol=1e-4)
    assert abs(_kl(pi, REF) - kl) < 1e-4
    assert _kl(pi, REF) <= bon_kl_upper_bound(n)
    assert abs(bon_kl_upper_bound(8) - 1.2044) < 1e-4


def _brute_force_bon(ref, reward, n):
    """Enumerate all N-tuples of reference draws; the argmax, ties broken uniformly."""
    k = len(ref)
    out = torch.zeros(k, dtype=torch.float64)
    for draw in itertools.product(range(k), repeat=n):
        weight = math.prod(float(ref[i]) for i in draw)
        best = max(float(reward[i]) for i in draw)
        winners = [i for i in draw if float(reward[i]) == best]
        for i in winners:
            out[i] += weight / len(winners)
    return out


@given(
    st.lists(st.floats(0.05, 1.0), min_size=2, max_size=4),
    st.lists(st.integers(0, 2), min_size=4, max_size=4),
    st.integers(1, 4),
)
def test_matches_brute_force_with_ties(weights, levels, n):
    ref = torch.tensor(weights, dtype=torch.float64)
    ref = ref / ref.sum()
    reward = torch.tensor(levels[: len(weights)], dtype=torch.float64)  # few levels: many ties
    assert torch.allclose(best_of_n_probs(ref, reward, n), _brute_force_bon(ref, reward, n), atol=1e-12)


@given(st.lists(st.floats(0.05, 1.0), min_size=2, max_size=5), st.integers(1, 3), st.integers(1, 3))
def test_composition_bo_n_of_bo_m_is_bo_nm(weights, n, m):
    ref = torch.tensor(weights, dtype=torch.float64)
    ref = ref / ref.sum()
    reward = torch.arange(len(weights), dtype=torch.float64) % 3  # ties too
    twice = best_of_n_probs(best_of_n_probs(ref, reward, m), reward, n)
    assert torch.allclose(twice, best_of_n_probs(ref, reward, n * m), atol=1e-12)


def test_log_ratio_is_exact_including_ties():
    reward = torch.tensor([0.0, 1.0, 1.0, 2.0], dtype=torch.float64)
    ref = torch.tensor([0.4, 0.2, 0.1, 0.3], dtype=torch.float64)
    for n in (1, 2, 5, 16):
        p_le, p_lt = quantiles(ref, reward)
        expected = (best_of_n_probs(ref, reward, n) / ref).log()
        assert torch.allclose(bon_log_ratio(p_le, p_lt, n), expected, atol=1e-12)
    # continuous limit: log N + (N-1) log p_<=
    p = torch.tensor([0.3], dtype=torch.float64)
    assert torch.allclose(bon_log_ratio(p, p, 4), math.log(4) + 3 * p.log())
    with pytest.raises(ValueError, match="p_<"):
        bon_log_ratio(torch.tensor([0.2]), torch.tensor([0.3]), 2)


def test_quantile_estimate_is_unbiased_and_floored():
    torch.manual_seed(0)
    reward = torch.tensor([0.0, 1.0, 2.0])
    ref_draws = torch.multinomial(REF.float(), 200_000, replacement=True).view(-1, 16)
    est = quantile_estimate(reward[None, :].expand(ref_draws.shape[0], 3), REWARD.float()[ref_draws][:, None, :].expand(-1, 3, -1))
    p_le, _ = quantiles(REF, REWARD)
    assert torch.allclose(est.double().mean(0), p_le, atol=0.01)
    lowest = quantile_estimate(torch.tensor([-1.0]), torch.zeros(1, 16))
    assert float(lowest) == pytest.approx(1 / 17)
    assert torch.isfinite(bond_reward(lowest, 8)).all()
    with pytest.raises(ValueError, match="ref_rewards.shape"):
        quantile_estimate(torch.zeros(3), torch.zeros(2, 4))


def test_jbond_reward():
    r = torch.tensor([0.0, 1.0, 2.0, 1.0])
    a1 = torch.tensor([1.0, 1.0, 1.0, 0.0])
    a2 = torch.tensor([2.0, 0.0, 1.0, 2.0])
    assert torch.allclose(jbond_reward(r, a1, a2), torch.tensor([-math.log(16), 0.0, 0.0, 0.0]))


@given(st.lists(st.integers(0, 3), min_size=1, max_size=6), st.integers(1, 6))
def test_pool_weights_equal_enumerating_every_subset_with_uniform_tie_breaks(levels, n):
    m = len(levels)
    n = min(n, m)
    rewards = torch.tensor(levels, dtype=torch.float64)
    want = torch.zeros(m, dtype=torch.float64)
    subsets = list(itertools.combinations(range(m), n))
    for sub in subsets:
        best = max(levels[i] for i in sub)
        tied = [i for i in sub if levels[i] == best]
        for i in tied:
            want[i] += 1.0 / (len(tied) * len(subsets))
    got = bon_pool_weights(rewards[None], n)[0]
    assert torch.allclose(got, want, atol=1e-12)
    assert got.sum().item() == pytest.approx(1.0)


def test_pool_weights_reject_n_above_the_pool():
    with pytest.raises(ValueError, match="exceeds the pool"):
        bon_pool_weights(torch.zeros(1, 2), 3)
