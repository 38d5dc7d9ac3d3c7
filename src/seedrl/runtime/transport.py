"""The narrow interface between actors and central inference.

An actor owns a batch of N environments. Each round trip it *submits* the
environments' latest outputs (observation, the reward and episode flags of
the transition that led to it) and *waits* for N actions. Central inference
*polls* for submissions from many actors at once (dynamic batching), computes
actions for all of them in one forward pass, and *replies*.

:class:`ActorSlot` is the data of one actor's round trip. The embedded
backend (:class:`SharedMemoryTransport`) places every slot in shared memory
and signals over pipes, so observations never get pickled; a distributed
backend (Ray) implements the same two sides with remote calls.

Slot fields, each with a leading environment axis ``[N, ...]``:

=================  =========================================================
``obs``            observation the action is for
``reward``         reward of the transition that led to ``obs``
``first``          ``obs`` starts an episode (reset, or auto-reset after a done)
``terminated``     the previous transition ended the episode in a terminal
``truncated``      the previous transition hit a time limit (not a terminal)
``final_obs``      the true last observation of an episode that was truncated
                   (``obs`` is then already the next episode's first one)
``action``         written by inference: the action to take in ``obs``
=================  =========================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SlotLayout:
    """Shapes and dtypes of one actor slot (same for every actor of a run)."""

    num_envs: int
    obs_shape: tuple[int, ...]
    obs_dtype: str
    action_shape: tuple[int, ...] = ()
    action_dtype: str = "int64"

    def fields(self) -> list[tuple[str, tuple[int, ...], np.dtype]]:
        n = self.num_envs
        obs = (n, *self.obs_shape)
        return [
            ("obs", obs, np.dtype(self.obs_dtype)),
            ("final_obs", obs, np.dtype(self.obs_dtype)),
            ("reward", (n,), np.dtype(np.float32)),
            ("first", (n,), np.dtype(bool)),
            ("terminated", (n,), np.dtype(bool)),
            ("truncated", (n,), np.dtype(bool)),
            ("action", (n, *self.action_shape), np.dtype(self.action_dtype)),
        ]

    def nbytes(self) -> int:
        return sum(aligned(math.prod(shape) * dtype.itemsize) for _, shape, dtype in self.fields())


def aligned(n: int, to: int = 64) -> int:
    """``n`` rounded up to a multiple of ``to`` (the offsets and sizes of shared-memory fields)."""
    return (n + to - 1) // to * to


class ActorSlot:
    """Numpy views of one actor's round-trip buffers inside a byte buffer."""

    def __init__(self, layout: SlotLayout, buffer: Any):
        self.layout = layout
        offset = 0
        for name, shape, dtype in layout.fields():
            size = math.prod(shape) * dtype.itemsize
            setattr(self, name, np.ndarray(shape, dtype=dtype, buffer=buffer, offset=offset))
            offset += aligned(size)

    obs: np.ndarray
    final_obs: np.ndarray
    reward: np.ndarray
    first: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    action: np.ndarray


class SharedSlots:
    """All actors' slots in one shared-memory block, attachable by name from child processes."""

    def __init__(self, layout: SlotLayout, num_actors: int, name: str | None = None):
        self.layout = layout
        self.num_actors = num_actors
        self._stride = aligned(layout.nbytes(), 4096)
        if name is None:
            self.shm = shared_memory.SharedMemory(create=True, size=self._stride * num_actors)
            self._owner = True
        else:
            self.shm = shared_memory.SharedMemory(name=name)
            self._owner = False  # children share the parent's resource tracker: only the creator unlinks
        self.slots = [
            ActorSlot(layout, self.shm.buf[i * self._stride : (i + 1) * self._stride]) for i in range(num_actors)
        ]

    @property
    def name(self) -> str:
        return self.shm.name

    def close(self) -> None:
        """Detach (and, in the creating process, free) the shared block."""
        for slot in self.slots:
            for field, _, _ in self.layout.fields():
                setattr(slot, field, None)
        self.slots = []
        release_shared_memory(self.shm, self._owner)


def release_shared_memory(shm: shared_memory.SharedMemory, owner: bool) -> None:
    """Detach ``shm`` and, in the process that created it (``owner``), free it; views must be dropped first."""
    try:
        shm.close()
    except BufferError:  # a view is still alive somewhere; the OS frees it at exit
        return
    if owner:
        try:
            shm.unlink()
        except FileNotFoundError:
            pass
