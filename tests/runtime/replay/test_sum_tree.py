"""The sum-tree against brute force: totals, descents, proportional draws."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seedrl.runtime.replay.sum_tree import SumTree


def chi2_critical(df: int, z: float = 3.719) -> float:
    """Wilson-Hilferty upper quantile of chi-square(df); z = 3.719 is the one-sided 1e-4 normal quantile."""
    return df * (1 - 2 / (9 * df) + z * np.sqrt(2 / (9 * df))) ** 3


@settings(max_examples=80, deadline=None)
@given(
    capacity=st.integers(1, 40),
    updates=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 9)), min_size=1, max_size=60),
    targets=st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=20),
)
def test_total_and_descent_match_brute_force(capacity, updates, targets):
    tree = SumTree(capacity)
    mass = np.zeros(capacity)
    for i, m in updates:
        i %= capacity
        # integer masses: every partial sum is exact, so the descent must equal a cumsum search
        tree.set(np.array([i]), np.array([float(m)]))
        mass[i] = m
    assert tree.total == mass.sum()
    np.testing.assert_array_equal(tree.get(np.arange(capacity)), mass)
    if mass.sum() == 0:
        return
    u = np.array(targets) * mass.sum()
    expected = np.searchsorted(np.cumsum(mass), u, side="right")
    got = tree.find(u)
    np.testing.assert_array_equal(got, expected)
    assert np.all(mass[got] > 0)


def test_batched_set_equals_one_by_one_and_last_repeat_wins():
    rng = np.random.default_rng(0)
    a, b = SumTree(37), SumTree(37)
    idx = rng.integers(0, 37, 200)
    vals = rng.random(200)
    a.set(idx, vals)
    for i, v in zip(idx, vals):
        b.set(np.array([i]), np.array([v]))
    np.testing.assert_array_equal(a._tree, b._tree)


@pytest.mark.parametrize("stratified", [False, True])
def test_draw_frequencies_are_proportional_to_mass(stratified):
    mass = np.array([1.0, 2.0, 0.0, 5.0, 0.5, 3.0, 0.0, 8.0, 1.5, 4.0])
    tree = SumTree(len(mass))
    tree.set(np.arange(len(mass)), mass)
    rng = np.random.default_rng(1)
    draws = np.concatenate([tree.sample(rng, 64, stratified=stratified) for _ in range(500)])
    counts = np.bincount(draws, minlength=len(mass))
    assert counts[mass == 0].sum() == 0
    expected = len(draws) * mass / mass.sum()
    nz = mass > 0
    stat = ((counts[nz] - expected[nz]) ** 2 / expected[nz]).sum()
    assert stat < chi2_critical(int(nz.sum()) - 1)


def test_bad_input_is_refused():
    tree = SumTree(4)
    with pytest.raises(ValueError, match="masses"):
        tree.set(np.array([0]), np.array([np.nan]))
    with pytest.raises(ValueError, match="masses"):
        tree.set(np.array([0]), np.array([-1.0]))
    with pytest.raises(IndexError, match="slot"):
        tree.set(np.array([4]), np.array([1.0]))
    with pytest.raises(ValueError, match="total mass is 0"):
        tree.sample(np.random.default_rng(0), 3)
    with pytest.raises(ValueError, match="capacity"):
        SumTree(0)
