"""Prioritized sequence replay (R2D2, as in SEED RL).

Sequences of ``L = burn_in + unroll_length + 1`` entries, one per environment
column of an inserted :class:`~seedrl.runtime.unrolls.Unroll`, each with the
recurrent state at its first entry and a priority p_i > 0. Sampling draws
sequence i with

.. math::

    P(i) = p_i^\\alpha / \\sum_k p_k^\\alpha

from a sum-tree (independent draws by default, as SEED's categorical draw;
``stratified=True`` draws one target per equal slice of the mass), and returns
importance weights

.. math::

    w_i = ((1/N) / P(i))^\\beta / \\max_{j \\in batch} ((1/N) / P(j))^\\beta

(N the number of stored sequences; normalised by the batch's max, as SEED).
Priorities are clipped below at ``min_priority`` (default 1e-6) so every
stored sequence stays reachable; NaN, infinite or negative priorities are a
ValueError. At capacity, each insert evicts the oldest sequences (FIFO).
Sequence ids count up from 0; the slot of id i is ``i % capacity``.

Entries are stored once per stream, frames once per frame stack
(:mod:`seedrl.runtime.replay.storage`).

Threads: every method takes the replay's lock, so inference may insert while
the learner samples; :meth:`sample` builds its batch outside the lock (the
chunks it reads are immutable), so an insert waits only for the draw.
"""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import numpy as np
import torch

from seedrl.durable import fsync_dir
from seedrl.runtime.replay.storage import SeqRef, StepStore
from seedrl.runtime.replay.sum_tree import SumTree
from seedrl.runtime.unrolls import Unroll

__all__ = ["SequenceReplay"]

_FORMAT = 1


def _check_priorities(name: str, p: np.ndarray, n: int) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if p.shape != (n,):
        raise ValueError(f"{name} must have one value per sequence ({n}), got shape {p.shape}")
    bad = ~np.isfinite(p) | (p < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{i}] = {float(p[i])!r}: priorities must be finite and >= 0")
    return p


class SequenceReplay:
    """Prioritized FIFO replay of fixed-length sequences (see the module docstring)."""

    def __init__(
        self,
        capacity: int,
        sequence_length: int,
        overlap: int,
        *,
        alpha: float = 0.9,
        beta: float = 0.6,
        seed: int = 0,
        min_priority: float = 1e-6,
        stratified: bool = False,
        frame_stack: bool | str = "auto",
        compression: str = "none",
    ):
        if int(capacity) < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        if int(sequence_length) < 2:
            raise ValueError(f"sequence_length must be >= 2, got {sequence_length!r}")
        if not 0 <= int(overlap) < int(sequence_length):
            raise ValueError(f"overlap must be in [0, sequence_length={sequence_length}), got {overlap!r}")
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha!r}")
        if not min_priority > 0:
            raise ValueError(f"min_priority must be > 0, got {min_priority!r}")
        self.capacity = int(capacity)
        self.sequence_length = int(sequence_length)
        self.overlap = int(overlap)
        self.alpha = float(alpha)
        self.beta = beta
        self.min_priority = float(min_priority)
        self.stratified = bool(stratified)
        self.rng = np.random.default_rng(seed)
        self.tree = SumTree(self.capacity)
        self.store = StepStore(self.sequence_length, self.overlap, frame_stack=frame_stack, compression=compression)
        self.refs: list[SeqRef | None] = [None] * self.capacity
        self.finals: list[dict[int, np.ndarray] | None] = [None] * self.capacity
        self.states: tuple[np.ndarray, ...] | None = None
        self.next_id = 0
        self.size = 0
        self.max_priority = 0.0  # largest priority given so far (seeded sequences default to it)
        self._lock = threading.RLock()

    # -------------------------------------------------------------------------------------------- settings
    @property
    def beta(self) -> float:
        """Importance-sampling exponent; settable (annealing)."""
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {value!r}")
        self._beta = float(value)

    def __len__(self) -> int:
        return self.size

    # -------------------------------------------------------------------------------------------- insert
    def insert(self, unroll: Unroll, priorities: np.ndarray) -> np.ndarray:
        """Store each env column n of ``unroll`` as one sequence of stream (unroll.actor_id, n) with
        priority ``priorities[n]``; returns their ids. A continuing unroll (``unroll.continues``) shares
        its first ``overlap`` entries with the stream's stored ones. Evicts the oldest sequences at capacity."""
        with self._lock:
            return self._insert(unroll, priorities)

    def _insert(self, unroll: Unroll, priorities: np.ndarray) -> np.ndarray:
        arrays = unroll.arrays
        self.store.check_layout(arrays)
        n = arrays["obs"].shape[1]
        if n > self.capacity:
            raise ValueError(f"an unroll of {n} envs does not fit a replay of capacity {self.capacity}")
        p = _check_priorities("priorities", priorities, n)
        states = tuple(s.detach().cpu().numpy() for s in unroll.state0)
        self._check_states(states, n)
        if self.store.obs_shape is None:
            self.store.set_layout(arrays)
        keys = [(int(unroll.actor_id), j) for j in range(n)]
        streams = [self.store.continuation(keys[j], arrays, j, unroll.continues) for j in range(n)]
        # Everything is checked: from here on nothing raises on bad input.
        new_refs = [self.store.append(keys[j], arrays, j, streams[j]) for j in range(n)]
        ids = self.next_id + np.arange(n, dtype=np.int64)
        slots = ids % self.capacity
        oldest_live = self.next_id - self.size
        for i, slot in zip(ids, slots):
            if i - self.capacity >= oldest_live:  # slot holds a live sequence: evict it (FIFO)
                self.store.release(self.refs[slot])
            self.refs[slot] = new_refs[int(i - ids[0])]
        finals_by_env: dict[int, dict[int, np.ndarray]] = {}
        for (t, j), o in unroll.final_obs.items():
            finals_by_env.setdefault(j, {})[t] = np.array(o)
        for j, slot in enumerate(slots):
            self.finals[slot] = finals_by_env.get(j) or None
        if self.states is None:
            self.states = tuple(np.zeros((self.capacity, *s.shape[1:]), s.dtype) for s in states)
        for dst, src in zip(self.states, states):
            dst[slots] = src
        self.next_id += n
        self.size = min(self.size + n, self.capacity)
        self._set_priorities(slots, p)
        return ids

    def _check_states(self, states: tuple[np.ndarray, ...], n: int) -> None:
        for k, s in enumerate(states):
            if s.ndim < 1 or s.shape[0] != n:
                raise ValueError(f"unroll.state0[{k}] must be [N={n}, ...], got shape {s.shape}")
        if self.states is not None:
            got = [(s.shape[1:], s.dtype) for s in states]
            want = [(s.shape[1:], s.dtype) for s in self.states]
            if got != want:
                raise ValueError(f"unroll.state0 shapes/dtypes per env {got} differ from the stored {want}")

    def _set_priorities(self, slots: np.ndarray, p: np.ndarray) -> None:
        p = np.maximum(p, self.min_priority)
        self.max_priority = max(self.max_priority, float(p.max(initial=0.0)))
        self.tree.set(slots, p**self.alpha)

    # -------------------------------------------------------------------------------------------- sample
    def probabilities(self, ids: np.ndarray) -> np.ndarray:
        """P(i) = p_i^α / Σ_k p_k^α of live sequences ``ids``."""
        with self._lock:
            return self.tree.get(self._live_slots(ids, "ids")) / self.tree.total

    def sample(self, batch_size: int) -> tuple[np.ndarray, Unroll, np.ndarray]:
        """``(ids, batch, weights)``: ``batch_size`` sequences drawn with P(i) ∝ p_i^α, as one Unroll of
        ``[L, batch_size, ...]`` arrays (state0 stacked, final_obs keyed by (t, batch column)), and
        their importance weights ((1/N)/P(i))^β / max, float32. An Atari batch is ~220 MB: drop the
        previous one before drawing the next (holding it makes the draw ~3x slower)."""
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        with self._lock:
            if self.size == 0:
                raise ValueError("cannot sample from an empty replay")
            slots = self.tree.sample(self.rng, int(batch_size), stratified=self.stratified)
            ids = self._slot_ids(slots)
            probs = self.tree.get(slots) / self.tree.total
            w = (1.0 / (self.size * probs)) ** self.beta
            weights = (w / w.max()).astype(np.float32)
            seqs, state0, finals = self._resolve(slots)
        return ids, self._batch(seqs, state0, finals), weights

    def read(self, ids: np.ndarray) -> Unroll:
        """The live sequences ``ids`` as one Unroll ``[L, len(ids), ...]`` (as :meth:`sample` returns them)."""
        with self._lock:
            seqs, state0, finals = self._resolve(self._live_slots(ids, "ids"))
        return self._batch(seqs, state0, finals)

    def _resolve(self, slots: np.ndarray):
        state0 = tuple(torch.from_numpy(s[slots]) for s in (self.states or ()))
        finals = {(t, b): o for b, s in enumerate(slots) if self.finals[s] for t, o in self.finals[s].items()}
        return self.store.resolve([self.refs[s] for s in slots]), state0, finals

    def _batch(self, seqs, state0, finals) -> Unroll:
        return Unroll(self.store.gather(seqs), state0, finals, actor_id=-1)

    def _slot_ids(self, slots: np.ndarray) -> np.ndarray:
        """The live id in each slot: the id i with i % capacity == slot and next_id - size <= i < next_id."""
        newest = self.next_id - 1
        return newest - ((newest - slots) % self.capacity)

    def _live_slots(self, ids: np.ndarray, name: str) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        bad = (ids < self.next_id - self.size) | (ids >= self.next_id)
        if bad.any():
            raise ValueError(f"{name} {ids[bad][:5].tolist()} are not stored (live ids: {self.next_id - self.size}..{self.next_id - 1})")
        return ids % self.capacity

    def update_priorities(self, ids: np.ndarray, priorities: np.ndarray) -> None:
        """Set the priorities of sequences ``ids`` (after a learner step). Ids already evicted are
        ignored; ids never issued are a ValueError. With repeated ids the last value wins."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        p = _check_priorities("priorities", priorities, len(ids))
        with self._lock:
            self._update(ids, p)

    def _update(self, ids: np.ndarray, p: np.ndarray) -> None:
        if (ids >= self.next_id).any() or (ids < 0).any():
            raise ValueError(f"ids {ids[(ids >= self.next_id) | (ids < 0)][:5].tolist()} were never issued (next id: {self.next_id})")
        live = ids >= self.next_id - self.size
        self._set_priorities(ids[live] % self.capacity, p[live])

    # -------------------------------------------------------------------------------------------- accounting
    def memory(self) -> dict[str, float]:
        """Bytes held by the stored data: the storage's figures (``frames``, ``fields``, ``tails``, counts
        ``entries``, ``frames_stored``, ``chunks``) plus ``states`` (recurrent states), ``finals``
        (truncation observations), ``total`` and ``bytes_per_entry`` = total / stored entries."""
        with self._lock:
            return self._memory()

    def _memory(self) -> dict[str, float]:
        mem = dict(self.store.memory())
        mem["states"] = sum(s.nbytes for s in self.states) if self.states else 0
        mem["finals"] = sum(o.nbytes for f in self.finals if f for o in f.values())
        mem["total"] = mem["frames"] + mem["fields"] + mem["tails"] + mem["states"] + mem["finals"] + self.tree._tree.nbytes
        mem["bytes_per_entry"] = mem["total"] / max(mem["entries"], 1)
        return mem

    # -------------------------------------------------------------------------------------------- save / load
    def state_dict(self) -> dict:
        """Everything a resumed run needs to sample exactly as this one would: contents, priorities,
        FIFO position and the generator's state."""
        return {"format": _FORMAT, "replay": {k: v for k, v in self.__dict__.items() if k != "_lock"}}

    @classmethod
    def from_state_dict(cls, state: dict) -> "SequenceReplay":
        if state.get("format") != _FORMAT:
            raise ValueError(f"replay state format {state.get('format')!r} is not the supported {_FORMAT}")
        replay = cls.__new__(cls)
        replay.__dict__.update(state["replay"])
        replay._lock = threading.RLock()
        return replay

    def save(self, path: str | os.PathLike) -> None:
        """Write the replay to ``path`` atomically (a temporary file, fsynced, renamed over it)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with self._lock, open(tmp, "wb") as f:
            pickle.dump(self.state_dict(), f, protocol=5)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SequenceReplay":
        """A replay saved by :meth:`save` (a pickle: load only files you wrote)."""
        with open(path, "rb") as f:
            try:
                state = pickle.load(f)
            except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as e:
                raise ValueError(f"{path} is not a replay written by SequenceReplay.save ({type(e).__name__}: {e})") from e
        if not isinstance(state, dict):
            raise ValueError(f"{path} is not a replay written by SequenceReplay.save (holds a {type(state).__name__})")
        return cls.from_state_dict(state)
