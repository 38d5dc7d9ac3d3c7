"""Where the learner's batches come from: the actors' queue directly, or a replay between.

Both feeds answer :meth:`next` with a :class:`Draw` (a batch or, while a replay
warms up, none) and the environment steps newly received, and take the
learner's new priorities in :meth:`after_update`.

:class:`QueueFeed` (IMPALA): batches of ``batch_size`` environments' unrolls
straight from the queue; each carries ``T x batch_size`` new steps.

:class:`ReplayRole` (an algorithm whose learner step ``uses_replay``, R2D2):
every actor unroll from the queue is given insertion priorities by the step
(``step.priorities(unroll)``, computed under the current nets, as SEED's actors
do) and inserted, one sequence per environment column. Learning starts once
``min_replay`` sequences are stored. From then on the replay-ratio control
keeps ``sampled <= replay_ratio * inserted`` (both counted from the moment
learning started, so the first update comes at once): an update samples
``batch_size`` sequences; when the ratio does not allow the next one, the
role inserts more unrolls first (waiting for the actors), and while it is
learning it takes no unroll it does not need, so a learner slower than the
ratio holds the actors back through the bounded queue. Each batch comes
with importance weights; after the update the sampled sequences get the
step's new priorities.

Evaluation environments (R2D2's ``agent.eval_envs``, SEED's ``num_eval_envs``)
are the last slots of all actors' environments (slot = actor x envs_per_actor +
column); their steps count as frames but never enter the replay, as in SEED,
where evaluation actors do not feed the learner. Inside one actor they are the
trailing columns, so the training columns are a prefix and keep their stream
keys (actor, column).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from seedrl.runtime.replay import SequenceReplay
from seedrl.runtime.unrolls import Unroll


@dataclass
class Draw:
    """One answer of a feed: a batch to learn from (or None while warming up) and new env steps."""

    batch: Unroll | None
    steps: int
    weights: torch.Tensor | None = None
    ids: np.ndarray | None = None


class QueueFeed:
    """Batches straight from the actors (see the module docstring)."""

    def __init__(self, learner, unroll_length: int, batch_size: int):
        self.learner = learner
        self.steps_per_batch = unroll_length * batch_size

    def next(self, stop: threading.Event) -> Draw | None:
        batch = self.learner.next_batch(stop)
        return None if batch is None else Draw(batch, self.steps_per_batch)

    def after_update(self, draw: Draw, priorities: np.ndarray | None) -> None:
        pass

    def metrics(self) -> dict[str, float]:
        return {}


class ReplayRole:
    """Unrolls in, prioritized batches out, with replay-ratio control (see the module docstring).

    Args:
        replay: the sequence replay (sequences of ``burn_in + L + 1`` entries, overlap ``burn_in + 1``).
        step: the learner step: ``priorities(unroll) -> [N]`` for new sequences.
        unrolls: the actors' bounded queue.
        batch_size: sequences per update.
        min_replay: sequences stored before learning starts.
        replay_ratio: sequences sampled per sequence inserted.
        new_steps: environment steps each inserted sequence adds (L).
        first_eval_slot: the first evaluation slot (``None``: no evaluation environments).
        envs_per_actor: environments per actor (to map an unroll's columns to slots).
    """

    def __init__(self, replay: SequenceReplay, step, unrolls: "queue.Queue[Unroll]", batch_size: int,
                 min_replay: int, replay_ratio: float, new_steps: int, *, first_eval_slot: int | None = None,
                 envs_per_actor: int | None = None):
        if first_eval_slot is not None and not envs_per_actor:
            raise ValueError("first_eval_slot needs envs_per_actor")
        self.first_eval_slot = first_eval_slot
        self.envs_per_actor = envs_per_actor
        self.replay = replay
        self.step = step
        self.unrolls = unrolls
        self.batch_size = batch_size
        self.min_replay = min_replay
        self.replay_ratio = replay_ratio
        self.new_steps = new_steps
        self.inserted = 0  # sequences inserted by this role (this process)
        self.sampled = 0  # sequences sampled by this role
        self._learn_from: tuple[int, int] | None = None  # (inserted, sampled) when learning started
        self._start = time.perf_counter()
        self._last_priorities: np.ndarray | None = None

    # ------------------------------------------------------------------ ratio control
    def learning(self) -> bool:
        """Whether the replay holds ``min_replay`` sequences (learning has started)."""
        if self._learn_from is None and len(self.replay) >= self.min_replay:
            self._learn_from = (self.inserted, self.sampled)
        return self._learn_from is not None

    def may_sample(self) -> bool:
        """Whether the next batch keeps ``sampled <= replay_ratio * inserted`` since learning started."""
        if not self.learning():
            return False
        ins0, smp0 = self._learn_from
        return self.sampled - smp0 <= self.replay_ratio * (self.inserted - ins0)

    # ------------------------------------------------------------------ feed
    def training_columns(self, unroll: Unroll) -> int:
        """How many leading columns of ``unroll`` are training environments (the rest evaluate)."""
        if self.first_eval_slot is None:
            return unroll.num_envs
        first_slot = unroll.actor_id * self.envs_per_actor
        return int(min(unroll.num_envs, max(0, self.first_eval_slot - first_slot)))

    def insert(self, unroll: Unroll) -> int:
        """Insert the training columns of one actor unroll with the step's priorities; returns the
        env steps the whole unroll adds (evaluation columns' steps are frames too)."""
        keep = self.training_columns(unroll)
        if keep:
            part = unroll if keep == unroll.num_envs else unroll.slice(0, keep)
            priorities = self.step.priorities(part)
            self.replay.insert(part, priorities)
            self._last_priorities = priorities
            self.inserted += keep
        return self.new_steps * unroll.num_envs

    def next(self, stop: threading.Event) -> Draw | None:
        """A sampled batch once the ratio allows it; ``Draw(None, steps)`` after each insert while
        warming up (so progress shows); None when ``stop`` is set while waiting for unrolls."""
        steps = 0
        while not self.may_sample():
            try:
                unroll = self.unrolls.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    return None
                continue
            steps += self.insert(unroll)
            if not self.learning():
                return Draw(None, steps)
        ids, batch, weights = self.replay.sample(self.batch_size)
        self.sampled += self.batch_size
        return Draw(batch, steps, torch.from_numpy(weights), ids)

    def after_update(self, draw: Draw, priorities: np.ndarray | None) -> None:
        """Give the sampled sequences the learner's new priorities."""
        if draw.ids is not None and priorities is not None:
            self.replay.update_priorities(draw.ids, priorities)
            self._last_priorities = priorities

    def metrics(self) -> dict[str, float]:
        """Replay size, insert and sample rates (sequences/s since start), streams started (one per
        training environment, and one more each time an actor restarts), mean of the last priorities."""
        seconds = max(1e-9, time.perf_counter() - self._start)
        out = {"replay_size": float(len(self.replay)), "insert_rate": self.inserted / seconds,
               "sample_rate": self.sampled / seconds, "replay_streams": float(self.replay.store.next_stream)}
        if self._last_priorities is not None:
            out["priority_mean"] = float(np.mean(self._last_priorities))
        return out
