"""Central inference: one batched policy forward pass for many actors.

The server waits for actors' submissions (:class:`Endpoint.poll`), closes a
batch when every live actor has submitted or ``batch_timeout_s`` after the
first arrival, runs the policy once for the whole batch, replies with
actions, and only then does its bookkeeping (recurrent state, unroll
buffers), so actors step their environments while it works.

Recurrent state lives here, per environment; rows are reset by the model
when ``first`` is set (episode start), and all of an actor's rows are reset
when that actor restarts. Finished unrolls go to the learner through a
bounded queue: when the learner falls behind, ``put`` blocks, inference stops
replying and the actors wait. That is the backpressure; no queue grows.

The policy head (:mod:`seedrl.runtime.policies`) turns the model's first
output into actions: softmax sampling of logits (IMPALA, the default) or
ε-greedy on Q-values with a fixed ε per environment (R2D2). IMPALA's
actions are sampled by Gumbel-max (``argmax(log_softmax(logits) + G)``, G
standard Gumbel noise from the server's seeded generator): the same
distribution as sampling the softmax, cheaper per batch than
``torch.multinomial``, and the same actions for the same seed. Feed-forward
models (empty state) skip the per-row gather/scatter of recurrent state.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from seedrl.runtime.policies import SamplingHead
from seedrl.runtime.transport import ActorSlot, SlotLayout
from seedrl.runtime.unrolls import UnrollBuffer
from seedrl.runtime.weights import WeightsMailbox


class Endpoint(Protocol):
    """The inference side of a transport."""

    slots: Sequence[ActorSlot]

    def poll(self, timeout: float) -> list[int]:
        """Ids of actors whose submissions are ready (waits up to ``timeout`` s for the first)."""

    def reply(self, actor_ids: Sequence[int]) -> None:
        """Tell these actors their actions are in their slots."""

    def live_actors(self) -> int:
        """How many actors are alive now."""


class PolicyStep(Protocol):
    def __call__(self, obs, state, first, prev_action, prev_reward): ...


def sample_actions(logits: torch.Tensor, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample one action per row of ``logits [B, A]``: ``(actions [B] int64, logp [B] float32)``, numpy.

    Gumbel-max: ``argmax(log_softmax(logits) + G)`` with ``G = -log(-log U)``,
    ``U`` uniform from ``generator``, is an exact sample of
    ``softmax(logits)``. ``U`` is drawn in float64 (in ``[2**-53, 1)``), so
    the noise's range cuts off a tail of probability ~1e-16 (float32 noise
    would cut off ~6e-8). ``logp`` is ``log_softmax`` at the sampled action.
    The elementwise work runs in numpy: for inference batches (tens of rows)
    torch's per-op dispatch costs more than the arithmetic. NaN logits
    raise, as ``torch.multinomial`` did.
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1).numpy()
    u = torch.rand(log_probs.shape, generator=generator, dtype=torch.float64).numpy()
    np.maximum(u, 2.0**-53, out=u)
    np.log(u, out=u)
    np.negative(u, out=u)
    np.log(u, out=u)  # log(-log U) = -G
    actions = np.argmax(log_probs - u, axis=-1)
    logp = log_probs[np.arange(len(actions)), actions]
    if np.isnan(logp).any():
        raise RuntimeError("InferenceServer: the policy's logits contain NaN")
    return actions, logp


class InferenceServer:
    """Runs the policy for all actors; builds unrolls for the learner.

    Args:
        model: a network with ``initial_state(n)`` and ``step(obs, state, first,
            prev_action, prev_reward) -> (out, ..., state)`` (an actor-critic's
            ``(logits, value, state)``, a Q-network's ``(q, state)``).
        layout: the actors' slot layout; ``num_actors`` of them.
        unroll_length: T; unrolls hold T + 1 entries and consecutive ones share ``overlap``.
        policy: the head that turns ``out`` into actions (default: softmax sampling).
        overlap: entries shared by consecutive unrolls (IMPALA 1, R2D2 burn_in + 1).
        unrolls: the bounded learner queue.
        batch_timeout_s: how long a batch may wait for more actors after the first.
        weights: the mailbox the learner posts new weights to; applied before each forward
            pass, and its version stamps the unrolls (None: the weights never change).
        seed: seed of the action sampler.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        layout: SlotLayout,
        num_actors: int,
        unroll_length: int,
        unrolls: "queue.Queue",
        *,
        batch_timeout_s: float = 0.002,
        weights: WeightsMailbox | None = None,
        seed: int = 0,
        on_episode: Callable[[int, float, int], None] | None = None,
        policy: Callable | None = None,
        overlap: int = 1,
    ):
        self.model = model
        self.layout = layout
        self.num_actors = num_actors
        self.unrolls = unrolls
        self.batch_timeout_s = batch_timeout_s
        self.weights = weights
        self.version = 0
        n = layout.num_envs
        self.state = model.initial_state(num_actors * n)
        self.last_action = np.zeros((num_actors, n, *layout.action_shape), dtype=layout.action_dtype)
        self.buffers = [UnrollBuffer(layout, unroll_length, overlap) for _ in range(num_actors)]
        self.policy = policy if policy is not None else SamplingHead()
        self.generator = torch.Generator().manual_seed(seed)
        self.on_episode = on_episode
        # measurements
        self.steps = 0
        self.batches = 0
        self.batch_sizes_sum = 0
        self.forward_seconds = 0.0

    # ------------------------------------------------------------------ api
    def reset_actor(self, actor_id: int) -> None:
        """Forget an actor's recurrent state and partial unroll (it restarted)."""
        n = self.layout.num_envs
        rows = slice(actor_id * n, (actor_id + 1) * n)
        fresh = self.model.initial_state(n)
        for s, f in zip(self.state, fresh):
            s[rows] = f
        self.last_action[actor_id] = 0
        self.buffers[actor_id].reset()

    def serve(self, endpoint: Endpoint, stop: threading.Event) -> None:
        """Serve until ``stop`` is set."""
        while not stop.is_set():
            ready = self._gather(endpoint, stop)
            if ready:
                self.infer(endpoint, ready, stop)

    # ------------------------------------------------------------- internals
    def _gather(self, endpoint: Endpoint, stop: threading.Event) -> list[int]:
        ready = endpoint.poll(0.1)
        if not ready:
            return []
        deadline = time.perf_counter() + self.batch_timeout_s
        got = set(ready)
        while len(got) < endpoint.live_actors() and not stop.is_set():
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            got.update(endpoint.poll(left))
        return sorted(got)

    @torch.inference_mode()
    def infer(self, endpoint: Endpoint, ready: list[int], stop: threading.Event | None = None) -> None:
        """One batched forward pass for the ready actors, then reply and record."""
        n = self.layout.num_envs
        slots = [endpoint.slots[a] for a in ready]
        # Snapshot the slots: once replied to, actors overwrite them.
        entry = {
            name: np.concatenate([getattr(s, name) for s in slots])
            for name in ("obs", "first", "reward", "terminated", "truncated")
        }
        finals = [
            {int(j): s.final_obs[j].copy() for j in np.flatnonzero(s.truncated)} if s.truncated.any() else {}
            for s in slots
        ]
        first = entry["first"]
        prev_action = np.concatenate([self.last_action[a] for a in ready])
        prev_action[first] = 0
        prev_reward = np.where(first, np.float32(0), entry["reward"]).astype(np.float32)
        env_rows = np.concatenate([np.arange(a * n, (a + 1) * n) for a in ready])
        # feed-forward models have no state: nothing to gather or scatter
        rows = torch.from_numpy(env_rows) if self.state else None
        state_in = tuple(s[rows] for s in self.state)
        start = time.perf_counter()
        if self.weights is not None:
            posted = self.weights.apply(self.model)  # only this thread writes self.model
            if posted is not None:
                self.version = posted
        version = self.version
        out = self.model.step(
            torch.from_numpy(entry["obs"]),
            state_in,
            torch.from_numpy(first),
            torch.from_numpy(prev_action),
            torch.from_numpy(prev_reward),
        )
        state_out = out[-1]
        actions, logp = self.policy(out[0], env_rows, self.generator)
        actions_np = actions.astype(self.layout.action_dtype, copy=False)
        self.forward_seconds += time.perf_counter() - start
        for i, slot in enumerate(slots):
            slot.action[:] = actions_np[i * n : (i + 1) * n]
        endpoint.reply(ready)
        # bookkeeping while the actors step
        for s, new in zip(self.state, state_out):
            s[rows] = new
        entry.update(action=actions_np, logp=logp, prev_action=prev_action, prev_reward=prev_reward)
        for i, a in enumerate(ready):
            part = slice(i * n, (i + 1) * n)
            self.last_action[a] = actions_np[part]
            unroll = self.buffers[a].add(
                {k: v[part] for k, v in entry.items()},
                finals[i],
                tuple(s[part] for s in state_in),
                version,
                a,
            )
            if unroll is not None:
                self._put(unroll, stop)
        self.steps += len(ready) * n
        self.batches += 1
        self.batch_sizes_sum += len(ready) * n

    def _put(self, unroll, stop: threading.Event | None) -> None:
        while True:
            try:
                self.unrolls.put(unroll, timeout=0.1)
                return
            except queue.Full:
                if stop is not None and stop.is_set():
                    return

    @property
    def mean_batch_size(self) -> float:
        return self.batch_sizes_sum / max(1, self.batches)
