"""Tests for seedrl.models.distributions against float64 brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seedrl.models import entropy, log_probs, sample_actions


def brute_probs(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def test_log_probs_and_entropy_match_brute_force():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(4, 5, 7))
    actions = rng.integers(0, 7, size=(4, 5))
    p = brute_probs(logits)
    ref_lp = np.log(np.take_along_axis(p, actions[..., None], -1)[..., 0])
    ref_h = -(p * np.log(p)).sum(-1)
    t = torch.from_numpy(logits)
    np.testing.assert_allclose(log_probs(t, torch.from_numpy(actions)).numpy(), ref_lp, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(entropy(t).numpy(), ref_h, rtol=1e-12, atol=1e-12)
    assert entropy(t.float()).dtype == torch.float32


def test_large_logits_are_stable():
    logits = torch.tensor([[1e4, 1e4 - 1.0, -1e4], [0.0, 0.0, 0.0]])
    lp = log_probs(logits, torch.tensor([1, 2]))
    a = math.log1p(math.exp(-1.0))  # log(1 + e^-1)
    torch.testing.assert_close(lp, torch.tensor([-1.0 - a, -math.log(3.0)]))
    p = 1.0 / (1.0 + math.exp(-1.0))
    ref_h0 = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    torch.testing.assert_close(entropy(logits), torch.tensor([ref_h0, math.log(3.0)]))


def test_masked_logits():
    logits = torch.tensor([[0.5, -math.inf, 1.5, -math.inf]], requires_grad=True)
    h = entropy(logits)
    sub = torch.tensor([[0.5, 1.5]])
    torch.testing.assert_close(h, entropy(sub))
    h.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert log_probs(logits, torch.tensor([1])).item() == -math.inf
    draws = sample_actions(logits.expand(10_000, 4), torch.Generator().manual_seed(0))
    assert set(draws.unique().tolist()) <= {0, 2}


def test_sample_frequencies_match_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0], [3.0, 3.0, -2.0, 0.0]])
    n = 100_000
    draws = sample_actions(logits.repeat(n, 1, 1), torch.Generator().manual_seed(1))  # [n, 2]
    assert draws.shape == (n, 2) and draws.dtype == torch.int64
    probs = torch.softmax(logits.double(), -1)
    for row in range(2):
        freq = torch.bincount(draws[:, row], minlength=4).double() / n
        std = (probs[row] * (1 - probs[row]) / n).sqrt()
        assert ((freq - probs[row]).abs() <= 5 * std + 1e-12).all(), (freq, probs[row])


def test_sampling_is_reproducible_with_generator():
    logits = torch.randn(20, 16, 6)
    a = sample_actions(logits, torch.Generator().manual_seed(7))
    b = sample_actions(logits, torch.Generator().manual_seed(7))
    c = sample_actions(logits, torch.Generator().manual_seed(8))
    assert a.shape == (20, 16) and torch.equal(a, b) and not torch.equal(a, c)


def test_log_probs_gradient_and_shape_check():
    logits = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    actions = torch.tensor([0, 3, 1])
    assert torch.autograd.gradcheck(lambda x: log_probs(x, actions), (logits,))
    assert torch.autograd.gradcheck(entropy, (logits,))
    with pytest.raises(ValueError, match="actions shape"):
        log_probs(logits, torch.tensor([0, 1]))
