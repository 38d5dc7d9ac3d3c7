"""Unroll buffers: per-actor trajectories of fixed length, built by central inference.

Each actor's N environments advance together, so an actor's buffer holds
``T + 1`` entries of ``[N, ...]`` arrays. Entry t holds the observation the
policy saw, the reward and flags of the transition that led to it, the action
chosen, its behaviour log-probability and the weights version that chose it.
When ``T + 1`` entries are full, the unroll is emitted and its last
``overlap`` entries become the first entries of the next one. IMPALA uses
``overlap = 1`` (entry T becomes entry 0): every transition (t -> t+1) is
learned from exactly once and the last observation of one unroll is the
bootstrap of the learner's targets. R2D2 uses ``overlap = burn_in + 1`` with
``T = burn_in + L``: the next unroll's first ``burn_in`` entries re-run the
recurrent state (burn-in) and its L learned transitions start where the
previous unroll's ended; ``state0`` of the next unroll is the recurrent state
the policy had at its entry 0, so the buffer keeps the input states of the
last ``overlap`` entries. An emitted unroll has ``continues=True`` when its
first ``overlap`` entries repeat the previous unroll's last ones, False for
the first unroll after the actor (re)started.

For the learner, transition t (0 <= t < T) has action ``action[t]``, reward
``reward[t+1]``, ends in a terminal if ``terminated[t+1]`` and in a time-limit
truncation if ``truncated[t+1]``; a truncated transition bootstraps from
``final_obs[(t + 1, env)]`` (sparse: truncations are rare).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from seedrl.runtime.transport import SlotLayout

ENTRY_FIELDS = ("obs", "first", "reward", "terminated", "truncated", "action", "logp", "prev_action", "prev_reward", "version")


@dataclass
class Unroll:
    """One emitted unroll: arrays ``[T + 1, N, ...]`` plus the recurrent state at entry 0."""

    arrays: dict[str, np.ndarray]
    state0: tuple[torch.Tensor, ...]
    final_obs: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    actor_id: int = 0
    #: True when this unroll's first entries repeat the last entries of the same actor's previous
    #: unroll (no actor restart in between), so a replay can store the shared steps once.
    continues: bool = False

    @property
    def num_envs(self) -> int:
        return self.arrays["obs"].shape[1]

    @property
    def length(self) -> int:
        """T: the transitions per environment (the arrays hold T + 1 entries)."""
        return self.arrays["obs"].shape[0] - 1

    def slice(self, start: int, stop: int) -> "Unroll":
        """Environments ``start:stop`` of this unroll (views, no copy)."""
        finals = {(t, n - start): o for (t, n), o in self.final_obs.items() if start <= n < stop}
        return Unroll(
            {k: v[:, start:stop] for k, v in self.arrays.items()},
            tuple(s[start:stop] for s in self.state0),
            finals,
            self.actor_id,
            self.continues,
        )

    def take(self, envs: np.ndarray) -> "Unroll":
        """Environments ``envs`` (indices, in that order) of this unroll (copies)."""
        envs = np.asarray(envs, dtype=np.int64)
        where = {int(n): i for i, n in enumerate(envs)}
        finals = {(t, where[n]): o for (t, n), o in self.final_obs.items() if n in where}
        index = torch.from_numpy(envs)
        return Unroll({k: v[:, envs] for k, v in self.arrays.items()}, tuple(s[index] for s in self.state0),
                      finals, self.actor_id, self.continues)


def stack_unrolls(unrolls: list[Unroll]) -> Unroll:
    """Concatenate unrolls along the environment axis into one learner batch."""
    arrays = {k: np.concatenate([u.arrays[k] for u in unrolls], axis=1) for k in unrolls[0].arrays}
    state0 = tuple(torch.cat(parts, dim=0) for parts in zip(*(u.state0 for u in unrolls)))
    finals: dict[tuple[int, int], np.ndarray] = {}
    offset = 0
    for u in unrolls:
        for (t, n), obs in u.final_obs.items():
            finals[(t, offset + n)] = obs
        offset += u.num_envs
    return Unroll(arrays, state0, finals)


class UnrollBuffer:
    """The in-progress unroll of one actor: ``unroll_length + 1`` entries, consecutive unrolls
    sharing ``overlap`` entries (1 <= overlap <= unroll_length; see the module docstring)."""

    def __init__(self, layout: SlotLayout, unroll_length: int, overlap: int = 1):
        if not 1 <= overlap <= unroll_length:
            raise ValueError(f"UnrollBuffer: overlap must be in [1, unroll_length={unroll_length}], got {overlap}")
        t1, n = unroll_length + 1, layout.num_envs
        self.length = unroll_length
        self.overlap = overlap
        self.arrays = {
            "obs": np.zeros((t1, n, *layout.obs_shape), dtype=layout.obs_dtype),
            "first": np.zeros((t1, n), dtype=bool),
            "reward": np.zeros((t1, n), dtype=np.float32),
            "terminated": np.zeros((t1, n), dtype=bool),
            "truncated": np.zeros((t1, n), dtype=bool),
            "action": np.zeros((t1, n, *layout.action_shape), dtype=layout.action_dtype),
            "logp": np.zeros((t1, n), dtype=np.float32),
            "prev_action": np.zeros((t1, n, *layout.action_shape), dtype=layout.action_dtype),
            "prev_reward": np.zeros((t1, n), dtype=np.float32),
            "version": np.zeros((t1, n), dtype=np.int64),
        }
        self.pos = 0
        self.state0: tuple[torch.Tensor, ...] = ()
        self.final_obs: dict[tuple[int, int], np.ndarray] = {}
        # input states of the entries the next unroll starts with (positions >= T + 1 - overlap)
        self._states: dict[int, tuple[torch.Tensor, ...]] = {}
        self.continues = False

    def reset(self) -> None:
        """Drop the partial unroll (its actor restarted): the next unroll starts a new stream."""
        self.pos = 0
        self.final_obs = {}
        self._states = {}
        self.continues = False

    def add(self, entry: dict[str, np.ndarray], final_obs: dict[int, np.ndarray], state_in: tuple, version: int, actor_id: int) -> "Unroll | None":
        """Record one step; returns the finished unroll when T + 1 entries are full.

        ``entry`` holds this actor's ``[N, ...]`` rows of every entry field but
        ``version``; ``final_obs`` maps env index -> last observation of an
        episode truncated by the transition into this entry; ``state_in`` is the
        recurrent state the policy read at this entry.
        """
        t = self.pos
        for name, value in entry.items():
            self.arrays[name][t] = value
        self.arrays["version"][t] = version
        if t == 0:
            self.state0 = tuple(s.clone() for s in state_in)
        else:
            for n, obs in final_obs.items():
                self.final_obs[(t, n)] = obs
        start = self.length + 1 - self.overlap  # entry that becomes the next unroll's entry 0
        if t >= start:
            self._states[t] = tuple(s.clone() for s in state_in)
        self.pos += 1
        if self.pos <= self.length:
            return None
        # Hand the filled arrays over (no copy) and continue in fresh ones.
        unroll = Unroll(self.arrays, self.state0, self.final_obs, actor_id, self.continues)
        self.arrays = {k: np.empty_like(v) for k, v in unroll.arrays.items()}
        for k, v in self.arrays.items():
            v[: self.overlap] = unroll.arrays[k][start:]
        carried = {p - start: st for p, st in self._states.items()}
        self.state0 = carried[0]
        self._states = {p: st for p, st in carried.items() if p >= start}
        # truncations inside the shared entries (not at the new entry 0: that transition is not in the unroll)
        self.final_obs = {(t - start, n): o for (t, n), o in unroll.final_obs.items() if t > start}
        self.pos = self.overlap
        self.continues = True
        return unroll
