"""Fixed-length windows over a dataset's episodes, and which reader gets which item.

Pure numpy index arithmetic (no step is read here), shared by the PyTorch
data path (:mod:`seedrl.data.torch`) and anything else that walks windows.

**Windows.** An episode of ``n`` steps has windows starting at
``s = 0, shift, 2 shift, ...``; the window at ``s`` holds the steps
``s, s + stride, ..., s + (length - 1) stride`` that exist (``< n``). With
``span = (length - 1) stride + 1`` the steps a whole window covers:

- ``boundary="pad"``: every start ``s < n`` makes a window, cut at the
  episode's end (the rest is padding, mask False): ``ceil(n / shift)``
  windows, of which the one at ``s`` has ``min(length, ceil((n - s) / stride))``
  real steps;
- ``boundary="drop"``: only whole windows, ``s + span <= n``:
  ``floor((n - span) / shift) + 1`` windows if ``n >= span``, else none.

Window ``w`` of the dataset is the ``(w - C[e])``-th window of episode ``e``,
where ``C`` is the cumulative window count and ``C[e] <= w < C[e + 1]``.
This is ``rlds.transformations.batch`` (``size=length``) per episode, with
``drop_remainder`` as ``boundary="drop"``.

**Epoch plans.** An epoch visits the ``n`` items in the order
``permutation_{seed, epoch}(n)`` (or ``0..n-1`` unshuffled). Rank ``r`` of
``R`` takes positions ``r, r + R, ...`` of that order (``drop_last``: the
order is first cut to ``R floor(n / R)`` items, so every rank gets as many),
skips the first ``start`` of its share (resuming), and cuts the rest into
batches; reader (DataLoader worker) ``k`` of ``K`` takes batches
``k, k + K, ...``, which is the order a DataLoader hands them out in, so the
batches arrive in plan order whatever ``K``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from seedrl.data.errors import DataError

BOUNDARIES = ("pad", "drop")


class WindowIndex:
    """Window numbers <-> (episode, first step, real steps), for episodes of ``lengths`` steps."""

    def __init__(self, lengths: Sequence[int], length: int, shift: int | None = None, stride: int = 1,
                 boundary: str = "pad"):
        shift = length if shift is None else shift
        for name, value in (("length", length), ("shift", shift), ("stride", stride)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise DataError(f"window {name} must be an int >= 1, got {value!r}")
        if boundary not in BOUNDARIES:
            raise DataError(f"window boundary {boundary!r}: must be one of {list(BOUNDARIES)}")
        self.length, self.shift, self.stride, self.boundary = int(length), int(shift), int(stride), boundary
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        self.span = (self.length - 1) * self.stride + 1
        counts = self.counts(self.lengths)
        self.cum = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])

    def counts(self, n: np.ndarray) -> np.ndarray:
        """Windows in episodes of ``n`` steps (see the module doc)."""
        n = np.asarray(n, dtype=np.int64)
        if self.boundary == "pad":
            return (n + self.shift - 1) // self.shift
        return np.where(n >= self.span, (n - self.span) // self.shift + 1, 0)

    def __len__(self) -> int:
        return int(self.cum[-1])

    def locate(self, w: int) -> tuple[int, int, int]:
        """Window ``w`` -> (episode index, first step, number of real steps)."""
        if not 0 <= w < len(self):
            raise IndexError(f"window {w} out of range for {len(self)} windows")
        e = int(np.searchsorted(self.cum, w, side="right")) - 1
        start = int(w - self.cum[e]) * self.shift
        n = int(self.lengths[e])
        return e, start, min(self.length, (n - start + self.stride - 1) // self.stride)


def epoch_order(n: int, epoch: int, seed: int, shuffle: bool) -> np.ndarray:
    """The order an epoch visits items ``0..n-1`` in: seeded by (seed, epoch), the same on every rank."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n).astype(np.int64)


def rank_share(n: int, epoch: int, seed: int, shuffle: bool, rank: int, world_size: int,
               drop_last: bool = False) -> np.ndarray:
    """Items rank ``rank`` of ``world_size`` visits this epoch, in order (disjoint across ranks)."""
    if not 0 <= rank < world_size:
        raise DataError(f"rank must be in 0..world_size-1, got rank={rank} world_size={world_size}")
    order = epoch_order(n, epoch, seed, shuffle)
    if drop_last:
        order = order[: n // world_size * world_size]
    return order[rank::world_size]


def plan_batches(share: np.ndarray, batch_size: int, start: int = 0, drop_last: bool = False) -> list[np.ndarray]:
    """A rank's share from position ``start`` on, cut into batches (``drop_last``: no short last batch)."""
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= start <= len(share):
        raise DataError(f"position {start} is past the end of this rank's {len(share)} items")
    rest = share[start:]
    cut = len(rest) // batch_size * batch_size if drop_last else len(rest)
    return [rest[i : i + batch_size] for i in range(0, cut, batch_size)]


__all__ = ["BOUNDARIES", "WindowIndex", "epoch_order", "plan_batches", "rank_share"]
