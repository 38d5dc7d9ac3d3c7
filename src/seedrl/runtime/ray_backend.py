"""The Ray backend: actor groups as Ray actors; central inference in the driver (or sharded), the learner in the driver.

The same roles as the embedded backend, on a Ray cluster (``runtime.backend:
ray``). Each actor group (``env.num_envs`` environments, no network) is a Ray
actor requesting ``runtime.ray.actor_cpus`` CPUs, placed across the cluster's
nodes (``runtime.ray.scheduling``). Central inference and the learner stay in
the driver process, as in the embedded run, so checkpoints, resume, metrics
and the learner's weights publishing are unchanged; the backend is only a new
:class:`~seedrl.runtime.inference.Endpoint`:

- an actor group's round trip is one method call, ``step(actions) ->
  (slot bytes, finished episodes)``: the group runs the usual actor loop
  (:func:`~seedrl.runtime.actor.run_actor`) in a thread over a local
  :class:`~seedrl.runtime.transport.ActorSlot` and returns the slot's whole
  byte buffer, one numpy array; Ray moves it out of band (no pickling of the
  arrays; above 100 KB through the object store, read zero-copy on the same
  node) and the driver copies it into its own copy of the slot, one memcpy;
- ``poll`` is :func:`ray.wait` over the outstanding calls (the dynamic
  batcher's "who is ready"), ``reply`` issues the next ``step`` with the
  actions inference wrote into the slot;
- backpressure is the embedded one: when the learner's bounded queue is full,
  inference stops replying, no ``step`` is issued and the groups wait;
- a group that dies (its process killed, its environment raising) fails its
  outstanding call; Ray restarts the process (``max_restarts``), inference
  forgets the group's state and the driver starts it again with a new seed;
  more than ``runtime.max_restarts`` crashes in all end the run
  (:class:`~seedrl.runtime.embedded.ActorCrashLoop`).

The same backend serves one shard of groups inside each inference server of
a run with ``runtime.ray.inference_servers >= 2``
(:mod:`seedrl.runtime.ray_shards`). With ``runtime.ray.placement`` pack or
spread the actors go into the bundles of one Ray placement group. A run that
records checks at start that every group sees ``record.path`` as the driver
does (a marker file; :func:`check_record_path`). Every Ray actor a run
started is killed when it ends, failed or not.

``runtime.ray.address`` joins an existing cluster (the driver disconnects at
the end); without it a local Ray instance is started with explicit CPUs and a
small object store, and shut down with the run. Ray is imported by this
module only; ``import seedrl`` never imports it.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import queue
import signal
import threading
import time
import uuid
from typing import Callable, Sequence

import numpy as np
import ray

from seedrl.config import ConfigError
from seedrl.runtime.actor import ActorSpec, run_actor
from seedrl.runtime.embedded import ActorCrashLoop
from seedrl.runtime.transport import ActorSlot, SlotLayout

log = logging.getLogger(__name__)

_ENDED = object()


class ActorGroup:
    """The body of one actor group's Ray actor: the actor loop in a thread, driven by method calls."""

    def __init__(self, layout: SlotLayout):
        self._buffer = bytearray(layout.nbytes())
        self._flat = np.frombuffer(self._buffer, dtype=np.uint8)
        self.slot = ActorSlot(layout, self._buffer)
        self._thread: threading.Thread | None = None
        self._submitted: queue.Queue = queue.Queue()
        self._replies: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._lock = threading.Lock()  # one start() at a time

    def start(self, spec: ActorSpec):
        """(Re)start the loop with ``spec``; returns the first submission (see :meth:`step`)."""
        with self._lock:
            self.close()
            self._submitted, self._replies, self._error = queue.Queue(), queue.Queue(), None
            self._thread = threading.Thread(target=self._run, args=(spec, self._submitted, self._replies),
                                            name=f"seedrl-actor-{spec.actor_id}", daemon=True)
            self._thread.start()
            return self._next()

    def step(self, actions: np.ndarray):
        """Take ``actions``; returns ``(slot bytes [nbytes] uint8, finished episodes or None)``.

        The slot's buffer is returned as is, not copied: Ray serializes it when
        the call returns, while the loop waits for the next ``step``."""
        if self._thread is None:  # a fresh process after Ray restarted the group
            raise RuntimeError("actor group restarted; it waits for start()")
        self.slot.action[:] = actions
        self._replies.put(True)
        return self._next()

    def close(self) -> None:
        """Stop the loop (the recorder is flushed, the environments closed)."""
        if self._thread is not None:
            self._replies.put(False)
            self._thread.join(10)
            self._thread = None

    def pid(self) -> int:
        return os.getpid()

    def sees_file(self, path: str, content: str) -> bool:
        """Whether this group's node reads ``content`` in ``path`` (is the driver's folder shared?)."""
        try:
            with open(path) as f:
                return f.read() == content
        except OSError:
            return False

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def _next(self):
        payload = self._submitted.get()
        if payload is _ENDED:  # the loop raised (the driver sees the group's own error) or was closed
            if isinstance(self._error, Exception):
                raise self._error
            raise RuntimeError(f"the actor loop ended: {self._error!r}")
        return self._flat, payload

    def _run(self, spec: ActorSpec, submitted: queue.Queue, replies: queue.Queue) -> None:
        try:
            run_actor(spec, self.slot, submitted.put, replies.get)
        except BaseException as err:  # raised to the driver by the pending call
            self._error = err
        finally:
            submitted.put(_ENDED)


def connect(cfg, cpus_needed: float, needs: str | None = None) -> bool:
    """Join ``cfg.address`` or start a local instance; True when this call connected (and the run must disconnect).

    Raises :class:`ConfigError` when the cluster has fewer CPUs than the run's Ray
    actors request (they would wait forever); ``needs`` says what they are (default:
    a game run's actor groups and servers)."""
    connected = False
    if not ray.is_initialized():
        # ray.init replaces SIGTERM's handler with sys.exit: keep the run's own (a checkpoint, then a clean stop)
        previous = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
        _init(cfg, cpus_needed)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        connected = True
    have = ray.cluster_resources().get("CPU", 0.0)
    if have < cpus_needed:
        if connected:
            ray.shutdown()
        if needs is None:
            servers = " + 'runtime.ray.server_cpus' x 'runtime.ray.inference_servers'" if cfg.inference_servers > 1 else ""
            needs = f"'runtime.ray.actor_cpus' x 'runtime.num_actors'{servers}"
        raise ConfigError(f"config error: {needs} = {cpus_needed:g} CPUs, but the Ray cluster has {have:g}",
                          "runtime.ray.actor_cpus")
    return connected


def _init(cfg, cpus_needed: float) -> None:
    if cfg.address:
        ray.init(address=cfg.address, log_to_driver=False)
    else:
        num_cpus = cfg.num_cpus if cfg.num_cpus is not None else max(1.0, cpus_needed)
        ray.init(address="local", num_cpus=math.ceil(num_cpus), object_store_memory=cfg.object_store_mb * 2**20,
                 include_dashboard=False, log_to_driver=False)


def cpus_needed(cfg, num_actors: int) -> float:
    """CPUs the run's Ray actors request: the groups, plus the servers when they are Ray actors."""
    servers = cfg.server_cpus * cfg.inference_servers if cfg.inference_servers > 1 else 0.0
    return cfg.actor_cpus * num_actors + servers


def make_placement(cfg, bundles: list[dict], timeout_s: float = 60.0):
    """A placement group of ``bundles`` (``cfg.placement``: pack or spread), ready; None for ``none``.

    Raises :class:`ConfigError` naming ``runtime.ray.placement`` when the cluster
    cannot hold the bundles within ``timeout_s`` (the group is removed)."""
    if cfg.placement == "none":
        return None
    from ray.util.placement_group import placement_group, remove_placement_group

    group = placement_group(bundles, strategy=cfg.placement.upper())
    ready, _ = ray.wait([group.ready()], timeout=timeout_s)
    if not ready:
        remove_placement_group(group)
        raise ConfigError(f"config error: 'runtime.ray.placement' = '{cfg.placement}': the cluster could not place "
                          f"{len(bundles)} bundles {bundles} within {timeout_s:g} s (`ray status` shows what is free)",
                          "runtime.ray.placement")
    return group


def remove_placement(group) -> None:
    if group is not None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(group)


def placed(cfg, group, bundle: int) -> dict:
    """Ray options putting an actor in ``bundle`` of placement ``group`` (or by ``cfg.scheduling``)."""
    if group is None:
        return {"scheduling_strategy": "SPREAD" if cfg.scheduling == "spread" else "DEFAULT"}
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return {"scheduling_strategy": PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=bundle)}


def make_groups(layout: SlotLayout, cfg, count: int, max_restarts: int, group=None, first_bundle: int = 0) -> list:
    """``count`` actor-group Ray actors (not started), in bundles ``first_bundle..`` of ``group`` if given."""
    cls = ray.remote(ActorGroup)
    return [
        cls.options(
            num_cpus=cfg.actor_cpus,
            max_restarts=max_restarts,
            # a call cut by the process's death is retried on the restarted one, where step()
            # fails at once (not started): one clean failure per death, and start() waits out
            # the restart instead of failing with "actor unavailable"
            max_task_retries=-1,
            max_concurrency=2,  # close() and pid() answer while a step waits
            **placed(cfg, group, first_bundle + i),
        ).remote(layout)
        for i in range(count)
    ]


def _write_marker(folder: str, token: str) -> str:
    """Write ``token`` into a marker file in ``folder`` (created); returns the marker's path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f".seedrl-shared-{token}")
    with open(path, "w") as f:
        f.write(token)
    return path


def check_record_path(handles: Sequence, path: str | None) -> None:
    """Every group must see ``path`` as the driver does: a marker the driver writes there is read by each.

    Raises :class:`ConfigError` naming ``record.path``, the groups and their nodes
    that do not see it (their episodes would land in a folder of their own node).
    When the driver itself cannot write there, the groups' own writers report it."""
    if not path or not handles:
        return
    token = uuid.uuid4().hex
    try:
        marker = _write_marker(path, token)
    except OSError:
        return
    try:
        seen = ray.get([h.sees_file.remote(marker, token) for h in handles])
        blind = [i for i, ok in enumerate(seen) if not ok]
        if blind:
            nodes = sorted(set(ray.get([handles[i].node_id.remote() for i in blind])))
            raise ConfigError(f"config error: 'record.path' = '{path}' is not shared: actor groups {blind} on node(s) "
                              f"{', '.join(n[:12] for n in nodes)} do not see the marker {marker} the driver wrote; put "
                              "it on a filesystem every node mounts (NFS, a cluster filesystem)", "record.path")
    finally:
        try:
            os.remove(marker)
        except OSError:
            pass


class RayBackend:
    """Actor groups as Ray actors; the :class:`Endpoint` of one central inference server.

    Args: as :class:`~seedrl.runtime.embedded.EmbeddedBackend`, plus ``ray_cfg``
    (:class:`~seedrl.runtime.config.RayConfig`). With ``handles`` (and their
    global ``ids``) the backend serves a shard of groups that someone else
    created and kills (:mod:`seedrl.runtime.ray_shards`): it starts, steps,
    restarts and closes them, and its slot ``i`` is group ``ids[i]``.
    Without, it connects to Ray and owns all ``num_actors`` groups.
    """

    def __init__(
        self,
        layout: SlotLayout,
        num_actors: int,
        actor_spec: Callable[[int, int], ActorSpec],
        ray_cfg,
        *,
        on_restart: Callable[[int], None] | None = None,
        max_restarts: int = 20,
        handles: Sequence | None = None,
        ids: Sequence[int] | None = None,
    ):
        self.layout = layout
        self.num_actors = num_actors
        self.actor_spec = actor_spec
        self.cfg = ray_cfg
        self.on_restart = on_restart
        self.max_restarts = max_restarts
        self.ids = list(ids) if ids is not None else list(range(num_actors))
        buffers = [bytearray(layout.nbytes()) for _ in range(num_actors)]
        self._flats = [np.frombuffer(b, dtype=np.uint8) for b in buffers]
        self.slots: Sequence[ActorSlot] = [ActorSlot(layout, b) for b in buffers]
        self._owned = handles is None
        self._handles: list = list(handles) if handles is not None else []
        self._placement = None
        self._pending: dict = {}  # outstanding call -> slot index
        self._restarts = collections.Counter()
        self.total_restarts = 0
        self.round_trips = collections.Counter()  # completed round trips per slot
        self.episodes: collections.deque = collections.deque(maxlen=10_000)
        self._connected = False
        self._stopped = False

    # ---------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._owned:
            self._connected = connect(self.cfg, cpus_needed(self.cfg, self.num_actors))
            try:
                self._placement = make_placement(self.cfg, [{"CPU": self.cfg.actor_cpus}] * self.num_actors)
                self._handles = make_groups(self.layout, self.cfg, self.num_actors, self.max_restarts, self._placement)
                check_record_path(self._handles, self.actor_spec(self.ids[0], 0).record_path)
            except BaseException:
                self.stop(timeout=0)
                raise
        for i, handle in enumerate(self._handles):
            self._pending[handle.start.remote(self.actor_spec(self.ids[i], 0))] = i

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every group (recorders flushed); if owned, kill them and disconnect from Ray. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._pending.clear()
        try:
            if self._handles and timeout > 0:
                ray.wait([h.close.remote() for h in self._handles], num_returns=len(self._handles), timeout=timeout)
        finally:
            if self._owned:
                kill_all(self._handles)
                remove_placement(self._placement)
                if self._connected:
                    ray.shutdown()
            self._handles = []

    def kill_actor(self, actor_id: int) -> None:
        """Kill a group's process; Ray restarts it (for tests of crash recovery)."""
        ray.kill(self._handles[actor_id], no_restart=False)

    def pids(self) -> list[int]:
        return ray.get([h.pid.remote() for h in self._handles])

    def node_ids(self) -> list[str]:
        return ray.get([h.node_id.remote() for h in self._handles])

    # ----------------------------------------------------------- endpoint
    def live_actors(self) -> int:
        return self.num_actors

    def poll(self, timeout: float) -> list[int]:
        if not self._pending:
            time.sleep(min(timeout, 0.01))
            return []
        ready, rest = ray.wait(list(self._pending), num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        out: list[int] = []
        for ref in ready:
            i = self._pending.pop(ref)
            try:
                flat, episodes = ray.get(ref)
            except ray.exceptions.RayError as err:
                self._handle_crash(i, err)
                continue
            self._flats[i][:] = flat
            self.round_trips[i] += 1
            for env_index, ret, length in episodes or ():
                self.episodes.append((self.ids[i], env_index, float(ret), int(length)))
            out.append(i)
        return out

    def reply(self, actor_ids: Sequence[int]) -> None:
        for a in actor_ids:
            self._pending[self._handles[a].step.remote(self.slots[a].action.copy())] = a

    def _handle_crash(self, i: int, err: BaseException) -> None:
        if self._stopped:
            return
        actor_id = self.ids[i]
        self._restarts[i] += 1
        self.total_restarts += 1
        cause = getattr(err, "cause", None) or err  # a task error carries the group's own exception
        reason = f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}"
        log.warning("actor group %d failed (%s); restarting it (%d restarts so far)", actor_id, reason, self.total_restarts)
        if self.total_restarts > self.max_restarts:
            raise ActorCrashLoop(
                f"actor groups failed {self.total_restarts} times (limit max_restarts={self.max_restarts}); "
                f"last: group {actor_id}: {reason}. Check the environment config."
            )
        if self.on_restart is not None:
            self.on_restart(i)
        spec = self.actor_spec(actor_id, self._restarts[i])
        self._pending[self._handles[i].start.remote(spec)] = i


def kill_all(handles: Sequence) -> None:
    """Kill Ray actors for good (no restart); the dead are skipped."""
    for handle in handles:
        try:
            ray.kill(handle, no_restart=True)
        except Exception as err:  # noqa: BLE001 - an actor already gone
            log.debug("could not kill %s: %s", handle, err)
