"""Tests for seedrl.ops.value_rescaling (R2D2's h and h^-1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from seedrl.ops import DEFAULT_EPS, inverse_value_rescaling, value_rescaling

EPS = 1e-3
# Subnormals carry too few significant bits for any relative-precision claim.
finite64 = st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def h_formula(x: float, eps: float = EPS) -> float:
    """The textbook form, sign(x)(sqrt(|x|+1) - 1) + eps x, in exact-ish float64 for moderate |x|."""
    return math.copysign(math.sqrt(abs(x) + 1.0) - 1.0, x) + eps * x


def h_inv_formula(x: float, eps: float = EPS) -> float:
    return math.copysign(((math.sqrt(1.0 + 4.0 * eps * (abs(x) + 1.0 + eps)) - 1.0) / (2.0 * eps)) ** 2 - 1.0, x)


def test_default_eps():
    assert DEFAULT_EPS == EPS


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 64), elements=finite64))
def test_inverse_roundtrip_float64(x):
    t = torch.as_tensor(x)
    np.testing.assert_allclose(inverse_value_rescaling(value_rescaling(t)).numpy(), x, rtol=4e-15, atol=0.0)
    np.testing.assert_allclose(value_rescaling(inverse_value_rescaling(t)).numpy(), x, rtol=4e-15, atol=0.0)


@settings(max_examples=100, deadline=None)
@given(st.floats(1e-300, 1e12), st.sampled_from([0.0, 1e-4, 1e-3, 1e-2, 0.5]))
def test_inverse_roundtrip_any_eps_tiny_and_large(x, eps):
    for v in (x, -x):
        t = torch.tensor([v], dtype=torch.float64)
        assert inverse_value_rescaling(value_rescaling(t, eps), eps).item() == pytest.approx(v, rel=4e-15, abs=0.0)


@settings(max_examples=100, deadline=None)
@given(st.floats(-1e6, 1e6))
def test_matches_textbook_formulas(x):
    t = torch.tensor([x], dtype=torch.float64)
    y = value_rescaling(t).item()
    # The textbook forms lose absolute precision ~1e-13 near zero (cancellation), hence the atol.
    assert y == pytest.approx(h_formula(x), rel=1e-12, abs=1e-12)
    assert inverse_value_rescaling(t).item() == pytest.approx(h_inv_formula(x), rel=1e-12, abs=1e-12)


def test_known_values():
    x = torch.tensor([0.0, 3.0, -3.0, 8.0, 99.0], dtype=torch.float64)
    expected = torch.tensor([0.0, 1.0 + 3e-3, -1.0 - 3e-3, 2.0 + 8e-3, 9.0 + 99e-3], dtype=torch.float64)
    torch.testing.assert_close(value_rescaling(x), expected, rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(inverse_value_rescaling(expected), x, rtol=1e-14, atol=1e-15)
    assert value_rescaling(torch.zeros(())).item() == 0.0
    assert inverse_value_rescaling(torch.zeros(())).item() == 0.0
    assert value_rescaling(torch.tensor(-0.0)).item() == 0.0


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, st.integers(2, 64), elements=finite64, unique=True))
def test_strictly_monotone_and_odd(x):
    x = np.sort(x)
    t = torch.as_tensor(x)
    for f in (value_rescaling, inverse_value_rescaling):
        y = f(t)
        assert torch.all(y[1:] >= y[:-1])  # monotone (non-strict: rounding may tie)
        torch.testing.assert_close(f(-t), -y, rtol=0.0, atol=0.0)  # odd


def test_strictly_increasing_on_a_wide_grid():
    mags = np.logspace(-12, 12, 2001)
    t = torch.as_tensor(np.concatenate([-mags[::-1], [0.0], mags]))
    for f in (value_rescaling, inverse_value_rescaling):
        y = f(t)
        assert torch.all(y[1:] > y[:-1])


def test_gradients_at_zero_and_elsewhere():
    x = torch.tensor([0.0, -2.0, 5.0], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(value_rescaling(x).sum(), x)
    expected = 1.0 / (2.0 * torch.sqrt(x.detach().abs() + 1.0)) + EPS
    torch.testing.assert_close(g, expected)
    (gi,) = torch.autograd.grad(inverse_value_rescaling(x).sum(), x)
    # (h^-1)'(y) = 1 / h'(h^-1(y))
    xi = inverse_value_rescaling(x.detach())
    torch.testing.assert_close(gi, 1.0 / (1.0 / (2.0 * torch.sqrt(xi.abs() + 1.0)) + EPS))
    assert torch.autograd.gradcheck(value_rescaling, (x,))
    assert torch.autograd.gradcheck(inverse_value_rescaling, (x,))


def test_float32_and_shapes_preserved():
    x = torch.linspace(-1e4, 1e4, 101, dtype=torch.float32).reshape(1, 101, 1)
    y = value_rescaling(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    torch.testing.assert_close(inverse_value_rescaling(y), x, rtol=1e-5, atol=1e-5)


def test_input_checks():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        value_rescaling(1.0)
    with pytest.raises(TypeError, match=r"floating-point.*shape \(3,\)"):
        inverse_value_rescaling(torch.arange(3))
    for bad in (-1e-3, math.nan):
        with pytest.raises(ValueError, match="eps"):
            value_rescaling(torch.zeros(2), eps=bad)
        with pytest.raises(ValueError, match="eps"):
            inverse_value_rescaling(torch.zeros(2), eps=bad)
