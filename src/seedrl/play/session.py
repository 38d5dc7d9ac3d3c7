"""A person's play session: key presses become actions, every step becomes RLDS, no HTTP here.

One :class:`PlaySession` owns one environment and one :class:`DatasetWriter`
(``durable``: each finished episode is fsync'ed into the dataset at once).
The environment is wrapped in :class:`~seedrl.data.recording.RecordEpisodes`,
so the episodes are the store's standard RLDS episodes: an episode of N
actions has N + 1 steps ``(o_t, a_t, r_t, d_t, is_first, is_last,
is_terminal)``, the last one holding the final observation.

The session is a small state machine driven by the page:

- ``ready``: an episode was reset and nothing was played yet; the first
  :meth:`step` starts it (``started_at``). Nothing is written for an episode
  without an action.
- ``playing``: each :meth:`step` plays the action of the held keys
  (:class:`~seedrl.play.keys.KeyMap`; no key: the default action). At a fixed
  frame rate the page calls it once per frame; turn by turn, once per key press.
- the environment's own end (``terminated``: a terminal episode; a time
  limit: truncated) or :meth:`end` (Escape, the tab closed, the server
  stopping: truncated, ``is_last`` without ``is_terminal``) writes the episode
  and resets to ``ready``.

Episode metadata: ``env_id`` (the config's ``env.id``), ``seed`` (the reset's; episode k of a session is
seeded ``seed + k``), ``player_id``, ``mode`` (``fps`` / ``turns``), ``fps``
(0.0 turn by turn), ``key_map`` (JSON text), ``started_at`` / ``ended_at``
(Unix seconds of the first action and of the end), ``ended_by`` (``terminal``,
``time_limit``, ``escape``, ``closed``, ``server_stop``). The dataset's
``config`` (``dataset.json``) holds the env config, the key map and the mode
of the session that created it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from seedrl.data import metadata as meta
from seedrl.data.errors import SpecError
from seedrl.data.recording import RecordEpisodes
from seedrl.data.spec import StepSpec
from seedrl.data.writer import DatasetWriter
from seedrl.play.envs import PlayEnv
from seedrl.play.keys import KeyMap, plain_action

END_REASONS = ("escape", "closed", "server_stop")


class PlaySession:
    """Plays ``play_env`` from held keys and records it into ``dataset`` (see the module doc).

    Args:
        play_env: the environment and its frame source (:func:`seedrl.play.envs.make_play_env`).
        dataset: the RLDS dataset folder (created, or appended to if its spec and metadata match).
        key_map: the keys -> actions map.
        player: the player id recorded with each episode.
        fps: frames per second; 0 plays turn by turn.
        seed: episode k of the session is reset with ``seed + k`` (default: the env config's ``seed``).
        clock: Unix time in seconds (tests pass a fake one).

    Thread-safe: the HTTP server calls it from several threads.
    """

    def __init__(self, play_env: PlayEnv, dataset: str | Path, key_map: KeyMap, *, player: str = "anonymous",
                 fps: float = 0.0, seed: int | None = None, clock: Callable[[], float] = time.time):
        if fps < 0:
            raise ValueError(f"fps must be >= 0 (0: turn by turn), got {fps}")
        self.play_env, self.key_map, self.player, self.fps, self.clock = play_env, key_map, player, float(fps), clock
        self.mode = "fps" if fps > 0 else "turns"
        self._lock = threading.Lock()
        self._seed, self._episodes_begun = int(play_env.config.seed if seed is None else seed), 0
        env = gym.wrappers.TransformReward(play_env.env, float)  # one reward dtype (float64) whatever the env returns
        self._constant = {"player_id": str(player), "mode": self.mode, "fps": self.fps,
                          "key_map": json.dumps(key_map.to_json(), sort_keys=True)}
        obs, _ = env.reset(seed=self._seed)
        spec = StepSpec.infer(self._example_step(obs))
        config = {"env": asdict(play_env.config), "key_map": key_map.to_json(), "mode": self.mode, "fps": self.fps,
                  "recorded_by": "seedrl play"}
        self.saved: list[dict] = []  # {"id", "steps", "return", "ended_by"} of each episode written, in order
        self._ending: str | None = None
        self._closed = False
        self.writer = DatasetWriter(dataset, spec, durable=True, config=config)
        try:
            self._check_metadata()
            self.recorder = RecordEpisodes(env, self.writer, episode_fn=self._episode_metadata, metadata=self._constant)
            self._begin()
        except BaseException:
            self.writer.close()
            raise

    # ------------------------------------------------------------ the spec
    def _example_step(self, obs: Any) -> dict:
        """A step as RecordEpisodes will record it (its dtypes fix the spec before anything is written)."""
        action = self.key_map.default
        return {"observation": obs, "action": action, "reward": 0.0, "discount": np.float32(1.0),
                "is_first": True, "is_last": False, "is_terminal": False}

    def _check_metadata(self) -> None:
        """Refuse a dataset whose episode metadata differs from what this session writes (before playing)."""
        example = {"env_id": "", "seed": 0, **self._constant, "started_at": 0.0, "ended_at": 0.0, "ended_by": ""}
        try:
            meta.check_metadata(example, self.writer.metadata_spec)
        except SpecError as err:
            raise SpecError(f"--record {self.writer.root}: this dataset's episodes were not recorded by "
                            f"`seedrl play` ({err})") from None

    # --------------------------------------------------------- the episode
    def _begin(self) -> None:
        self.obs, _ = self.recorder.reset(seed=self._seed + self._episodes_begun)
        self._episodes_begun += 1
        self.status, self.t, self.ret, self.started_at = "ready", 0, 0.0, None

    def _episode_metadata(self, episode: Any, env: Any) -> dict:
        """RecordEpisodes' ``episode_fn``: times and why it ended (the env's own end: from its last step's flag)."""
        ended_by = self._ending or ("terminal" if bool(episode.columns["is_terminal"][-1]) else "time_limit")
        ret = float(np.sum(episode.columns["reward"]))
        self.saved.append({"id": None, "steps": len(episode), "return": ret, "ended_by": ended_by})
        return {"env_id": self.play_env.config.id,  # Atari's AtariEnv has no registry spec to name it
                "started_at": float(self.started_at), "ended_at": float(self.clock()), "ended_by": ended_by}

    def _written(self) -> None:
        """Note the id of the episode just written (``_episode_metadata`` runs before the writer assigns it)."""
        if self.saved and self.saved[-1]["id"] is None:
            self.saved[-1]["id"] = self.recorder.episode_ids[-1]

    def step(self, held: list[str] | tuple[str, ...] = ()) -> dict:
        """Play the action of the ``held`` keys once; returns :meth:`view`'s fields of the result."""
        with self._lock:
            self._check_open()
            action = self.key_map.action(held)
            if self.status == "ready":
                self.status, self.started_at = "playing", self.clock()
            self._ending = None
            obs, reward, terminated, truncated, _ = self.recorder.step(action)  # writes the episode if it ended
            self.obs, self.t, self.ret = obs, self.t + 1, self.ret + float(reward)
            if terminated or truncated:
                self._written()
                self._begin()
            return self._view(action=plain_action(action))

    def end(self, reason: str = "escape") -> dict:
        """End the episode in progress as truncated (``reason`` recorded as ``ended_by``) and reset."""
        if reason not in END_REASONS:
            raise ValueError(f"reason: {reason!r} is not one of {END_REASONS}")
        with self._lock:
            self._check_open()
            if self.status == "playing":
                self._ending = reason
                self._begin()  # RecordEpisodes.reset() writes the episode in progress as truncated
                self._written()
            return self._view()

    def close(self) -> None:
        """Write the episode in progress (truncated, ``server_stop``), close the writer and the env. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._ending = "server_stop"
            try:
                self.recorder.close()
            finally:
                self.writer.close()

    # -------------------------------------------------------------- views
    def view(self) -> dict:
        with self._lock:
            return self._view()

    def _view(self, action: Any = None) -> dict:
        return {"status": self.status, "t": self.t, "return": self.ret, "action": action,
                "episodes": len(self.saved), "last": self.saved[-1] if self.saved else None}

    def frame(self) -> np.ndarray:
        """The current frame (H, W, 3 or 4) uint8."""
        with self._lock:
            return self.play_env.frame()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the play session is closed")

