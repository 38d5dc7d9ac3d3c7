"""Recording episodes as an agent acts (like DeepMind's EnvLogger), into the store.

Three wrappers write every episode they see to a :class:`DatasetWriter`
(given, or created from a path and then closed with the wrapper):

- :class:`RecordEpisodes` wraps a ``gymnasium.Env``;
- :class:`RecordVectorEpisodes` wraps a ``gymnasium.vector.VectorEnv`` and
  writes each sub-environment's episodes independently (all three autoreset
  modes of Gymnasium 1.x);
- :class:`RecordingEnvironment` wraps a ``dm_env.Environment`` (``dm_env`` is
  imported only when one is built).

RLDS alignment (SAR). After a reset we hold ``o_0``. Acting with ``a_t``
gives one RLDS step ``(o_t, a_t, r_t, d_t)`` where ``r_t`` and ``d_t`` are
what that action produced (for dm_env: the reward and discount of the *next*
TimeStep). When the episode ends, a final step holds the final observation
with ``is_last=True``, ``is_terminal`` = whether the environment terminated,
and action / reward / discount (and step-metadata fields) set to zeros of the
previous step's dtypes and shapes. An episode of N actions has N + 1 steps.
Truncation (time limit) is ``is_last`` without ``is_terminal``.

Episode boundaries. Calling ``reset()`` mid-episode, or closing the wrapper,
ends the current episode as truncated (final step holding the last
observation), so nothing recorded is lost. An episode in which no action was
taken (reset, then reset again) is not written.

Dtypes. Observations and actions are stored as given (copied when recorded,
so environments may reuse their buffers; Python ints become int64 and floats
float64). A reward that is a Python number is stored as float64, a numpy
reward keeps its dtype. Gymnasium discounts are float32 (0.0 once terminated,
else 1.0); dm_env discounts are stored as the environment gives them (Python
numbers as float64). Every step of a dataset must keep the same dtypes.

Metadata. Gymnasium episodes get ``env_id`` (``env.spec.id``, or ``""``) and
``seed`` (the ``reset(seed=...)`` that started the episode, or ``-1``; never
None, so every export format can hold them with one type); vector
sub-episodes also get ``env_index``. ``metadata=`` adds constant entries
(``agent_id``...), ``episode_fn(episode, env) -> dict`` adds entries computed
from the finished :class:`Episode` (it may override the automatic ones).
``step_fn`` adds step fields at the top level of the step holding the action
it was called for; it is called for recorded episodes only.

``sample_rate`` < 1 records a random subset of episodes: the k-th episode
started through the wrapper (counting across sub-environments, in index
order) is kept iff ``default_rng(seed).random()``'s k-th draw is below it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import gymnasium
import numpy as np

from seedrl.data.episode import Episode
from seedrl.data.spec import _is_leaf_sequence
from seedrl.data.writer import DatasetWriter
from seedrl.data.errors import DataError

__all__ = ["RecordEpisodes", "RecordVectorEpisodes", "RecordingEnvironment"]

StepFn = Callable[..., Mapping[str, Any]]
EpisodeFn = Callable[[Episode, Any], Mapping[str, Any]]
WriterOrPath = DatasetWriter | str | os.PathLike


# ------------------------------------------------------------------ leaves
def _map_leaves(fn: Callable[[Any], Any], tree: Any) -> Any:
    """Apply ``fn`` to the leaves of a step-like tree (same rules as ``tree_flatten``)."""
    if isinstance(tree, Mapping):
        return {k: _map_leaves(fn, v) for k, v in tree.items()}
    if isinstance(tree, tuple) or isinstance(tree, list) and not _is_leaf_sequence(tree):
        return type(tree)(_map_leaves(fn, v) for v in tree)
    return fn(tree)


def _copy_leaf(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.copy()
    if isinstance(x, list):
        return list(x)
    return x


def _zero_leaf(x: Any) -> Any:
    if isinstance(x, str):
        return ""
    if isinstance(x, (bytes, np.bytes_)):
        return b""
    return np.zeros_like(np.asarray(x))


def _number_leaf(x: Any) -> Any:
    """Python numbers -> float64 (lossless); numpy values keep their dtype."""
    if isinstance(x, (bool, int, float)) and not isinstance(x, np.generic):
        return np.float64(x)
    return _copy_leaf(x)


def copy_tree(tree: Any) -> Any:
    return _map_leaves(_copy_leaf, tree)


# ------------------------------------------------------------------ core
@dataclass
class _Track:
    """The episode in progress of one (sub-)environment."""

    active: bool = False
    recording: bool = False
    obs: Any = None
    info: Any = None
    steps: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)


class _Sink:
    """Turns begin / transition / end events into RLDS episodes on a writer."""

    def __init__(self, writer_or_path: WriterOrPath, episode_fn: EpisodeFn | None, record_infos: bool,
                 sample_rate: float, seed: int | None, metadata: Mapping[str, Any] | None):
        if not 0.0 <= float(sample_rate) <= 1.0:
            raise DataError(f"sample_rate must be in [0, 1], got {sample_rate!r}")
        if isinstance(writer_or_path, DatasetWriter):
            self.writer, self._owns = writer_or_path, False
        else:
            self.writer, self._owns = DatasetWriter(writer_or_path), True
        self.episode_fn = episode_fn
        self.record_infos = record_infos
        self.sample_rate = float(sample_rate)
        self._rng = np.random.default_rng(seed)
        self.metadata = dict(metadata or {})
        self.episode_ids: list[Any] = []

    def begin(self, track: _Track, obs: Any, info: Any, metadata: Mapping[str, Any]) -> None:
        track.active = True
        track.recording = self.sample_rate >= 1.0 or bool(self._rng.random() < self.sample_rate)
        track.steps = []
        track.obs = copy_tree(obs) if track.recording else None
        track.info = copy_tree(dict(info)) if track.recording and self.record_infos else None
        track.metadata = {**metadata, **self.metadata}

    def transition(
        self, track: _Track, action: Any, reward: Any, discount: Any, extra: Mapping[str, Any] | None,
        next_obs: Any, next_info: Any,
    ) -> None:
        if not track.recording:
            return
        step = {
            "observation": track.obs,
            "action": copy_tree(action),
            "reward": _map_leaves(_number_leaf, reward),
            "discount": _map_leaves(_number_leaf, discount),
            "is_first": not track.steps,
            "is_last": False,
            "is_terminal": False,
        }
        if self.record_infos:
            step["info"] = track.info
            track.info = copy_tree(dict(next_info))
        for key, value in (extra or {}).items():
            if key in step:
                raise DataError(f"step_fn returned field '{key}', which clashes with a recorded step field")
            step[key] = copy_tree(value)
        track.steps.append(step)
        track.obs = copy_tree(next_obs)

    def end(self, track: _Track, terminal: bool, env: Any) -> Any:
        """Write the episode in progress (if any); returns its id or None."""
        if not track.active:
            return None
        steps, recording, track.active, track.steps = track.steps, track.recording, False, []
        if not recording or not steps:
            return None
        last = steps[-1]
        final = {k: (v if k in ("observation", "info") else _map_leaves(_zero_leaf, v)) for k, v in last.items()}
        final.update(observation=track.obs, is_first=False, is_last=True, is_terminal=bool(terminal))
        if self.record_infos:
            final["info"] = track.info
        episode = Episode.from_steps(steps + [final], track.metadata, self.writer.spec)
        extra = dict(self.episode_fn(episode, env)) if self.episode_fn is not None else {}
        episode_id = self.writer.write_episode(episode, extra)
        self.episode_ids.append(episode_id)
        return episode_id

    def close(self) -> None:
        if self._owns:
            self.writer.close()


class _Recorder:
    """What the three wrappers share: the sink and its writer."""

    _sink: _Sink

    @property
    def writer(self) -> DatasetWriter:
        return self._sink.writer

    @property
    def episode_ids(self) -> list[Any]:
        """Ids of the episodes written so far, in order."""
        return list(self._sink.episode_ids)

    def _close(self, tracks: list[_Track], env: Any, close_env: Callable[[], None]) -> None:
        """Write the episodes in progress (as truncated), close an owned writer, close the env."""
        try:
            for track in tracks:
                self._sink.end(track, terminal=False, env=env)
        finally:
            try:
                self._sink.close()
            finally:
                close_env()


def _step_extra(step_fn: StepFn | None, track: _Track, *args: Any) -> Mapping[str, Any] | None:
    if step_fn is None or not track.recording:
        return None
    extra = step_fn(*args)
    if not isinstance(extra, Mapping):
        raise TypeError(f"step_fn must return a dict of step fields, got {type(extra).__name__}")
    return extra


def _env_id(env: Any) -> str:
    spec = getattr(env, "spec", None)
    return getattr(spec, "id", None) or ""


def _seed_value(seed: Any) -> int:
    """The reset's seed, or -1 for an unseeded reset (one type in every episode)."""
    return -1 if seed is None else int(seed)


# --------------------------------------------------------------- gymnasium
class RecordEpisodes(_Recorder, gymnasium.Wrapper):
    """Record a Gymnasium environment's episodes into an RLDS dataset.

    Args:
        env: the environment.
        writer_or_path: a :class:`DatasetWriter`, or a dataset path (the
            writer is then created here and closed by :meth:`close`).
        step_fn: ``step_fn(obs, action, reward, terminated, truncated, info)
            -> dict`` with the values of one ``env.step``; its entries become
            top-level fields of the RLDS step holding that action (zeros on
            the final step).
        episode_fn: ``episode_fn(episode, env) -> dict`` of episode metadata,
            called with the finished :class:`Episode` before it is written.
        record_infos: also store ``info`` dicts as the step field ``info``,
            aligned with observations (like Minari): step t holds the info
            returned with ``o_t`` (by ``reset`` for t = 0). The info keys
            and dtypes must be the same at every step, reset included.
        sample_rate: fraction of episodes recorded (see the module doc).
        seed: seeds the episode sampling (not the environment).
        metadata: constant episode metadata (``agent_id``...).

    ``episode_ids`` lists the ids written so far. ``step()`` after the episode
    ended raises until ``reset()`` is called.
    """

    def __init__(self, env: gymnasium.Env, writer_or_path: WriterOrPath, step_fn: StepFn | None = None,
                 episode_fn: EpisodeFn | None = None, record_infos: bool = False, sample_rate: float = 1.0,
                 seed: int | None = None, *, metadata: Mapping[str, Any] | None = None):
        super().__init__(env)
        self._sink = _Sink(writer_or_path, episode_fn, record_infos, sample_rate, seed, metadata)
        self._step_fn = step_fn
        self._track = _Track()
        self._ended = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        self._sink.end(self._track, terminal=False, env=self.env)  # mid-episode reset: truncated
        obs, info = self.env.reset(seed=seed, options=options)
        self._sink.begin(self._track, obs, info, {"env_id": _env_id(self.env), "seed": _seed_value(seed)})
        self._ended = False
        return obs, info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict]:
        if self._ended:
            raise RuntimeError("RecordEpisodes: step() after the episode ended; call reset() first")
        if not self._track.active:
            raise RuntimeError("RecordEpisodes: call reset() before step()")
        obs, reward, terminated, truncated, info = self.env.step(action)
        extra = _step_extra(self._step_fn, self._track, obs, action, reward, terminated, truncated, info)
        discount = np.float32(0.0 if terminated else 1.0)
        self._sink.transition(self._track, action, reward, discount, extra, obs, info)
        if terminated or truncated:
            self._ended = True
            self._sink.end(self._track, terminal=bool(terminated), env=self.env)
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        """Write the episode in progress (as truncated), close an owned writer, close the env."""
        self._close([self._track], self.env, super().close)


# ----------------------------------------------------------- vector envs
def sub_info(info: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Sub-environment ``i``'s entries of a vector ``info`` dict (``_key`` masks honoured)."""
    out = {}
    for key, value in info.items():
        if key.startswith("_"):
            continue
        mask = info.get("_" + key)
        if mask is not None and not mask[i]:
            continue
        out[key] = sub_info(value, i) if isinstance(value, Mapping) else value[i]
    return out


class RecordVectorEpisodes(_Recorder, gymnasium.vector.VectorWrapper):
    """Record each sub-environment's episodes of a vector env into one dataset.

    Same arguments as :class:`RecordEpisodes`; ``step_fn`` gets one
    sub-environment's values and ``info`` is that sub-environment's info.
    Episodes also get ``env_index`` metadata, and ``seed`` is the seed its
    sub-environment was reset with (``seed + i`` for an int ``seed``; -1
    for autoresets). Autoreset modes (``env.metadata['autoreset_mode']``):

    - ``NextStep`` (default): the step after a sub-env's episode ended is its
      reset: its observation starts a new episode, its action (ignored by the
      env), reward and flags are not recorded.
    - ``SameStep``: a done sub-env's final observation and info are taken
      from ``info['final_obs']`` / ``info['final_info']``; the returned
      observation starts the next episode.
    - ``Disabled``: a done sub-env records nothing until it is reset
      (``reset(options={'reset_mask': ...})`` resets only the masked ones).
    """

    def __init__(self, env: gymnasium.vector.VectorEnv, writer_or_path: WriterOrPath, step_fn: StepFn | None = None,
                 episode_fn: EpisodeFn | None = None, record_infos: bool = False, sample_rate: float = 1.0,
                 seed: int | None = None, *, metadata: Mapping[str, Any] | None = None):
        super().__init__(env)
        self._sink = _Sink(writer_or_path, episode_fn, record_infos, sample_rate, seed, metadata)
        self._step_fn = step_fn
        self._tracks = [_Track() for _ in range(self.num_envs)]
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        mode = env.metadata.get("autoreset_mode", gymnasium.vector.AutoresetMode.NEXT_STEP)
        self.autoreset_mode = gymnasium.vector.AutoresetMode(mode)

    def _begin(self, i: int, obs: Any, info: Mapping[str, Any], seed: Any) -> None:
        meta = {"env_id": _env_id(self.env), "seed": _seed_value(seed), "env_index": i}
        self._sink.begin(self._tracks[i], obs, info, meta)

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        n = self.num_envs
        mask = np.asarray((options or {}).get("reset_mask", np.ones(n, dtype=bool)))
        seeds = [None] * n if seed is None else [seed + i for i in range(n)] if isinstance(seed, int) else list(seed)
        for i in np.flatnonzero(mask):
            self._sink.end(self._tracks[i], terminal=False, env=self.env)
        obs, info = self.env.reset(seed=seed, options=options)
        sub_obs = list(gymnasium.vector.utils.iterate(self.observation_space, obs))
        for i in np.flatnonzero(mask):
            self._autoreset[i] = False
            self._begin(int(i), sub_obs[i], sub_info(info, i), seeds[i])
        return obs, info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict]:
        obs, rewards, terms, truncs, info = self.env.step(actions)
        sub_obs = list(gymnasium.vector.utils.iterate(self.observation_space, obs))
        sub_act = list(gymnasium.vector.utils.iterate(self.action_space, actions))
        same_step = self.autoreset_mode == gymnasium.vector.AutoresetMode.SAME_STEP
        for i, track in enumerate(self._tracks):
            info_i = sub_info(info, i)
            if self._autoreset[i]:  # NextStep: this step reset sub-env i
                self._autoreset[i] = False
                self._begin(i, sub_obs[i], info_i, None)
                continue
            if not track.active:
                continue
            done = bool(terms[i] or truncs[i])
            next_obs, next_info = sub_obs[i], info_i
            if same_step and done:
                next_obs = info["final_obs"][i]
                next_info = sub_info(info["final_info"], i)
                info_i = {k: v for k, v in info_i.items() if k not in ("final_obs", "final_info")}
            extra = _step_extra(self._step_fn, track, next_obs, sub_act[i], rewards[i], terms[i], truncs[i], next_info)
            discount = np.float32(0.0 if terms[i] else 1.0)
            self._sink.transition(track, sub_act[i], rewards[i], discount, extra, next_obs, next_info)
            if done:
                self._sink.end(track, terminal=bool(terms[i]), env=self.env)
                if same_step:
                    self._begin(i, sub_obs[i], info_i, None)
                elif self.autoreset_mode == gymnasium.vector.AutoresetMode.NEXT_STEP:
                    self._autoreset[i] = True
        return obs, rewards, terms, truncs, info

    def close(self, **kwargs: Any) -> None:
        """Write the episodes in progress (as truncated), close an owned writer, close the env."""
        self._close(self._tracks, self.env, lambda: self.env.close(**kwargs))


# ------------------------------------------------------------------ dm_env
class RecordingEnvironment(_Recorder):
    """Record a ``dm_env.Environment``'s episodes into an RLDS dataset.

    A dm_env TimeStep carries the reward and discount produced by the
    *previous* action; they are realigned: RLDS step i = ``(o_i, a_i,
    r_{i+1}, d_{i+1})`` and the final step holds the LAST observation with
    zeros. ``is_terminal`` = the LAST TimeStep's discount is 0 (dm_env
    truncation keeps a discount > 0). A FIRST TimeStep, from ``reset()`` or
    from ``step()`` after LAST, starts a new episode (ending one in progress
    as truncated).

    Args: as :class:`RecordEpisodes`, except ``step_fn(timestep, action) ->
    dict`` gets the TimeStep that ``action`` produced; episodes carry no
    automatic metadata. Unknown attributes are looked up on the wrapped env.
    The wrapper registers as a virtual subclass of ``dm_env.Environment``.
    """

    def __init__(self, env: Any, writer_or_path: WriterOrPath, step_fn: Callable[[Any, Any], Mapping] | None = None,
                 episode_fn: EpisodeFn | None = None, sample_rate: float = 1.0, seed: int | None = None, *,
                 metadata: Mapping[str, Any] | None = None):
        import dm_env  # lazily: dm_env is an optional dependency

        dm_env.Environment.register(RecordingEnvironment)
        self._env = env
        self._sink = _Sink(writer_or_path, episode_fn, False, sample_rate, seed, metadata)
        self._step_fn = step_fn
        self._track = _Track()

    def _observe(self, timestep: Any, action: Any) -> Any:
        track = self._track
        if timestep.first():
            self._sink.end(track, terminal=False, env=self._env)
            self._sink.begin(track, timestep.observation, {}, {})
            return timestep
        if not track.active:  # a MID/LAST step of an episode that began before recording
            return timestep
        extra = _step_extra(self._step_fn, track, timestep, action)
        self._sink.transition(track, action, timestep.reward, timestep.discount, extra, timestep.observation, {})
        if timestep.last():
            leaves: list[Any] = []
            _map_leaves(leaves.append, timestep.discount)
            self._sink.end(track, terminal=not any(np.any(x) for x in leaves), env=self._env)
        return timestep

    def reset(self) -> Any:
        self._sink.end(self._track, terminal=False, env=self._env)
        return self._observe(self._env.reset(), None)

    def step(self, action: Any) -> Any:
        return self._observe(self._env.step(action), action)

    def observation_spec(self) -> Any:
        return self._env.observation_spec()

    def action_spec(self) -> Any:
        return self._env.action_spec()

    def reward_spec(self) -> Any:
        return self._env.reward_spec()

    def discount_spec(self) -> Any:
        return self._env.discount_spec()

    def close(self) -> None:
        """Write the episode in progress (as truncated), close an owned writer, close the env."""
        self._close([self._track], self._env, self._env.close)

    def __enter__(self) -> "RecordingEnvironment":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._env, name)
