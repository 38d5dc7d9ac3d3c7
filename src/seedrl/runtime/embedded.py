"""The embedded backend: actor processes on this machine, shared memory, pipes.

Observations and actions cross between processes only through shared memory
(:class:`~seedrl.runtime.transport.SharedSlots`); a pipe per actor carries a
few bytes of signal per round trip, and :func:`multiprocessing.connection.wait`
over all pipes is the dynamic batcher's "who is ready". A crashed actor is
noticed by its pipe closing, its state in inference is reset, and a new
process takes its slot.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing as mp
import threading
from multiprocessing.connection import wait
from typing import Callable, Sequence

from seedrl.runtime.actor import GO, STOP, ActorSpec, actor_process_main
from seedrl.runtime.transport import ActorSlot, SharedSlots, SlotLayout

log = logging.getLogger(__name__)


class ActorCrashLoop(RuntimeError):
    """An actor kept crashing; its last error is in the message."""


class EmbeddedBackend:
    """Runs ``num_actors`` actor processes and serves as inference's :class:`Endpoint`.

    Args:
        layout: slot layout shared by all actors.
        num_actors: number of actor processes.
        actor_spec: ``(actor_id, restart_count) -> ActorSpec``; a restarted actor
            gets a new seed so it does not replay the same episodes.
        on_restart: called with the actor id (from the inference thread) before
            the replacement starts, to reset that actor's state.
        max_restarts: total restarts allowed before the run fails.
    """

    #: the actors exchange observations and actions with central inference through shared slots
    uses_slots = True

    def __init__(
        self,
        layout: SlotLayout,
        num_actors: int,
        actor_spec: Callable[[int, int], ActorSpec],
        *,
        on_restart: Callable[[int], None] | None = None,
        max_restarts: int = 20,
    ):
        self.layout = layout
        self.num_actors = num_actors
        self.actor_spec = actor_spec
        self.on_restart = on_restart
        self.max_restarts = max_restarts
        self._ctx = mp.get_context("spawn")
        self._shared = SharedSlots(layout, num_actors) if self.uses_slots else None
        self.slots: Sequence[ActorSlot] = self._shared.slots if self._shared else []
        self._conns: dict[int, object] = {}
        self._procs: dict[int, mp.Process] = {}
        self._restarts = collections.Counter()
        self.total_restarts = 0
        self.episodes: collections.deque = collections.deque(maxlen=10_000)
        self._lock = threading.Lock()
        self._stopped = False

    # ---------------------------------------------------------- lifecycle
    def start(self) -> None:
        for actor_id in range(self.num_actors):
            self._spawn(actor_id)

    def _spawn(self, actor_id: int) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        spec = self.actor_spec(actor_id, self._restarts[actor_id])
        target, args = self._process(spec, child)
        proc = self._ctx.Process(target=target, args=args, name=f"seedrl-actor-{actor_id}", daemon=True)
        proc.start()
        child.close()
        self._conns[actor_id] = parent
        self._procs[actor_id] = proc

    def _process(self, spec: ActorSpec, conn) -> tuple[Callable, tuple]:
        """The actor process's entry point and arguments (a subclass runs another actor loop)."""
        return actor_process_main, (spec, self._shared.name, self.layout, self.num_actors, conn)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every actor and free the shared memory. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for conn in self._conns.values():
            try:
                conn.send_bytes(STOP)
            except (BrokenPipeError, OSError):
                pass
        for proc in self._procs.values():
            proc.join(timeout)
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        for conn in self._conns.values():
            conn.close()
        self.slots = []
        if self._shared is not None:
            self._shared.close()

    def kill_actor(self, actor_id: int) -> None:
        """Kill an actor process (for tests of crash recovery)."""
        self._procs[actor_id].kill()

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs.values()]

    # ----------------------------------------------------------- endpoint
    def live_actors(self) -> int:
        return len(self._conns)

    def poll(self, timeout: float) -> list[int]:
        by_conn = {c: a for a, c in self._conns.items()}
        ready: list[int] = []
        for conn in wait(list(by_conn), timeout):
            actor_id = by_conn[conn]
            try:
                payload = conn.recv()
            except Exception:  # EOF, or a message cut short by the kill: the actor is gone
                self._handle_crash(actor_id)
                continue
            self._receive(actor_id, payload)
            ready.append(actor_id)
        return ready

    def _receive(self, actor_id: int, payload) -> None:
        """What an actor sent with its submission: the episodes it finished since (or None)."""
        for env_index, ret, length in payload or ():
            self.episodes.append((actor_id, env_index, float(ret), int(length)))

    def reply(self, actor_ids: Sequence[int]) -> None:
        for a in actor_ids:
            try:
                self._conns[a].send_bytes(GO)
            except (BrokenPipeError, OSError, KeyError):
                pass  # noticed as a crash at the next poll

    def _handle_crash(self, actor_id: int) -> None:
        proc = self._procs[actor_id]
        proc.join(1.0)
        code = proc.exitcode
        self._conns.pop(actor_id).close()
        if self._stopped:
            return
        self._restarts[actor_id] += 1
        self.total_restarts += 1
        log.warning("actor %d died (exit code %s); restarting it (%d restarts so far)", actor_id, code, self.total_restarts)
        if self.total_restarts > self.max_restarts:
            raise ActorCrashLoop(
                f"actors crashed {self.total_restarts} times (limit max_restarts={self.max_restarts}); "
                f"last: actor {actor_id} exit code {code}. Check the environment config."
            )
        if self.on_restart is not None:
            self.on_restart(actor_id)
        self._spawn(actor_id)
