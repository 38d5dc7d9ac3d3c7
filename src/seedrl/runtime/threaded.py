"""An in-process transport: actors as threads, for debugging and tests.

Same actor loop (:func:`~seedrl.runtime.actor.run_actor`) and the same
inference :class:`~seedrl.runtime.inference.Endpoint` contract as the
embedded process backend, with queues in place of pipes and plain memory in
place of shared memory. Everything runs in one process, so a debugger or a
profiler sees all of it.
"""

from __future__ import annotations

import collections
import queue
import threading
from typing import Callable, Sequence

from seedrl.runtime.actor import ActorSpec, run_actor
from seedrl.runtime.transport import ActorSlot, SlotLayout


class ThreadedBackend:
    """``num_actors`` actor threads; an :class:`Endpoint` for inference."""

    def __init__(self, layout: SlotLayout, num_actors: int, actor_spec: Callable[[int, int], ActorSpec]):
        self.layout = layout
        self.slots: Sequence[ActorSlot] = [ActorSlot(layout, bytearray(layout.nbytes())) for _ in range(num_actors)]
        self._ready: queue.Queue = queue.Queue()
        self._replies = [queue.Queue() for _ in range(num_actors)]
        self._specs = [actor_spec(i, 0) for i in range(num_actors)]
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()
        self.episodes: collections.deque = collections.deque(maxlen=10_000)
        self.total_restarts = 0
        self.errors: list[BaseException] = []

    def start(self) -> None:
        for spec in self._specs:
            t = threading.Thread(target=self._run, args=(spec,), name=f"seedrl-actor-{spec.actor_id}", daemon=True)
            t.start()
            self._threads.append(t)

    def _run(self, spec: ActorSpec) -> None:
        replies = self._replies[spec.actor_id]

        def submit(payload) -> None:
            self._ready.put((spec.actor_id, payload))

        def wait_reply() -> bool:
            return replies.get() and not self._stopped.is_set()

        try:
            run_actor(spec, self.slots[spec.actor_id], submit, wait_reply)
        except BaseException as err:  # reported to the caller through .errors
            self.errors.append(err)

    def live_actors(self) -> int:
        return sum(t.is_alive() for t in self._threads)

    def poll(self, timeout: float) -> list[int]:
        try:
            items = [self._ready.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self._ready.get_nowait())
            except queue.Empty:
                break
        for actor_id, payload in items:
            for env_index, ret, length in payload or ():
                self.episodes.append((actor_id, env_index, float(ret), int(length)))
        return [a for a, _ in items]

    def reply(self, actor_ids: Sequence[int]) -> None:
        for a in actor_ids:
            self._replies[a].put(True)

    def stop(self) -> None:
        self._stopped.set()
        for r in self._replies:
            r.put(False)
        for t in self._threads:
            t.join(5)
