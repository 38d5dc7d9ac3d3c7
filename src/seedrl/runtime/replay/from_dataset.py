"""Seed a :class:`SequenceReplay` from RLDS episodes in the trajectory store.

The episodes (in dataset order) become one stream of runtime entries, laid out
as central inference records them (:mod:`seedrl.runtime.unrolls`): entry t
holds the observation o_t, the action a_t taken there, ``prev_action`` a_{t−1}
and ``prev_reward`` r_{t−1} (both 0 at an episode start), and the reward and
flags of the transition *into* it. RLDS step i holds (o_i, a_i, r_i) with the
reward after a_i, so within an episode entry i carries ``reward = r_{i−1}``.
An episode's last step (``is_last``) holds its final observation, which the
runtime never shows the policy: its transition's flags land on the next
episode's first entry (``first``, ``terminated = is_terminal``, ``truncated =
not is_terminal``, reward r_{n−2}), and a truncated episode's final
observation goes to ``final_obs``, as after an autoreset. After the last
episode one closing entry holds its final observation and those flags.
Episodes of one step (no transition) are skipped.

The stream is cut into windows of ``L`` entries with stride ``L − overlap``
(the runtime's overlap), plus one window aligned to the stream's end when the
stride does not reach it, so every transition is stored. What the dataset does
not have is filled in and stated here: the recurrent state at a window start
is **zeros** (the burn-in is what makes up for it), ``logp`` is 0 and
``version`` is −1. Priorities: ``priority`` if given, else the largest
priority the replay has seen, else 1.0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch

from seedrl.data.episode import Episode
from seedrl.runtime.replay.sequence_replay import SequenceReplay
from seedrl.runtime.unrolls import Unroll

__all__ = ["check_dataset_spec", "episodes_to_stream", "seed_from_dataset", "seed_from_path"]


def episodes_to_stream(episodes: Iterable[Episode]) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray]]:
    """The runtime entries ``{field: [S, ...]}`` of ``episodes`` and their final observations ``{t: obs}``."""
    parts: list[dict[str, np.ndarray]] = []
    finals: dict[int, np.ndarray] = {}
    length = 0
    carry = None  # (reward, terminated, truncated) of the previous episode's last transition
    last_obs = None
    for ep in episodes:
        cols = ep.columns
        for name in ("observation", "action", "reward", "is_terminal"):
            if name not in cols:
                raise ValueError(f"episode {ep.episode_id!r} has no flat step field {name!r} (fields: {sorted(cols)})")
        n = len(ep)
        if n < 2:
            continue
        obs, action, reward = cols["observation"], cols["action"], np.asarray(cols["reward"], np.float32)
        entry = {
            "obs": obs[: n - 1],
            "first": np.arange(n - 1) == 0,
            "reward": np.concatenate([[carry[0] if carry else 0.0], reward[: n - 2]]).astype(np.float32),
            "terminated": np.zeros(n - 1, bool),
            "truncated": np.zeros(n - 1, bool),
            "action": action[: n - 1],
            "prev_action": np.concatenate([np.zeros_like(action[:1]), action[: n - 2]]),
            "prev_reward": np.concatenate([[0.0], reward[: n - 2]]).astype(np.float32),
        }
        if carry:
            entry["terminated"][0], entry["truncated"][0] = carry[1], carry[2]
            if carry[2]:
                finals[length] = last_obs
        parts.append(entry)
        length += n - 1
        terminal = bool(cols["is_terminal"][n - 1])
        carry, last_obs = (float(reward[n - 2]), terminal, not terminal), np.array(obs[n - 1])
    if not parts:
        raise ValueError("the episodes hold no transition (every episode has fewer than 2 steps)")
    closing = {
        "obs": last_obs[None],
        "first": np.ones(1, bool),
        "reward": np.array([carry[0]], np.float32),
        "terminated": np.array([carry[1]]),
        "truncated": np.array([carry[2]]),
        "action": np.zeros_like(parts[-1]["action"][:1]),
        "prev_action": np.zeros_like(parts[-1]["action"][:1]),
        "prev_reward": np.zeros(1, np.float32),
    }
    if carry[2]:
        finals[length] = last_obs
    parts.append(closing)
    stream = {k: np.concatenate([p[k] for p in parts]) for k in closing}
    stream["logp"] = np.zeros(len(stream["obs"]), np.float32)
    stream["version"] = np.full(len(stream["obs"]), -1, np.int64)
    return stream, finals


def seed_from_dataset(
    replay: SequenceReplay,
    episodes: Iterable[Episode],
    *,
    actor_id: int = -1,
    priority: float | None = None,
    state_shapes: tuple[tuple[int, ...], ...] | None = None,
    dtypes: Mapping[str, np.dtype] | None = None,
) -> np.ndarray:
    """Insert ``episodes`` (e.g. ``open_dataset(path)``) into ``replay`` as sequences of stream
    ``(actor_id, 0)``; returns their ids. ``state_shapes`` (per-env shapes of the recurrent state,
    float32 zeros) defaults to the replay's stored states; give it when the replay is empty
    (``()`` for an agent without recurrent state). Fields are cast (losslessly, else a ValueError
    naming the field) to the dtypes the replay stores, or while it is empty to ``dtypes``
    (``{field: dtype}``, e.g. the actors' ``{"action": int64}``), so later actor inserts match."""
    stream, finals = episodes_to_stream(episodes)
    L, stride = replay.sequence_length, replay.sequence_length - replay.overlap
    size = len(stream["obs"])
    if size < L:
        raise ValueError(f"the episodes make {size} entries, fewer than one sequence of sequence_length={L}")
    if state_shapes is None:
        if replay.states is None:
            raise ValueError("state_shapes is required while the replay is empty (() for an agent without recurrent state)")
        state0 = tuple(torch.zeros((1, *s.shape[1:]), dtype=torch.from_numpy(s[:0]).dtype) for s in replay.states)
    else:
        state0 = tuple(torch.zeros((1, *shape), dtype=torch.float32) for shape in state_shapes)
    stored = replay.store.field_specs
    if stored is not None:
        specs = {"obs": replay.store.obs_dtype, **{k: dtype for k, (_, dtype) in stored.items()}}
    else:
        specs = dict(dtypes or {})
    if specs:
        for name, dtype in specs.items():
            if name in stream and stream[name].dtype != dtype:
                if not np.can_cast(stream[name].dtype, dtype, "safe"):
                    raise ValueError(f"dataset field {name!r} is {stream[name].dtype}, the replay stores {dtype} (no lossless cast)")
                stream[name] = stream[name].astype(dtype)
    p = np.array([priority if priority is not None else (replay.max_priority or 1.0)])
    starts = list(range(0, size - L + 1, stride))
    if starts[-1] != size - L:
        starts.append(size - L)
    ids = []
    for k, s in enumerate(starts):
        arrays = {name: col[s : s + L, None] for name, col in stream.items()}
        window_finals = {(t - s, 0): o for t, o in finals.items() if s <= t < s + L}
        continues = k > 0 and s == starts[k - 1] + stride
        ids.append(replay.insert(Unroll(arrays, state0, window_finals, actor_id, continues), p))
    return np.concatenate(ids)


def _space_dtype(space) -> np.dtype:
    return np.dtype(space.dtype) if space.dtype is not None else np.dtype("int64")


def check_dataset_spec(spec, observation_space, action_space, action_dtype=np.int64) -> None:
    """A ValueError saying how a dataset's step spec differs from an environment's spaces.

    The dataset must have flat ``observation`` and ``action`` fields; the observation's
    dtype and shape must equal the observation space's, the action's shape the action
    space's, and its dtype must cast losslessly to ``action_dtype`` (what the actors send).
    """
    if spec is None:
        raise ValueError("the dataset holds no episode (no step spec yet)")
    fields = {f.path: f for f in spec.fields}
    for name in ("observation", "action"):
        if name not in fields:
            raise ValueError(f"the dataset has no flat step field {name!r} (fields: {sorted(fields)})")
    obs, act = fields["observation"], fields["action"]
    env_obs = (_space_dtype(observation_space).name, tuple(observation_space.shape))
    if (obs.dtype, obs.shape) != env_obs:
        raise ValueError(f"the dataset's observation is {obs.dtype} {obs.shape}, the env's is {env_obs[0]} {env_obs[1]}")
    env_act = tuple(action_space.shape or ())
    if act.shape != env_act:
        raise ValueError(f"the dataset's action has shape {act.shape}, the env's {env_act}")
    if act.is_text or not np.can_cast(np.dtype(act.dtype), np.dtype(action_dtype), "safe"):
        raise ValueError(f"the dataset's action is {act.dtype}, the env's actions are {np.dtype(action_dtype).name} "
                         "(no lossless cast)")


def seed_from_path(replay: SequenceReplay, path, observation_space, action_space, *,
                   state_shapes: tuple[tuple[int, ...], ...], action_dtype=np.int64, key: str = "agent.replay_seed") -> np.ndarray:
    """Seed ``replay`` from the RLDS dataset at ``path`` for an env with these spaces; returns the ids.

    Every problem — no dataset there, an empty one, a spec that does not match the env
    (:func:`check_dataset_spec`), too few steps for one sequence — is a
    :class:`~seedrl.config.ConfigError` naming ``key`` and ``path``. Sequences are stream
    ``(-1, 0)`` with zero recurrent states and the replay's largest priority (1.0 when empty).
    """
    from seedrl.config import ConfigError
    from seedrl.data import open_dataset
    from seedrl.data.errors import DataError

    def fail(why: str) -> ConfigError:
        return ConfigError(f"config error: '{key}' = '{path}': {why}", key)

    try:
        dataset = open_dataset(Path(path))
        check_dataset_spec(dataset.spec, observation_space, action_space, action_dtype)
        dtypes = {"obs": _space_dtype(observation_space), "action": np.dtype(action_dtype),
                  "prev_action": np.dtype(action_dtype)}
        return seed_from_dataset(replay, dataset, state_shapes=state_shapes, dtypes=dtypes)
    except (OSError, DataError, ValueError) as err:
        raise fail(str(err)) from None
