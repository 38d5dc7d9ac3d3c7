"""Several central inference servers on Ray, each owning a shard of the actor groups (SEED's layout on pods).

With ``runtime.ray.inference_servers: K >= 2`` the run has K inference
servers, each a Ray actor requesting ``runtime.ray.server_cpus`` CPUs (and
``server_gpus``). Server ``k`` owns groups ``k, k + K, k + 2K, ...`` (a
round-robin shard, so that with spread placement every server has groups on
several nodes): it runs the usual :class:`~seedrl.runtime.inference.InferenceServer`
over a :class:`~seedrl.runtime.ray_backend.RayBackend` of its shard, in a
thread of its own process, and keeps its finished unrolls in a bounded queue
of ``ceil(runtime.queue_unrolls / K)``.

The driver (learner) side, :class:`ShardedInference`:

- *unrolls*: one outstanding ``take()`` call per server; a driver thread
  waits on them (:func:`ray.wait`) and puts what comes back in the learner's
  bounded queue. Backpressure: while that put blocks, no new ``take()`` goes
  out, the server's own queue fills, its inference stops replying and its
  groups wait, as in the embedded run;
- *weights*: every learner update publishes version ``v`` to every server
  (one :func:`ray.put` of the state dict, one ``set_weights(v, ref)`` call
  per server). Calls may arrive out of order (a server answers ``take()``
  and ``set_weights()`` concurrently): a server posts ``v`` to its
  inference's :class:`~seedrl.runtime.weights.WeightsMailbox` only if it is
  newer than what it posted before (inference applies it before its next
  forward pass, never during one), and stamps the unrolls it builds with its
  version, so the learner's ``policy_lag`` is measured as before. Each
  server lists the versions it received (``received_versions``);
- *faults*: a group that dies is restarted by its server (Ray's
  ``max_restarts``), restarts summed over servers are held to
  ``runtime.max_restarts``; a server that dies (its process killed, its node
  lost) fails the run with :class:`~seedrl.runtime.errors.InferenceLost`: the run saves a checkpoint
  and ``--resume`` continues it. Servers are not restarted: their recurrent
  state and partial unrolls are gone, and a run that silently loses a shard
  would train on fewer groups than it says.

Placement: with ``runtime.ray.placement: pack|spread`` one placement group
holds a bundle per server (``{CPU: server_cpus, GPU: server_gpus}``) and
per group (``{CPU: actor_cpus}``); the driver creates, and at the end kills,
every Ray actor of the run, on success and on failure.
"""

from __future__ import annotations

import collections
import copy
import math
import queue
import threading
import time
from typing import Callable, Sequence

import ray
import torch

from seedrl.config import ConfigError
from seedrl.runtime.embedded import ActorCrashLoop
from seedrl.runtime.errors import InferenceLost
from seedrl.runtime.inference import InferenceServer
from seedrl.runtime.ray_backend import (RayBackend, check_record_path, connect, cpus_needed, kill_all, make_groups,
                                        make_placement, placed, remove_placement)
from seedrl.runtime.transport import SlotLayout
from seedrl.runtime.weights import WeightsMailbox


def shard_ids(num_actors: int, servers: int, k: int) -> list[int]:
    """Global ids of the groups server ``k`` owns: ``k, k + K, ...``."""
    return list(range(k, num_actors, servers))


class InferenceShard:
    """The body of one inference server's Ray actor: central inference for a shard of groups."""

    def __init__(self, index: int, model: torch.nn.Module, layout: SlotLayout, ids: Sequence[int], handles: Sequence,
                 actor_spec: Callable, ray_cfg, policy, *, version: int, unroll_length: int, overlap: int,
                 queue_unrolls: int, batch_timeout_s: float, seed: int, max_restarts: int, torch_threads: int):
        torch.set_num_threads(torch_threads)
        self.index = index
        self.ids = list(ids)
        self.unrolls: queue.Queue = queue.Queue(maxsize=queue_unrolls)
        self.weights = WeightsMailbox()
        self.server = InferenceServer(model.eval(), layout, len(self.ids), unroll_length, self.unrolls,
                                      batch_timeout_s=batch_timeout_s, weights=self.weights, seed=seed,
                                      policy=policy, overlap=overlap)
        self.server.version = version
        # set_weights() loads a received state here and posts it; inference applies it before its next forward
        self._staging = copy.deepcopy(model)
        self._posted = version
        self._weights_lock = threading.Lock()  # one set_weights() at a time
        self.backend = RayBackend(layout, len(self.ids), actor_spec, ray_cfg, on_restart=self.server.reset_actor,
                                  max_restarts=max_restarts, handles=handles, ids=self.ids)
        self.received: list[int] = []
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.backend.start()
        self._thread = threading.Thread(target=self._serve, name=f"seedrl-inference-{self.index}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self.server.serve(self.backend, self._stop)
        except BaseException as err:  # raised to the driver by the next take()
            self._error = err

    def set_weights(self, version: int, state: dict) -> int:
        """Post weights ``version`` to inference unless a newer one was posted; returns the newest posted."""
        with self._weights_lock:
            self.received.append(version)
            if version > self._posted:
                self._staging.load_state_dict(state)
                self.weights.post(self._staging, version)
                self._posted = version
            return self._posted

    def take(self, timeout: float = 0.2) -> tuple[list, list, dict]:
        """``(unrolls, finished episodes, stats)``: waits up to ``timeout`` s for the first unroll.

        Unrolls carry their group's global id; a failed serving thread raises its error here."""
        out = []
        deadline = time.perf_counter() + timeout
        while not out and self._error is None:
            try:
                out.append(self.unrolls.get(timeout=max(0.0, min(0.05, deadline - time.perf_counter()))))
            except queue.Empty:
                if time.perf_counter() >= deadline:
                    break
        if self._error is not None:
            raise self._error
        while len(out) < self.unrolls.maxsize:
            try:
                out.append(self.unrolls.get_nowait())
            except queue.Empty:
                break
        for u in out:
            u.actor_id = self.ids[u.actor_id]
        episodes = []
        while self.backend.episodes:
            episodes.append(self.backend.episodes.popleft())
        s = self.server
        stats = {"restarts": self.backend.total_restarts, "steps": s.steps, "batches": s.batches}
        return out, episodes, stats

    def received_versions(self) -> list[int]:
        return list(self.received)

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def close(self) -> None:
        """Stop serving and stop the shard's groups (recorders flushed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.backend.stop()


class ShardedInference:
    """The driver's side of K inference servers on Ray: groups, servers, unrolls in, weights out.

    Args:
        layout, num_actors, actor_spec, ray_cfg: as :class:`~seedrl.runtime.ray_backend.RayBackend`.
        model: the inference model (its weights at start; sent to each server).
        policy_for: ``policy_for(num_envs)``, the acting head of a server with that many environments.
        unrolls: the learner's bounded queue.
        version: the weights version at start (the learner's updates).
        The rest: as :class:`~seedrl.runtime.inference.InferenceServer`.
    """

    def __init__(self, layout: SlotLayout, num_actors: int, actor_spec: Callable, ray_cfg, *, model: torch.nn.Module,
                 policy_for: Callable[[int], Callable], unrolls: queue.Queue, version: int, unroll_length: int,
                 overlap: int, queue_unrolls: int, batch_timeout_s: float, seed: int, max_restarts: int = 20):
        self.cfg = ray_cfg
        self.k = ray_cfg.inference_servers
        if self.k > num_actors:
            raise ConfigError(f"config error: 'runtime.ray.inference_servers' = {self.k} is above the {num_actors} "
                              "actor groups (runtime.num_actors): each server owns at least one group",
                              "runtime.ray.inference_servers")
        self.layout, self.num_actors, self.actor_spec = layout, num_actors, actor_spec
        self.model, self.policy_for, self.unrolls, self.version = model, policy_for, unrolls, version
        self.server_args = {"unroll_length": unroll_length, "overlap": overlap, "batch_timeout_s": batch_timeout_s,
                            "queue_unrolls": max(1, math.ceil(queue_unrolls / self.k)), "max_restarts": max_restarts,
                            "torch_threads": 1}
        self.seed, self.max_restarts = seed, max_restarts
        self.shards = [shard_ids(num_actors, self.k, k) for k in range(self.k)]
        self.servers: list = []
        self.groups: list = []
        self._placement = None
        self._connected = False
        self._stopped = False
        self._last_publish: dict = {}  # server -> its latest set_weights call
        self._stats: dict[int, dict] = {}
        self.episodes: collections.deque = collections.deque(maxlen=10_000)
        self.received: list[list[int]] = []  # per server, filled by stop()

    # ---------------------------------------------------------- lifecycle
    def start(self) -> None:
        cfg = self.cfg
        self._connected = connect(cfg, cpus_needed(cfg, self.num_actors))
        try:
            server_bundle = {"CPU": cfg.server_cpus, **({"GPU": cfg.server_gpus} if cfg.server_gpus else {})}
            self._placement = make_placement(cfg, [server_bundle] * self.k + [{"CPU": cfg.actor_cpus}] * self.num_actors)
            self.groups = make_groups(self.layout, cfg, self.num_actors, self.max_restarts, self._placement, self.k)
            check_record_path(self.groups, self.actor_spec(0, 0).record_path)
            cls = ray.remote(InferenceShard)
            model = ray.put(self.model)
            for k, ids in enumerate(self.shards):
                server = cls.options(num_cpus=cfg.server_cpus, num_gpus=cfg.server_gpus, max_restarts=0,
                                     max_concurrency=4, **placed(cfg, self._placement, k)).remote(
                    k, model, self.layout, ids, [self.groups[i] for i in ids], self.actor_spec, cfg,
                    self.policy_for(len(ids) * self.layout.num_envs), version=self.version,
                    seed=self.seed + 7919 * k, **self.server_args)
                self.servers.append(server)
            ray.get([s.start.remote() for s in self.servers])
        except BaseException:
            self.stop(timeout=0)
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Close the servers (their groups' recorders flushed), record what each received, kill every actor."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.servers and timeout > 0:
                ray.wait(list(self._last_publish.values()), num_returns=len(self._last_publish), timeout=timeout)
                self.received = [self._ask(s.received_versions.remote(), timeout, []) for s in self.servers]
                ray.wait([s.close.remote() for s in self.servers], num_returns=len(self.servers), timeout=timeout)
        finally:
            kill_all(self.servers + self.groups)
            remove_placement(self._placement)
            self.servers, self.groups = [], []
            if self._connected:
                ray.shutdown()

    @staticmethod
    def _ask(ref, timeout: float, default):
        try:
            return ray.get(ref, timeout=timeout)
        except (ray.exceptions.RayError, TimeoutError):
            return default

    # ---------------------------------------------------------- weights
    def publish(self, version: int, source: torch.nn.Module | None = None) -> None:
        """Send weights ``version`` of ``source`` (the learner's model, from the learner's thread right after
        its update; default the driver's inference model) to every server."""
        self.version = version
        model = self.model if source is None else source
        # ray.put serializes into the object store before it returns: that is the copy, no clone needed
        state = ray.put({k: v.detach() for k, v in model.state_dict().items()})
        for k, server in enumerate(self.servers):
            self._last_publish[k] = server.set_weights.remote(version, state)

    # ---------------------------------------------------------- unrolls
    def serve(self, stop: threading.Event) -> None:
        """Move unrolls from the servers to the learner's queue until ``stop`` (raises a server's failure)."""
        pending = {s.take.remote(): k for k, s in enumerate(self.servers)}
        while not stop.is_set() and pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.1)
            for ref in ready:
                k = pending.pop(ref)
                unrolls = self._collect(k, ref)
                for u in unrolls:
                    if not self._put(u, stop):
                        return
                pending[self.servers[k].take.remote()] = k

    def _collect(self, k: int, ref) -> list:
        try:
            unrolls, episodes, stats = ray.get(ref)
        except ray.exceptions.RayTaskError as err:  # the server's own error: a crash loop of its groups, ...
            cause = err.cause if isinstance(err.cause, BaseException) else err
            if isinstance(cause, ActorCrashLoop):
                raise ActorCrashLoop(str(cause)) from None
            raise InferenceLost(f"inference server {k} (groups {self.shards[k]}) failed: "
                                f"{type(cause).__name__}: {cause}") from None
        except ray.exceptions.RayError as err:  # its process died (killed, out of memory, node lost)
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InferenceLost(f"inference server {k} (groups {self.shards[k]}) was lost: {reason}") from None
        self.episodes.extend(episodes)
        self._stats[k] = stats
        if self.total_restarts > self.max_restarts:
            raise ActorCrashLoop(f"actor groups failed {self.total_restarts} times over {self.k} inference servers "
                                 f"(limit max_restarts={self.max_restarts}). Check the environment config.")
        return unrolls

    def _put(self, unroll, stop: threading.Event) -> bool:
        while not stop.is_set():
            try:
                self.unrolls.put(unroll, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    # ---------------------------------------------------------- measurements
    @property
    def total_restarts(self) -> int:
        return sum(s["restarts"] for s in self._stats.values())

    @property
    def mean_batch_size(self) -> float:
        return sum(s["steps"] for s in self._stats.values()) / max(1, sum(s["batches"] for s in self._stats.values()))

    def kill_server(self, k: int) -> None:
        """Kill server ``k``'s process (for tests of a lost server)."""
        ray.kill(self.servers[k], no_restart=True)

    def node_ids(self) -> list[str]:
        """Nodes of the groups (in id order), then of the servers."""
        return ray.get([g.node_id.remote() for g in self.groups] + [s.node_id.remote() for s in self.servers])
