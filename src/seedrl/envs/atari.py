"""Atari 2600 games with the standard DQN / IMPALA preprocessing, on ale-py.

:class:`AtariEnv` drives the Arcade Learning Environment directly (ALE v5
settings, ``frameskip=1`` at the ALE level) and does its own preprocessing,
the same as EnvPool's Atari environments so that both backends give the same
observations:

* **frame skip** ``frame_skip`` (4): the action is repeated for 4 emulator
  frames and the rewards summed; the observed frame is the pixel-wise max of
  the last two (removes sprite flicker). If the game ends inside the skip, the
  frame at which it ended is used.
* **greyscale and resize** to ``resize x resize`` (84x84) by exact area
  averaging (the weights of OpenCV's ``INTER_AREA``) in NumPy: no OpenCV or
  PIL needed, ~70 us a frame; it matches EnvPool's frames to within 1 grey level.
* **frame stack** ``frame_stack`` (4): observations are channel-first
  ``[4, 84, 84] uint8`` (``[3 * frame_stack, H, W]`` in colour), the newest
  frame in the last channel; a reset fills every slot with the first frame.
* **no-op starts**: a reset plays a uniform 1..``noop_max`` (30) no-op frames.
* **sticky actions** (``repeat_action_probability=0.25``, the ALE v5 default,
  Machado et al. 2018), applied by ALE on every emulator frame.
* **minimal action set** unless ``full_action_space``.
* **time limit** ``max_episode_frames`` (108 000) counted as agent steps x
  ``frame_skip`` (no-op start frames not counted, as in EnvPool); reaching it
  sets ``truncated``.
* **episodic life** (off by default): losing a life sets ``terminated`` with
  ``info['real_done'] = False``; ``reset(options={'continue_game': True})``
  then continues the same game from the same screen (no emulation, no no-ops),
  so the emulator trajectory is identical with and without the option.
  :class:`~seedrl.envs.gymnasium_batch.GymnasiumBatch` does this and reports
  returns of whole games.

Rewards are the raw game score; clipping belongs to the loss.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import gymnasium as gym
import numpy as np

from seedrl.envs.base import CONTINUE_GAME_OPTION, REAL_DONE_KEY

RAW_HEIGHT, RAW_WIDTH = 210, 160


@functools.cache
def _rom_ids() -> dict[str, str]:
    from ale_py import roms

    return {rom.replace("_", ""): rom for rom in roms.get_all_rom_ids()}


def _normalise(env_id: str) -> str:
    name = env_id.split("/")[-1]
    name = re.sub(r"-v\d+$", "", name)
    name = re.sub(r"(NoFrameskip|Deterministic)$", "", name)
    return name.replace("_", "").replace("-", "").lower()


def atari_game(env_id: str) -> str:
    """The ale-py ROM id (``"space_invaders"``) of ``"SpaceInvaders"``, ``"ALE/SpaceInvaders-v5"``, ...

    Raises ValueError for an unknown game.
    """
    key = _normalise(env_id)
    roms = _rom_ids()
    if key not in roms:
        raise ValueError(f"unknown Atari game {env_id!r}")
    return roms[key]


def envpool_task_id(env_id: str) -> str:
    """EnvPool's task id (``"SpaceInvaders-v5"``) of any spelling :func:`atari_game` accepts."""
    return "".join(part.capitalize() for part in atari_game(env_id).split("_")) + "-v5"


@functools.cache
def _area_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-resampling taps: ``out[o] = sum_k weight[k, o] * in[index[k, o]]``."""
    scale = n_in / n_out
    taps = int(np.ceil(scale)) + 1
    index = np.zeros((taps, n_out), np.intp)
    weight = np.zeros((taps, n_out), np.float32)
    for o in range(n_out):
        lo, hi = o * scale, (o + 1) * scale
        for k, i in enumerate(range(int(np.floor(lo)), min(n_in, int(np.ceil(hi - 1e-9))))):
            index[k, o] = i
            weight[k, o] = (min(hi, i + 1) - max(lo, i)) / scale
    return index, weight


def resize_area(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a ``[H, W]`` or ``[H, W, C]`` uint8 image by area averaging (downscaling only)."""
    in_h, in_w = frame.shape[:2]
    if height > in_h or width > in_w:
        raise ValueError(f"resize_area only downscales: {frame.shape[:2]} -> {(height, width)}")
    row_index, row_weight = _area_taps(in_h, height)
    col_index, col_weight = _area_taps(in_w, width)
    x = frame.astype(np.float32)
    extra = (None,) * (x.ndim - 1)  # broadcast row weights over width (and channels)
    rows = row_weight[0][(slice(None), *extra)] * x[row_index[0]]
    for k in range(1, len(row_index)):
        rows += row_weight[k][(slice(None), *extra)] * x[row_index[k]]
    extra = (None,) * (x.ndim - 2)
    out = col_weight[0][(slice(None), *extra)] * rows[:, col_index[0]]
    for k in range(1, len(col_index)):
        out += col_weight[k][(slice(None), *extra)] * rows[:, col_index[k]]
    out += 0.5
    return out.astype(np.uint8)


class AtariEnv(gym.Env):
    """One preprocessed Atari game (see the module docstring for every step).

    ``reset(seed=s)`` seeds both ALE (sticky actions) and the no-op draw from
    ``s``. ``info`` carries ``lives``, ``real_done`` (on an episode's last step:
    whether the whole game ended) and, after a reset, ``noops``.

    ``emulator`` replaces the ALE game (``game`` is then only a name): an
    object shaped like ``ale_py.env.AtariEnv(frameskip=1)`` as far as this
    class uses it: ``ale`` (``act``, ``game_over``, ``lives``, ``reset_game``,
    ``getScreenGrayscale`` / ``getScreenRGB`` into a ``[210, 160(, 3)]``
    buffer), ``_action_set``, ``reset(seed=)``, ``get_action_meanings()`` and
    ``close()``. Toy games use it to run through exactly this preprocessing
    (:mod:`seedrl.envs.pixel_cue`); sticky actions are then the emulator's own.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        game: str,
        *,
        frame_skip: int = 4,
        frame_stack: int = 4,
        noop_max: int = 30,
        sticky_action_prob: float = 0.25,
        full_action_space: bool = False,
        episodic_life: bool = False,
        max_episode_frames: int | None = 108_000,
        resize: int = 84,
        grayscale: bool = True,
        emulator: Any = None,
    ) -> None:
        if frame_skip < 1 or frame_stack < 1 or noop_max < 0:
            raise ValueError("frame_skip and frame_stack must be >= 1 and noop_max >= 0")
        self.frame_skip, self.noop_max, self.episodic_life = frame_skip, noop_max, episodic_life
        self.max_steps = (max_episode_frames // frame_skip) if max_episode_frames else None
        self.resize = resize
        if emulator is None:
            from ale_py.env import AtariEnv as AleEnv

            self.game = atari_game(game)
            emulator = AleEnv(
                game=self.game,
                frameskip=1,
                repeat_action_probability=sticky_action_prob,
                full_action_space=full_action_space,
                obs_type="grayscale" if grayscale else "rgb",
            )
        else:
            self.game = game
        self.ale_env = emulator
        self.ale = self.ale_env.ale
        self._action_set = list(self.ale_env._action_set)
        self._noop = self._action_set[0]  # NOOP is first in both the minimal and full sets
        channels = 1 if grayscale else 3
        self._grab = self.ale.getScreenGrayscale if grayscale else self.ale.getScreenRGB
        raw_shape = (RAW_HEIGHT, RAW_WIDTH) if grayscale else (RAW_HEIGHT, RAW_WIDTH, 3)
        self._frames = [np.zeros(raw_shape, np.uint8), np.zeros(raw_shape, np.uint8)]
        self._channels = channels
        self._stack = np.zeros((frame_stack * channels, resize, resize), np.uint8)
        self.observation_space = gym.spaces.Box(0, 255, self._stack.shape, np.uint8)
        self.action_space = gym.spaces.Discrete(len(self._action_set))
        self._steps = 0
        self._lives = 0
        self._life_lost = False
        self.last_noops = 0

    def get_action_meanings(self) -> list[str]:
        return self.ale_env.get_action_meanings()

    def _processed(self, frame: np.ndarray) -> np.ndarray:
        small = resize_area(frame, self.resize, self.resize)
        return small[None] if small.ndim == 2 else small.transpose(2, 0, 1)

    def _push(self, frame: np.ndarray, fill: bool) -> None:
        small = self._processed(frame)
        if fill:
            self._stack[:] = np.tile(small, (len(self._stack) // self._channels, 1, 1))
        else:
            c = self._channels
            self._stack[:-c] = self._stack[c:]
            self._stack[-c:] = small

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        continue_game = bool(options and options.get(CONTINUE_GAME_OPTION))
        if continue_game and self._life_lost and seed is None:
            self._life_lost = False
            return self._stack.copy(), {"lives": self._lives, "noops": 0}
        super().reset(seed=seed)
        self.ale_env.reset(seed=seed)
        ale = self.ale
        noops = int(self.np_random.integers(1, self.noop_max + 1)) if self.noop_max > 0 else 0
        for _ in range(noops):
            ale.act(self._noop)
            if ale.game_over(with_truncation=False):
                ale.reset_game()
        self._grab(self._frames[0])
        self._push(self._frames[0], fill=True)
        self._steps, self._lives, self._life_lost = 0, ale.lives(), False
        self.last_noops = noops
        return self._stack.copy(), {"lives": self._lives, "noops": noops}

    def step(self, action: int):
        ale, frames, skip = self.ale, self._frames, self.frame_skip
        ale_action = self._action_set[int(action)]
        reward, grabbed, game_over = 0.0, 0, False
        for k in range(skip):
            reward += ale.act(ale_action)
            game_over = ale.game_over(with_truncation=False)
            if k >= skip - 2 or game_over:
                self._grab(frames[grabbed])
                grabbed += 1
            if game_over:
                break
        if grabbed == 2:
            frame = np.maximum(frames[0], frames[1], out=frames[0])
        else:
            frame = frames[grabbed - 1]
        self._push(frame, fill=False)
        self._steps += 1
        lives = ale.lives()
        life_lost = lives < self._lives
        self._lives = lives
        time_up = self.max_steps is not None and self._steps >= self.max_steps
        terminated = game_over or (self.episodic_life and life_lost)
        truncated = time_up and not terminated
        real_done = game_over or time_up
        self._life_lost = terminated and not real_done
        info = {"lives": lives, REAL_DONE_KEY: real_done}
        return self._stack.copy(), reward, terminated, truncated, info

    def close(self) -> None:
        self.ale_env.close()
