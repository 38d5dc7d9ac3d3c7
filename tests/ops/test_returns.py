"""Tests for seedrl.ops.returns against brute-force Python loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from seedrl.ops import (
    double_q_n_step_targets,
    inverse_value_rescaling,
    n_step_returns,
    value_rescaling,
)

# ----------------------------------------------------------------------------- references


def h(x, eps=1e-3):
    return math.copysign(math.sqrt(abs(x) + 1.0) - 1.0, x) + eps * x


def h_inv(x, eps=1e-3):
    return math.copysign(((math.sqrt(1.0 + 4.0 * eps * (abs(x) + 1.0 + eps)) - 1.0) / (2.0 * eps)) ** 2 - 1.0, x)


def brute_n_step(r, d, v, boot, n):
    """Loops over a single column; v[t] = V(x_t), V(x_T) = boot."""
    T = len(r)
    v_ext = list(v) + [boot]
    out = np.empty(T)
    for t in range(T):
        total, scale = 0.0, 1.0
        for k in range(n):
            if t + k >= T:
                break
            total += scale * r[t + k]
            scale *= d[t + k]
        out[t] = total + scale * v_ext[min(t + n, T)]
    return out


def brute_double_q(q_online, q_target, r, d, n, rescale=True, eps=1e-3):
    """Loops over a single column; q_* are [T + 1, A]."""
    T = len(r)
    out = np.empty(T)
    for t in range(T):
        total, scale, k = 0.0, 1.0, 0
        while k < n and t + k < T:
            total += scale * r[t + k]
            scale *= d[t + k]
            k += 1
        s = t + k  # bootstrap state s_{t+m_t}
        a_star = int(np.argmax(q_online[s]))
        q = q_target[s, a_star]
        boot = h_inv(q, eps) if rescale else q
        y = total + scale * boot
        out[t] = h(y, eps) if rescale else y
    return out


def t64(x):
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


# ----------------------------------------------------------------------------- n-step returns


@st.composite
def n_step_problems(draw):
    T = draw(st.integers(1, 9))
    B = draw(st.integers(1, 3))
    n = draw(st.integers(1, 12))

    def arr(shape, lo, hi):
        return draw(hnp.arrays(np.float64, shape, elements=st.floats(lo, hi, allow_nan=False)))

    d = arr((T, B), 0.0, 1.0)
    d[draw(hnp.arrays(np.bool_, (T, B)))] = 0.0
    return arr((T, B), -5.0, 5.0), d, arr((T, B), -10.0, 10.0), arr((B,), -10.0, 10.0), n


@settings(max_examples=100, deadline=None)
@given(n_step_problems())
def test_n_step_returns_matches_loops(problem):
    r, d, v, boot, n = problem
    out = n_step_returns(rewards=t64(r), discounts=t64(d), values=t64(v), bootstrap_value=t64(boot), n=n)
    expected = np.stack([brute_n_step(r[:, b], d[:, b], v[:, b], boot[b], n) for b in range(r.shape[1])], axis=1)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_n_step_hand_computed():
    # T = 4, n = 2, gamma = 0.5, terminal after step 1.
    r = t64([[1.0], [2.0], [3.0], [4.0]])
    d = t64([[0.5], [0.0], [0.5], [0.5]])
    v = t64([[10.0], [20.0], [30.0], [40.0]])
    boot = t64([50.0])
    out = n_step_returns(rewards=r, discounts=d, values=v, bootstrap_value=boot, n=2)
    expected = [
        1.0 + 0.5 * 2.0 + 0.5 * 0.0 * 30.0,  # cut by the terminal
        2.0 + 0.0 * 3.0 + 0.0 * 40.0,
        3.0 + 0.5 * 4.0 + 0.25 * 50.0,
        4.0 + 0.5 * 50.0,  # shorter return at the end
    ]
    np.testing.assert_allclose(out[:, 0].numpy(), expected)


def test_n_step_one_is_td_target_and_large_n_is_monte_carlo():
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    d = np.full((6, 2), 0.9)
    boot = rng.normal(size=2)
    args = dict(rewards=t64(r), discounts=t64(d), values=t64(v), bootstrap_value=t64(boot))
    v_tp1 = np.concatenate([v[1:], boot[None]])
    np.testing.assert_allclose(n_step_returns(**args, n=1).numpy(), r + d * v_tp1, rtol=1e-12)
    mc = n_step_returns(**args, n=6)
    torch.testing.assert_close(mc, n_step_returns(**args, n=100))
    np.testing.assert_allclose(mc[0].numpy(), sum(0.9**k * r[k] for k in range(6)) + 0.9**6 * boot, rtol=1e-12)


def test_n_step_is_detached_and_checks_inputs():
    args = dict(
        rewards=torch.zeros(5, 3, requires_grad=True),
        discounts=torch.ones(5, 3),
        values=torch.zeros(5, 3, requires_grad=True),
        bootstrap_value=torch.zeros(3, requires_grad=True),
    )
    out = n_step_returns(**args, n=2)
    assert not out.requires_grad and out.dtype == torch.float32
    for name in ("discounts", "values"):
        with pytest.raises(ValueError, match=rf"{name}\.shape = \(5, 4\)"):
            n_step_returns(**{**args, name: torch.zeros(5, 4)}, n=2)
    with pytest.raises(ValueError, match=r"bootstrap_value must have shape .*got \(5, 3\)"):
        n_step_returns(**{**args, "bootstrap_value": torch.zeros(5, 3)}, n=2)
    with pytest.raises(ValueError, match="rewards must have shape"):
        n_step_returns(rewards=torch.zeros(()), discounts=torch.zeros(()), values=torch.zeros(()),
                       bootstrap_value=torch.zeros(()), n=1)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n must be"):
            n_step_returns(**args, n=bad)
    with pytest.raises(TypeError, match="rewards"):
        n_step_returns(**{**args, "rewards": torch.zeros(5, 3, dtype=torch.int32)}, n=2)


# ----------------------------------------------------------------------------- double-Q targets


@st.composite
def double_q_problems(draw):
    T = draw(st.integers(1, 8))
    B = draw(st.integers(1, 3))
    A = draw(st.integers(1, 4))
    n = draw(st.integers(1, 10))

    def arr(shape, lo, hi):
        return draw(hnp.arrays(np.float64, shape, elements=st.floats(lo, hi, allow_nan=False)))

    d = np.where(draw(hnp.arrays(np.bool_, (T, B))), 0.0, 0.997)
    return arr((T + 1, B, A), -20.0, 20.0), arr((T + 1, B, A), -20.0, 20.0), arr((T, B), -5.0, 5.0), d, n


@settings(max_examples=100, deadline=None)
@given(double_q_problems(), st.booleans())
def test_double_q_matches_loops(problem, rescale):
    qo, qt, r, d, n = problem
    out = double_q_n_step_targets(
        q_online=t64(qo), q_target=t64(qt), rewards=t64(r), discounts=t64(d), n=n, rescale=rescale
    )
    expected = np.stack(
        [brute_double_q(qo[:, b], qt[:, b], r[:, b], d[:, b], n, rescale) for b in range(r.shape[1])], axis=1
    )
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-9, atol=1e-9)


def test_double_q_uses_online_argmax_and_target_value():
    # T = 1, n = 1: y_0 = h(r_0 + gamma h^-1(Q_target(s_1, argmax_a Q_online(s_1, a)))).
    qo = t64([[[0.0, 0.0]], [[1.0, 5.0]]])  # online prefers action 1 at s_1
    qt = t64([[[0.0, 0.0]], [[9.0, 2.0]]])  # target would prefer action 0
    out = double_q_n_step_targets(q_online=qo, q_target=qt, rewards=t64([[1.0]]), discounts=t64([[0.5]]), n=1)
    assert out.item() == pytest.approx(h(1.0 + 0.5 * h_inv(2.0)), rel=1e-12)
    plain = double_q_n_step_targets(
        q_online=qo, q_target=qt, rewards=t64([[1.0]]), discounts=t64([[0.5]]), n=1, rescale=False
    )
    assert plain.item() == pytest.approx(2.0)
    # Agrees with n_step_returns on the rescaled bootstrap values.
    rng = np.random.default_rng(2)
    qo, qt = t64(rng.normal(size=(7, 2, 3))), t64(rng.normal(size=(7, 2, 3)))
    r, d = t64(rng.normal(size=(6, 2))), t64(np.full((6, 2), 0.99))
    boot = inverse_value_rescaling(qt.gather(-1, qo.argmax(-1, keepdim=True)).squeeze(-1))
    expected = value_rescaling(n_step_returns(rewards=r, discounts=d, values=boot[:-1], bootstrap_value=boot[-1], n=3))
    torch.testing.assert_close(
        double_q_n_step_targets(q_online=qo, q_target=qt, rewards=r, discounts=d, n=3), expected
    )


def test_double_q_is_detached_and_checks_inputs():
    args = dict(
        q_online=torch.zeros(6, 3, 4, requires_grad=True),
        q_target=torch.zeros(6, 3, 4, requires_grad=True),
        rewards=torch.zeros(5, 3),
        discounts=torch.ones(5, 3),
    )
    assert not double_q_n_step_targets(**args, n=3).requires_grad
    with pytest.raises(ValueError, match=r"q_online must have shape .*got \(5, 3, 4\)"):
        double_q_n_step_targets(**{**args, "q_online": torch.zeros(5, 3, 4)}, n=3)
    with pytest.raises(ValueError, match=r"q_online must have shape .*got \(6, 3\)"):
        double_q_n_step_targets(**{**args, "q_online": torch.zeros(6, 3)}, n=3)
    with pytest.raises(ValueError, match=r"q_target must have shape .*got \(6, 3, 5\)"):
        double_q_n_step_targets(**{**args, "q_target": torch.zeros(6, 3, 5)}, n=3)
    with pytest.raises(ValueError, match=r"discounts\.shape = \(5, 2\)"):
        double_q_n_step_targets(**{**args, "discounts": torch.zeros(5, 2)}, n=3)
    with pytest.raises(ValueError, match="n must be"):
        double_q_n_step_targets(**args, n=0)
    with pytest.raises(ValueError, match="eps"):
        double_q_n_step_targets(**args, n=1, eps=-1.0)
