"""Tests for seedrl.ops.vtrace against brute-force float64 references."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from seedrl.ops import VTraceReturns, n_step_returns, vtrace

SEQ_ARGS = ("target_log_probs", "behaviour_log_probs", "rewards", "discounts", "values")


# ----------------------------------------------------------------------------- references


def reference_vtrace(
    tlp, blp, r, d, v, boot, rho_bar=1.0, c_bar=1.0, pg_bar=1.0, lam=1.0
) -> tuple[np.ndarray, np.ndarray]:
    """O(T^2) explicit sum v_s = V_s + sum_{t>=s} (prod_{i<t} gamma_i c_i) delta_t, per column."""
    T = r.shape[0]
    rho = np.exp(tlp - blp)
    rho_t = rho if rho_bar is None else np.minimum(rho_bar, rho)
    c = lam * (rho if c_bar is None else np.minimum(c_bar, rho))
    pg_rho = rho if pg_bar is None else np.minimum(pg_bar, rho)
    v_ext = np.concatenate([v, boot[None]], axis=0)
    delta = rho_t * (r + d * v_ext[1:] - v)
    vs = np.empty_like(v)
    for s in range(T):
        total = v[s].copy()
        coef = np.ones_like(boot)
        for t in range(s, T):
            total = total + coef * delta[t]
            coef = coef * d[t] * c[t]
        vs[s] = total
    vs_ext = np.concatenate([vs, boot[None]], axis=0)
    pg = pg_rho * (r + d * vs_ext[1:] - v)
    return vs, pg


def reference_segmented(tlp, blp, r, d, v, boot, truncated, final_values, **kw):
    """Run the reference separately on each episode segment of each column [T, B].

    A segment ends after each truncated step (bootstrapping from the final
    observation's value) and at the end of the unroll (bootstrap_value).
    Terminals need no split: their zero discount cuts everything.
    """
    T, B = r.shape
    vs = np.empty_like(v)
    pg = np.empty_like(v)
    for b in range(B):
        start = 0
        for t in range(T):
            last = t == T - 1
            if truncated[t, b] or last:
                sl = slice(start, t + 1)
                seg_boot = final_values[t, b] if truncated[t, b] else boot[b]
                seg_vs, seg_pg = reference_vtrace(
                    tlp[sl, b], blp[sl, b], r[sl, b], d[sl, b], v[sl, b], np.asarray(seg_boot), **kw
                )
                vs[sl, b] = seg_vs
                pg[sl, b] = seg_pg
                start = t + 1
    return vs, pg


def call_vtrace(arrays: dict, **kw) -> VTraceReturns:
    tensors = {k: torch.as_tensor(a, dtype=torch.float64) for k, a in arrays.items()}
    return vtrace(**tensors, **kw)


def make_inputs(T: int, B: int, seed: int = 0, terminal_prob: float = 0.2) -> dict:
    rng = np.random.default_rng(seed)
    return dict(
        target_log_probs=np.log(rng.uniform(0.05, 1.0, (T, B))),
        behaviour_log_probs=np.log(rng.uniform(0.05, 1.0, (T, B))),
        rewards=rng.normal(size=(T, B)),
        discounts=0.9 * (rng.uniform(size=(T, B)) > terminal_prob),
        values=rng.normal(size=(T, B)),
        bootstrap_value=rng.normal(size=(B,)),
    )


def ref_args(a: dict) -> tuple:
    return tuple(a[k] for k in (*SEQ_ARGS, "bootstrap_value"))


# ----------------------------------------------------------------------------- properties

thresholds = st.sampled_from([None, 0.5, 1.0, 2.0])


@st.composite
def vtrace_problems(draw):
    T = draw(st.integers(1, 8))
    B = draw(st.integers(1, 3))

    def arr(shape, lo, hi):
        return draw(hnp.arrays(np.float64, shape, elements=st.floats(lo, hi, allow_nan=False)))

    discounts = arr((T, B), 0.0, 1.0)
    discounts[draw(hnp.arrays(np.bool_, (T, B)))] = 0.0  # terminals
    inputs = dict(
        target_log_probs=arr((T, B), -3.0, 0.0),
        behaviour_log_probs=arr((T, B), -3.0, 0.0),
        rewards=arr((T, B), -5.0, 5.0),
        discounts=discounts,
        values=arr((T, B), -10.0, 10.0),
        bootstrap_value=arr((B,), -10.0, 10.0),
    )
    hparams = dict(
        rho_bar=draw(thresholds), c_bar=draw(thresholds), pg_bar=draw(thresholds), lam=draw(st.floats(0.0, 1.0))
    )
    return inputs, hparams


def _kw(h: dict) -> dict:
    return dict(
        clip_rho_threshold=h["rho_bar"],
        clip_c_threshold=h["c_bar"],
        clip_pg_rho_threshold=h["pg_bar"],
        lambda_=h["lam"],
    )


@settings(max_examples=150, deadline=None)
@given(vtrace_problems())
def test_matches_explicit_sum(problem):
    inputs, h = problem
    out = call_vtrace(inputs, **_kw(h))
    vs_ref, pg_ref = reference_vtrace(*ref_args(inputs), **h)
    assert out.vs.dtype == torch.float64
    np.testing.assert_allclose(out.vs.numpy(), vs_ref, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(out.pg_advantages.numpy(), pg_ref, rtol=1e-10, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(vtrace_problems(), st.data())
def test_truncation_equals_separate_segments(problem, data):
    inputs, h = problem
    T, B = inputs["rewards"].shape
    truncated = data.draw(hnp.arrays(np.bool_, (T, B)))
    final_values = data.draw(hnp.arrays(np.float64, (T, B), elements=st.floats(-10.0, 10.0)))
    d = inputs["discounts"]
    # A truncated step is not a terminal: it keeps an ordinary discount.
    d[truncated & (d == 0.0)] = 0.9
    out = call_vtrace(
        inputs,
        truncated=torch.as_tensor(truncated),
        truncation_bootstrap_values=torch.as_tensor(np.where(truncated, final_values, np.nan)),
        **_kw(h),
    )
    vs_ref, pg_ref = reference_segmented(*ref_args(inputs), truncated, final_values, **h)
    np.testing.assert_allclose(out.vs.numpy(), vs_ref, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(out.pg_advantages.numpy(), pg_ref, rtol=1e-10, atol=1e-9)


# ----------------------------------------------------------------------------- episode boundaries


def test_terminal_and_truncated_episodes_in_one_unroll():
    """Hand-built unroll: episode A ends in a terminal, episode B is truncated, C runs on.

    t:          0  1  2 | 3  4  5 | 6  7
    episode:    A  A  A | B  B  B | C  C
    terminal at t=2 (discount 0); truncated at t=5 (discount gamma, V_final = 4.2).
    """
    T, gamma = 8, 0.95
    rng = np.random.default_rng(1)
    a = make_inputs(T, 1, seed=1, terminal_prob=0.0)
    a["discounts"][:] = gamma
    a["discounts"][2] = 0.0
    truncated = np.zeros((T, 1), dtype=bool)
    truncated[5] = True
    final_values = np.full((T, 1), np.nan)
    final_values[5] = 4.2
    # Make the importance weights matter (some rho > 1 gets clipped, some < 1 cuts traces).
    a["target_log_probs"] = rng.uniform(-2.0, 0.0, (T, 1))
    kw = dict(clip_rho_threshold=1.0, clip_c_threshold=0.9, clip_pg_rho_threshold=1.5, lambda_=0.8)

    out = call_vtrace(
        a, truncated=torch.as_tensor(truncated), truncation_bootstrap_values=torch.as_tensor(final_values), **kw
    )

    segments = [(slice(0, 3), np.array([123.0])), (slice(3, 6), np.array([4.2])), (slice(6, 8), a["bootstrap_value"])]
    for sl, boot in segments:
        seg = {k: a[k][sl] for k in SEQ_ARGS}
        seg_out = call_vtrace({**seg, "bootstrap_value": boot}, **kw)
        torch.testing.assert_close(out.vs[sl], seg_out.vs, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out.pg_advantages[sl], seg_out.pg_advantages, rtol=1e-12, atol=1e-12)

    vs_ref, pg_ref = reference_segmented(
        *ref_args(a), truncated, np.nan_to_num(final_values), rho_bar=1.0, c_bar=0.9, pg_bar=1.5, lam=0.8
    )
    np.testing.assert_allclose(out.vs.numpy(), vs_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.pg_advantages.numpy(), pg_ref, rtol=1e-12, atol=1e-12)

    # Without the truncation marker, episode B would wrongly bootstrap from C's first value.
    naive = call_vtrace(a, **kw)
    assert not torch.allclose(naive.vs[3:6], out.vs[3:6])
    torch.testing.assert_close(naive.vs[6:], out.vs[6:])
    torch.testing.assert_close(naive.vs[:3], out.vs[:3])


def test_truncated_last_step_ignores_bootstrap_value():
    a = make_inputs(4, 2, seed=3, terminal_prob=0.0)
    truncated = torch.zeros(4, 2, dtype=torch.bool)
    truncated[-1] = True
    finals = torch.full((4, 2), 7.0, dtype=torch.float64)
    out1 = call_vtrace(a, truncated=truncated, truncation_bootstrap_values=finals)
    out2 = call_vtrace({**a, "bootstrap_value": np.full(2, 7.0)})
    torch.testing.assert_close(out1.vs, out2.vs)
    torch.testing.assert_close(out1.pg_advantages, out2.pg_advantages)


def test_no_truncation_is_the_default():
    a = make_inputs(6, 3, seed=4)
    out1 = call_vtrace(a)
    out2 = call_vtrace(
        a, truncated=torch.zeros(6, 3, dtype=torch.bool), truncation_bootstrap_values=torch.full((6, 3), torch.nan)
    )
    torch.testing.assert_close(out1.vs, out2.vs)
    torch.testing.assert_close(out1.pg_advantages, out2.pg_advantages)


# ----------------------------------------------------------------------------- special cases


def brute_force_bootstrapped_return(r, d, boot):
    T = r.shape[0]
    out = np.empty_like(r)
    for s in range(T):
        total, scale = 0.0, 1.0
        for t in range(s, T):
            total += scale * r[t]
            scale *= d[t]
        out[s] = total + scale * boot
    return out


@pytest.mark.parametrize("seed", range(3))
def test_on_policy_lambda_one_is_bootstrapped_return(seed):
    a = make_inputs(7, 4, seed=seed)
    a["behaviour_log_probs"] = a["target_log_probs"].copy()
    out = call_vtrace(a, lambda_=1.0)
    expected = np.stack(
        [
            brute_force_bootstrapped_return(a["rewards"][:, b], a["discounts"][:, b], a["bootstrap_value"][b])
            for b in range(4)
        ],
        axis=1,
    )
    np.testing.assert_allclose(out.vs.numpy(), expected, rtol=1e-12, atol=1e-12)
    t = {k: torch.as_tensor(v) for k, v in a.items()}
    nstep = n_step_returns(
        rewards=t["rewards"], discounts=t["discounts"], values=t["values"], bootstrap_value=t["bootstrap_value"], n=7
    )
    torch.testing.assert_close(out.vs, nstep)
    vs_tp1 = np.concatenate([expected[1:], a["bootstrap_value"][None]])
    np.testing.assert_allclose(
        out.pg_advantages.numpy(), a["rewards"] + a["discounts"] * vs_tp1 - a["values"], rtol=1e-12, atol=1e-12
    )


def test_on_policy_lambda_zero_is_one_step_td_target():
    a = make_inputs(5, 2, seed=5)
    a["behaviour_log_probs"] = a["target_log_probs"].copy()
    out = call_vtrace(a, lambda_=0.0)
    v_tp1 = np.concatenate([a["values"][1:], a["bootstrap_value"][None]])
    np.testing.assert_allclose(out.vs.numpy(), a["rewards"] + a["discounts"] * v_tp1, rtol=1e-12, atol=1e-12)


def test_outputs_carry_no_gradient():
    a = make_inputs(5, 3, seed=6)
    t = {k: torch.as_tensor(v).requires_grad_(True) for k, v in a.items()}
    before = {k: v.detach().clone() for k, v in t.items()}
    with torch.enable_grad():
        out = vtrace(**t)
    assert isinstance(out, VTraceReturns)
    for x in out:
        assert not x.requires_grad
        assert x.grad_fn is None
    for k, v in t.items():  # inputs untouched
        torch.testing.assert_close(v.detach(), before[k])


def test_single_and_multi_batch_dims_and_dtype_promotion():
    a = make_inputs(4, 6, seed=7)
    out = call_vtrace(a)
    # [T] (no batch) and [T, 2, 3] layouts give the same numbers column-wise.
    col = call_vtrace({k: v[..., 2] for k, v in a.items()})
    torch.testing.assert_close(col.vs, out.vs[:, 2])
    grid = call_vtrace({k: v.reshape(v.shape[:-1] + (2, 3)) for k, v in a.items()})
    torch.testing.assert_close(grid.vs, out.vs.reshape(4, 2, 3))
    # float32 inputs stay float32; mixing with float64 promotes.
    t32 = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in a.items()}
    assert vtrace(**t32).vs.dtype == torch.float32
    assert vtrace(**{**t32, "values": t32["values"].double()}).vs.dtype == torch.float64


def test_empty_unroll():
    out = call_vtrace({k: np.zeros((0, 2)) for k in SEQ_ARGS} | {"bootstrap_value": np.zeros(2)})
    assert out.vs.shape == (0, 2) and out.pg_advantages.shape == (0, 2)


# ----------------------------------------------------------------------------- input checks


@pytest.mark.parametrize("name", SEQ_ARGS)
def test_bad_sequence_shape_names_argument(name):
    a = make_inputs(5, 3)
    a[name] = np.zeros((5, 4))
    with pytest.raises(ValueError, match=rf"{name}\.shape = \(5, 4\)"):
        call_vtrace(a)


@pytest.mark.parametrize("shape", [(3, 3), (4,), ()])
def test_bad_bootstrap_shape_names_argument(shape):
    a = make_inputs(5, 3)
    a["bootstrap_value"] = np.zeros(shape)
    with pytest.raises(ValueError, match=r"bootstrap_value must have shape .*got " + re.escape(str(shape))):
        call_vtrace(a)


def test_scalar_values_rejected():
    a = {k: np.float64(0.0) for k in (*SEQ_ARGS, "bootstrap_value")}
    with pytest.raises(ValueError, match="values must have shape"):
        call_vtrace(a)


def test_bad_truncation_arguments():
    a = make_inputs(5, 3)
    with pytest.raises(ValueError, match="truncated and truncation_bootstrap_values"):
        call_vtrace(a, truncated=torch.zeros(5, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="truncated and truncation_bootstrap_values"):
        call_vtrace(a, truncation_bootstrap_values=torch.zeros(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"truncated\.shape = \(5, 2\)"):
        call_vtrace(
            a, truncated=torch.zeros(5, 2, dtype=torch.bool), truncation_bootstrap_values=torch.zeros(5, 3).double()
        )
    with pytest.raises(ValueError, match=r"truncation_bootstrap_values\.shape = \(3,\)"):
        call_vtrace(
            a, truncated=torch.zeros(5, 3, dtype=torch.bool), truncation_bootstrap_values=torch.zeros(3).double()
        )


def test_bad_hyperparameters_and_dtypes():
    a = make_inputs(5, 3)
    for name in ("clip_rho_threshold", "clip_c_threshold", "clip_pg_rho_threshold"):
        for bad in (0.0, -1.0, math.nan):
            with pytest.raises(ValueError, match=name):
                call_vtrace(a, **{name: bad})
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="lambda_"):
            call_vtrace(a, lambda_=bad)
    t = {k: torch.as_tensor(v) for k, v in a.items()}
    with pytest.raises(TypeError, match="rewards"):
        vtrace(**{**t, "rewards": torch.zeros(5, 3, dtype=torch.int64)})
    with pytest.raises(TypeError, match="values"):
        vtrace(**{**t, "values": a["values"]})
    with pytest.raises(TypeError):
        vtrace(*t.values())  # all arguments are keyword-only
