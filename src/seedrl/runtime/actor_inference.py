"""Inference on the actors (``runtime.inference: actors``): for policies cheaper than their environment.

Central inference pays, per actor round trip, two process wake-ups and a pipe message each
way, and serialises the actors behind one forward thread. With a policy that costs less per
row than the environment's step (an MLP on CartPole: ~0.7 us a row against ~2 us an env step)
that overhead is most of the run: on 2 cores the shipped CartPole config reached half the
rate of stepping the environments alone (docs/benchmarks.md, "Automatic layout"). Here each
actor process runs the policy on its own environments, the way the original IMPALA actors
did, and sends the learner finished unrolls only:

* the network is built in the actor from the run's config and acts with the weights the
  learner publishes to :class:`~seedrl.runtime.weights.SharedWeights` (one shared-memory
  block; every forward pass uses one whole version, and stamps it on the unroll);
* the acting itself is an :class:`~seedrl.runtime.inference.InferenceServer` serving the
  actor's one slot in the same process: the same sampling, recurrent state, unroll building
  and version stamps as central inference, only without the transport;
* every ``T`` steps the actor sends the finished unroll and the episodes finished since over
  its pipe; :meth:`ActorInference.serve` (a thread of the learner process) puts them on the
  learner's queue and then gives the actor its credit back: an actor sends its next unroll
  only once the previous one is on the queue. A full queue blocks that thread, then the
  actors: the same backpressure, and the same bound on the policy lag, as central inference.

Crashes are handled as in :class:`~seedrl.runtime.embedded.EmbeddedBackend` (a closed pipe,
a respawn with a new seed, ``max_restarts``). Each actor samples with its own generator,
seeded from its :class:`~seedrl.runtime.actor.ActorSpec` seed.
"""

from __future__ import annotations

import collections
import queue
import signal
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from seedrl.runtime.actor import STOP, ActorSpec, run_actor
from seedrl.runtime.algorithms import game_algo
from seedrl.runtime.embedded import EmbeddedBackend
from seedrl.runtime.inference import InferenceServer
from seedrl.runtime.transport import ActorSlot, SlotLayout

__all__ = ["ActorInference", "LocalPolicy"]


@dataclass
class LocalPolicy:
    """What an actor process needs to act on its own (picklable)."""

    algo: str  #: builds the network: ``game_algo(algo).build_model(cfg, observation_space, action_space)``
    cfg: Any
    observation_space: Any
    action_space: Any
    weights: Any  #: :class:`~seedrl.runtime.weights.SharedWeights`
    head: Any  #: the acting head (a :class:`~seedrl.runtime.policies.SamplingHead`)
    unroll_length: int  #: the buffer length the algorithm asks for (``GameAlgo.unroll``)
    overlap: int


class _OwnSlot:
    """The inference :class:`~seedrl.runtime.inference.Endpoint` of one in-process slot."""

    def __init__(self, slot: ActorSlot):
        self.slots = [slot]

    def reply(self, actor_ids) -> None:
        pass

    def live_actors(self) -> int:
        return 1


class _Stopped(Exception):
    """The learner told this actor to stop."""


class _Outbox:
    """The queue the actor's inference puts finished unrolls on: sends each with the episodes finished since.

    One unroll in flight: before sending the next, the actor waits until the learner's side
    has put the previous one on the learner's queue (a ``GO``). Without that credit a pipe's
    buffer would hold tens of small unrolls, and the actor would run that far ahead of the
    learner (the policy lag). With it, an actor is at most one unroll ahead of the queue, as
    under central inference."""

    def __init__(self, conn):
        self.conn = conn
        self.episodes: list = []
        self.in_flight = False

    def take_messages(self, block: bool = False) -> None:
        """Read what the learner's side sent: ``GO`` frees the credit, ``STOP`` raises :class:`_Stopped`."""
        while block or self.conn.poll():
            if self.conn.recv_bytes() == STOP:
                raise _Stopped
            self.in_flight = block = False

    def put(self, unroll, timeout: float | None = None) -> None:
        if self.in_flight:
            self.take_messages(block=True)
        unroll.state0 = tuple(s.numpy() for s in unroll.state0)  # numpy pickles by value; tensors would not
        episodes, self.episodes = self.episodes, []
        self.conn.send((episodes, unroll))
        self.in_flight = True


def local_actor_main(spec: ActorSpec, layout: SlotLayout, policy: LocalPolicy, conn) -> None:
    """Entry point of an actor process that acts itself (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the learner process handles Ctrl-C and stops us
    torch.set_num_threads(1)
    model = game_algo(policy.algo).build_model(policy.cfg, policy.observation_space, policy.action_space).eval()
    outbox = _Outbox(conn)
    server = InferenceServer(model, layout, 1, policy.unroll_length, outbox, batch_timeout_s=0.0,
                             weights=policy.weights, seed=spec.seed, policy=policy.head, overlap=policy.overlap)
    endpoint = _OwnSlot(ActorSlot(layout, bytearray(layout.nbytes())))

    def submit(finished) -> None:
        outbox.episodes.extend(finished or ())

    def act() -> bool:
        outbox.take_messages()
        server.infer(endpoint, [0])
        return True

    try:
        run_actor(spec, endpoint.slots[0], submit, act)
    except (_Stopped, BrokenPipeError, EOFError, ConnectionResetError):
        pass
    finally:
        conn.close()
        policy.weights.close()


class ActorInference(EmbeddedBackend):
    """Actor processes that run the policy themselves; the backend and the serving role of a run.

    Args:
        layout: one actor's environments (``num_envs``) and spaces.
        num_actors: actor processes.
        actor_spec: ``(actor_id, restart_count) -> ActorSpec``, as for :class:`EmbeddedBackend`.
        policy: what each actor builds and acts with (:class:`LocalPolicy`).
        unrolls: the learner's bounded queue.
        max_restarts: total restarts allowed before the run fails.
    """

    uses_slots = False

    def __init__(self, layout: SlotLayout, num_actors: int, actor_spec: Callable[[int, int], ActorSpec], *,
                 policy: LocalPolicy, unrolls: "queue.Queue", max_restarts: int = 20):
        super().__init__(layout, num_actors, actor_spec, max_restarts=max_restarts)
        self.policy = policy
        self.unrolls = unrolls
        self._pending: collections.deque = collections.deque()
        self.unrolls_received = 0

    @property
    def mean_batch_size(self) -> float:
        """Rows per forward pass: one actor's environments."""
        return float(self.layout.num_envs)

    def _process(self, spec: ActorSpec, conn) -> tuple[Callable, tuple]:
        return local_actor_main, (spec, self.layout, self.policy, conn)

    def _receive(self, actor_id: int, payload) -> None:
        episodes, unroll = payload
        super()._receive(actor_id, episodes)
        unroll.state0 = tuple(torch.from_numpy(np.asarray(s)) for s in unroll.state0)
        unroll.actor_id = actor_id
        self._pending.append(unroll)
        self.unrolls_received += 1

    def serve(self, stop: threading.Event) -> None:
        """Move the actors' unrolls to the learner's queue until ``stop`` is set (blocks while it is full);
        each actor gets its credit back (``GO``) once its unroll is on the queue."""
        while not stop.is_set():
            self.poll(0.1)
            while self._pending:
                try:
                    self.unrolls.put(self._pending[0], timeout=0.1)
                except queue.Full:
                    if stop.is_set():
                        return
                    continue
                self.reply([self._pending.popleft().actor_id])
