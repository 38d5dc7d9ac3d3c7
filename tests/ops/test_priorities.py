"""Tests for seedrl.ops.priorities against a brute-force loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from seedrl.ops.priorities import sequence_priority


# ----------------------------------------------------------------------------- sequence priority


def test_sequence_priority_formula():
    td = torch.tensor([[1.0, -2.0], [3.0, 0.5], [-0.5, 0.5]])  # [T=3, B=2]
    p = sequence_priority(td)
    np.testing.assert_allclose(p.numpy(), [0.9 * 3.0 + 0.1 * 1.5, 0.9 * 2.0 + 0.1 * 1.0], rtol=1e-6)
    np.testing.assert_allclose(sequence_priority(td, eta=0.0).numpy(), [1.5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(sequence_priority(td, eta=1.0).numpy(), [3.0, 2.0], rtol=1e-6)
    torch.testing.assert_close(sequence_priority(td.T, dim=1), p)
    torch.testing.assert_close(sequence_priority(td.T, dim=-1), p)


def test_sequence_priority_mask():
    td = torch.tensor([[1.0, 9.0, 4.0], [3.0, 9.0, 4.0], [100.0, 9.0, 4.0]])
    mask = torch.tensor([[True, False, True], [True, False, False], [False, False, False]])
    p = sequence_priority(td, mask, 0.9)
    np.testing.assert_allclose(p.numpy(), [0.9 * 3.0 + 0.1 * 2.0, 0.0, 4.0], rtol=1e-6)
    torch.testing.assert_close(sequence_priority(td, mask=mask.float()), p)  # non-bool mask read as != 0
    torch.testing.assert_close(sequence_priority(td, mask=torch.ones(3, 3, dtype=torch.bool)), sequence_priority(td))


def test_sequence_priority_is_detached_and_checks_inputs():
    td = torch.rand(4, 2, requires_grad=True)
    assert not sequence_priority(td).requires_grad
    with pytest.raises(ValueError, match=r"mask\.shape = \(4, 3\)"):
        sequence_priority(td, mask=torch.ones(4, 3, dtype=torch.bool))
    for bad in (-0.1, 1.1, math.nan):
        with pytest.raises(ValueError, match="eta"):
            sequence_priority(td, eta=bad)
    with pytest.raises(ValueError, match="dim"):
        sequence_priority(td, dim=2)
    with pytest.raises(ValueError, match="td_abs"):
        sequence_priority(torch.zeros(()))
    with pytest.raises(ValueError, match="td_abs"):
        sequence_priority(torch.zeros(0, 3))
    with pytest.raises(TypeError, match="td_abs"):
        sequence_priority(torch.zeros(4, 2, dtype=torch.int64))


@settings(max_examples=60, deadline=None)
@given(
    td=hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 4)), elements=st.floats(-50, 50, width=32)),
    seed=st.integers(0, 2**16),
    eta=st.floats(0, 1),
)
def test_sequence_priority_matches_a_loop_over_valid_steps(td, seed, eta):
    mask = np.random.default_rng(seed).random(td.shape) < 0.7
    got = sequence_priority(torch.from_numpy(td), torch.from_numpy(mask), eta).numpy()
    for b in range(td.shape[1]):
        valid = [abs(float(td[t, b])) for t in range(td.shape[0]) if mask[t, b]]
        want = eta * max(valid) + (1 - eta) * sum(valid) / len(valid) if valid else 0.0
        assert got[b] == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_sequence_priority_is_reexported_from_returns():
    from seedrl.ops import returns

    assert returns.sequence_priority is sequence_priority
