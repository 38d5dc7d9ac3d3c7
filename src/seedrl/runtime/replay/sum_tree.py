"""A sum-tree over a fixed number of slots: O(log N) updates and proportional draws.

Leaf i holds a non-negative mass m_i; every inner node holds the sum of its two
children, so the root holds M = Σ_i m_i. A draw with P(i) = m_i / M descends
from the root with a target u ∈ [0, M): at a node with left-child mass L it goes
left when u < L, else right with u ← u − L. Both operations run vectorised in
numpy over a batch of indices or targets, one tree level at a time, so a batch
of k costs O(k log N) array work and no Python loop over items.

The tree holds float64 masses. Rounding can leave an inner sum a hair off the
sum of its leaves; the descent never enters a child whose mass is 0, so a draw
never lands on an empty slot (or on the padding leaves past ``capacity``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SumTree"]


class SumTree:
    """Masses of ``capacity`` slots, all 0 at first."""

    def __init__(self, capacity: int):
        if int(capacity) < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        self.capacity = int(capacity)
        self._leaves = 1 << max(0, (self.capacity - 1).bit_length())  # leaves padded to a power of two
        self._depth = self._leaves.bit_length() - 1
        self._tree = np.zeros(2 * self._leaves, dtype=np.float64)  # node 1 is the root; leaf i is node leaves + i

    @property
    def total(self) -> float:
        """Σ_i m_i."""
        return float(self._tree[1])

    def get(self, idx: np.ndarray) -> np.ndarray:
        """The masses of slots ``idx``."""
        return self._tree[self._leaves + np.asarray(idx, dtype=np.int64)]

    def set(self, idx: np.ndarray, mass: np.ndarray) -> None:
        """m[idx] = mass; with repeated indices the last one wins (as in numpy assignment)."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        mass = np.broadcast_to(np.asarray(mass, dtype=np.float64), idx.shape)
        if idx.size == 0:
            return
        if idx.min() < 0 or idx.max() >= self.capacity:
            raise IndexError(f"slot indices must be in [0, {self.capacity}), got min {idx.min()} max {idx.max()}")
        if not np.all(np.isfinite(mass)) or np.any(mass < 0):
            raise ValueError(f"masses must be finite and >= 0, got min {float(mass.min())!r} max {float(mass.max())!r}")
        nodes = self._leaves + idx
        self._tree[nodes] = mass
        nodes = np.unique(nodes >> 1)
        while nodes[0] >= 1:
            self._tree[nodes] = self._tree[2 * nodes] + self._tree[2 * nodes + 1]
            if nodes[0] == 1:
                break
            nodes = np.unique(nodes >> 1)

    def find(self, targets: np.ndarray) -> np.ndarray:
        """For each u in ``targets`` (in [0, total)), the slot i with Σ_{j<i} m_j <= u < Σ_{j<=i} m_j."""
        u = np.array(targets, dtype=np.float64).reshape(-1)
        node = np.ones(u.shape, dtype=np.int64)
        for _ in range(self._depth):
            left = 2 * node
            left_mass = self._tree[left]
            right_mass = self._tree[left + 1]
            go_right = ((u >= left_mass) & (right_mass > 0)) | (left_mass <= 0)
            u = np.where(go_right, u - left_mass, u)
            node = left + go_right
        return node - self._leaves

    def sample(self, rng: np.random.Generator, count: int, *, stratified: bool = False) -> np.ndarray:
        """``count`` slots drawn with P(i) = m_i / total.

        Independent draws (the default): u ~ U[0, M) each, i.i.d. Stratified:
        the k-th draw takes u ~ U[kM/count, (k+1)M/count), so the batch covers
        the mass evenly (lower variance; each draw alone is not ∝ m, the batch
        as a whole is: E[#draws of i] = count · m_i / M).
        """
        total = self.total
        if not total > 0:
            raise ValueError("cannot sample from a sum-tree whose total mass is 0")
        r = rng.random(count)
        if stratified:
            u = (np.arange(count) + r) * (total / count)
        else:
            u = r * total
        return self.find(np.minimum(u, np.nextafter(total, 0.0)))

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "leaves": self._tree[self._leaves : self._leaves + self.capacity].copy()}

    @classmethod
    def from_state_dict(cls, state: dict) -> "SumTree":
        tree = cls(state["capacity"])
        tree.set(np.arange(tree.capacity), state["leaves"])
        return tree
