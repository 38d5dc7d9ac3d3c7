"""Weight publication from the learner to central inference, with no wait on either side.

The learner used to copy its weights into the inference network in place under
a lock that inference also held for its whole forward pass, so every publish
waited for the forward pass in flight (~360 ms measured under load, on a
2-core machine shared with other jobs). :class:`WeightsMailbox` replaces that
lock with a reference swap:

* :meth:`WeightsMailbox.post` (the learner): clones the network's parameters
  and buffers into a fresh snapshot — outside any lock — and makes it the
  latest one. The only lock is held for the swap of one reference.
* :meth:`WeightsMailbox.apply` (inference, before each forward pass): takes the
  latest snapshot, if one is newer than what it holds, and copies it into its
  own network, in its own thread.

A snapshot is never written after it is posted, and only the inference thread
writes the inference network, so a forward pass always runs on the whole
weights of one version (never a mix of two updates), and the version
inference stamps on its unrolls is the version of the weights it used.
Snapshots inference never took are dropped (it only needs the latest).
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

from seedrl.runtime.transport import aligned, release_shared_memory

__all__ = ["SharedWeights", "WeightsMailbox"]


def _tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers()]


class WeightsMailbox:
    """The latest published weights and their version (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # held only to swap ``_latest``
        self._latest: tuple[int, list[torch.Tensor]] | None = None

    @torch.no_grad()
    def post(self, model: torch.nn.Module, version: int) -> None:
        """Publish ``model``'s parameters and buffers as ``version`` (a copy: later updates do not touch it)."""
        snapshot = [t.detach().clone() for t in _tensors(model)]
        with self._lock:
            self._latest = (int(version), snapshot)

    @torch.no_grad()
    def apply(self, model: torch.nn.Module) -> int | None:
        """Copy the latest snapshot into ``model`` if one was posted since the last call; its version, else None.

        ``model`` must have the posted network's structure (same parameters and
        buffers, in order); a mismatch is a ValueError naming the counts.
        """
        with self._lock:
            latest, self._latest = self._latest, None
        if latest is None:
            return None
        version, snapshot = latest
        targets = _tensors(model)
        _check_count(len(snapshot), len(targets))
        for dst, src in zip(targets, snapshot):
            dst.copy_(src)
        return version


class SharedWeights:
    """The latest published weights in one shared-memory block, for policies that run in the actor processes.

    Same contract as :class:`WeightsMailbox` (``post`` by the learner, ``apply`` by whoever
    acts), across processes: the block holds every parameter and buffer of the network in
    its own dtype, behind a header of two int64s, a sequence number and the version. The
    learner is the only writer (a seqlock): it makes the sequence number odd, copies the
    tensors in, writes the version and makes the sequence number even again. A reader
    copies the block into a staging copy only when the sequence number is even and new,
    and keeps the copy only if the number did not change meanwhile; then it copies the
    staging copy into its network. A forward pass therefore never sees a mix of two
    versions; a read that overlaps a write is retried at the next ``apply``. Word-sized
    aligned stores are atomic and keep their order on x86-64 and ARM64 with the stores
    in between being plain copies, which the header's two reads bracket.

    Pickling sends the block's name and tensor shapes, so an actor process attaches to the
    same memory. Only the creating process frees it (:meth:`close`).
    """

    def __init__(self, model: torch.nn.Module | None = None, *, version: int = 0, _attach: tuple | None = None):
        from multiprocessing import shared_memory

        if _attach is None:
            specs = [(tuple(t.shape), t.dtype) for t in _tensors(model)]
            size = 64 + sum(aligned(math.prod(shape) * dtype.itemsize) for shape, dtype in specs)
            self._shm = shared_memory.SharedMemory(create=True, size=size)
            self._owner = True
        else:
            name, specs = _attach
            self._shm = shared_memory.SharedMemory(name=name)
            self._owner = False
        self._specs = specs
        self._header = np.ndarray((2,), np.int64, buffer=self._shm.buf)  # [sequence, version]
        self._views: list[torch.Tensor] = []
        offset = 64
        for shape, dtype in specs:
            count = math.prod(shape)
            view = torch.frombuffer(self._shm.buf, dtype=dtype, count=count, offset=offset) if count else torch.empty(0, dtype=dtype)
            self._views.append(view.view(shape))
            offset += aligned(count * dtype.itemsize)
        if _attach is None:
            self._header[:] = (0, -1)
            self.post(model, version)
        self._seen = -1  # the sequence number last applied

    def __reduce__(self):
        return (_attach_shared_weights, (self._shm.name, self._specs))

    @torch.no_grad()
    def post(self, model: torch.nn.Module, version: int) -> None:
        """Copy ``model``'s parameters and buffers into the block as ``version`` (the only writer: the learner)."""
        tensors = _tensors(model)
        _check_count(len(tensors), len(self._views))
        sequence = int(self._header[0])
        self._header[0] = sequence + 1  # odd: a write is in progress
        for dst, src in zip(self._views, tensors):
            dst.copy_(src.detach())
        self._header[1] = int(version)
        self._header[0] = sequence + 2

    @torch.no_grad()
    def apply(self, model: torch.nn.Module) -> int | None:
        """Copy the latest whole version into ``model`` if one was posted since the last call; its version, else None."""
        sequence = int(self._header[0])
        if sequence == self._seen or sequence % 2:
            return None
        staging = [v.clone() for v in self._views]
        version = int(self._header[1])
        if int(self._header[0]) != sequence:  # a write overlapped the copy: try again at the next call
            return None
        targets = _tensors(model)
        _check_count(len(staging), len(targets))
        for dst, src in zip(targets, staging):
            dst.copy_(src)
        self._seen = sequence
        return version

    def close(self) -> None:
        """Detach (and, in the creating process, free) the block."""
        self._views, self._header = [], None
        release_shared_memory(self._shm, self._owner)


def _attach_shared_weights(name: str, specs: list) -> SharedWeights:
    return SharedWeights(_attach=(name, specs))


def _check_count(published: int, model: int) -> None:
    if published != model:
        raise ValueError(f"published weights hold {published} tensors, the network has {model}")
