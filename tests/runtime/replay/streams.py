"""Hand-built actor streams for the replay tests: entries as central inference would record them.

``ActorStream`` steps N fake environments whose observations are frame stacks
``[K, H, W]`` (an episode starts with K copies of its first frame, each step
shifts in one new frame), with random episode ends (terminations and
truncations, the latter with a final observation), and cuts its entries into
unrolls of ``L`` entries overlapping by ``overlap`` (SEED's scheme). It keeps
every entry it made, so a test can compare any stored sequence with the truth.
"""

from __future__ import annotations

import numpy as np
import torch

from seedrl.runtime.unrolls import Unroll

FIELDS = ("first", "reward", "terminated", "truncated", "action", "logp", "prev_action", "prev_reward", "version")


class ActorStream:
    def __init__(self, actor_id, num_envs, length, overlap, *, stack=4, frame=(3, 2), seed=0, end_prob=0.1,
                 obs_dtype=np.uint8, state_dim=3):
        self.actor_id, self.n, self.length, self.overlap = actor_id, num_envs, length, overlap
        self.stack, self.frame, self.end_prob, self.dtype = stack, frame, end_prob, obs_dtype
        self.rng = np.random.default_rng(seed)
        self.state_dim = state_dim
        self.entries: list[dict] = []  # per step: field -> [N, ...]
        self.finals: dict[tuple[int, int], np.ndarray] = {}  # (step, env) -> final obs
        self.states: list[np.ndarray] = []  # per step: [N, state_dim], the "recurrent state" at that step
        self.frames = [self._frame() for _ in range(num_envs)]
        self.obs = np.stack([np.stack([f] * stack) if stack else f for f in self.frames])
        self.emitted = 0  # entries already covered by emitted unrolls' starts
        self._record(first=np.ones(num_envs, bool), reward=np.zeros(num_envs, np.float32),
                     term=np.zeros(num_envs, bool), trunc=np.zeros(num_envs, bool))

    def _frame(self):
        if np.issubdtype(self.dtype, np.floating):
            return self.rng.standard_normal(self.frame).astype(self.dtype)
        return self.rng.integers(0, 255, self.frame).astype(self.dtype)

    def _record(self, first, reward, term, trunc):
        t = len(self.entries)
        prev = self.entries[-1] if self.entries else None
        action = self.rng.integers(0, 6, self.n)
        self.entries.append({
            "obs": self.obs.copy(), "first": first, "reward": reward, "terminated": term, "truncated": trunc,
            "action": action, "logp": self.rng.standard_normal(self.n).astype(np.float32),
            "prev_action": np.where(first, 0, prev["action"] if prev else 0),
            "prev_reward": np.where(first, 0, reward).astype(np.float32),
            "version": np.full(self.n, t // 3, np.int64),
        })
        self.states.append(self.rng.standard_normal((self.n, self.state_dim)).astype(np.float32))

    def step(self):
        ends = self.rng.random(self.n) < self.end_prob
        term = ends & (self.rng.random(self.n) < 0.5)
        trunc = ends & ~term
        reward = self.rng.standard_normal(self.n).astype(np.float32)
        t = len(self.entries)
        for i in range(self.n):
            new = self._frame()
            if self.stack:
                shifted = np.concatenate([self.obs[i][1:], new[None]])
            else:
                shifted = new
            if trunc[i]:
                self.finals[(t, i)] = shifted.copy()
            if ends[i]:
                start = self._frame()
                self.obs[i] = np.stack([start] * self.stack) if self.stack else start
            else:
                self.obs[i] = shifted
        self._record(first=ends.copy(), reward=reward, term=term, trunc=trunc)

    def window(self, start):
        """Entries ``start .. start + length - 1`` as an Unroll (the truth for a stored sequence)."""
        while len(self.entries) < start + self.length:
            self.step()
        rows = self.entries[start : start + self.length]
        arrays = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
        finals = {(t - start, i): o for (t, i), o in self.finals.items() if start <= t < start + self.length}
        return Unroll(arrays, (torch.from_numpy(self.states[start]),), finals, self.actor_id)

    def next_unroll(self, *, restart=False):
        """The next unroll; ``restart`` starts the actor over (fresh episode, continues=False)."""
        if restart:
            self.emitted = len(self.entries)  # the actor is replaced: a fresh stream from the next step
            self.step()
            self.entries[-1]["first"][:] = True
            self.entries[-1]["prev_action"][:] = 0
            self.entries[-1]["prev_reward"][:] = 0
            start, continues = len(self.entries) - 1, False
        else:
            start, continues = self.emitted, self.emitted > 0
        u = self.window(start)
        u.continues = continues
        self.emitted = start + self.length - self.overlap
        return start, u
