"""``PixelCue``: a tiny pixel game behind the real Atari preprocessing (``seedrl/PixelCue-v0``).

It plays the part of ALE inside :class:`~seedrl.envs.atari.AtariEnv`, so its
raw 210x160 screens go through exactly the Atari path (frame skip with the
max of the last two frames, area resize to 84x84, frame stack, action set)
and, from a config (``env: {kind: gym, id: seedrl/PixelCue-v0}``), through
the whole runtime and loss. A Nature CNN learns it in about a minute on a
CPU, so a test can check that pixels, actions and rewards reach the loss in
step (Pong takes hours to show it).

**The game.** Play goes in rounds of ``ROUND_FRAMES`` (4) emulator frames.
A bright square (``CUE_SIZE`` = 56 raw pixels, about 29x22 after the
resize) sits in the middle of the left or the right half of a grey screen.
(It is big on purpose: with a Pong-ball-sized square, or one anywhere in its
half, the Pong config needs far more updates than a test can afford before
its near-uniform policy starts to follow the square.) On the last frame of a
round the action held pays ``+1`` for RIGHT / RIGHTFIRE and ``-1`` for LEFT / LEFTFIRE when the square is
on the right, the opposite when it is on the left, and 0 for NOOP / FIRE. The
action set is Pong's minimal one (ALE ids ``[0, 1, 3, 4, 11, 12]``). The
next round's square is drawn from the third frame of a round on, so with
``frame_skip=4`` and no no-op starts the observation after a step (the max of
its last two frames) shows exactly the square that decides the next step's
reward. A game lasts ``rounds`` rounds (40).

Every step is a fresh coin flip, so only acting on the newest frame pays:
a random policy, or one whose actions land a step late or in another game,
averages a return of 0; reading the square scores ``rounds``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from seedrl.envs.atari import RAW_HEIGHT, RAW_WIDTH, AtariEnv

PIXEL_CUE_ID = "seedrl/PixelCue-v0"
ROUND_FRAMES = 4
CUE_SIZE = 56
BACKGROUND, CUE_LEVEL = 90, 236
#: ALE ids of Pong's minimal action set and their meanings.
ACTION_SET = (0, 1, 3, 4, 11, 12)
ACTION_MEANINGS = ("NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE")
_RIGHT, _LEFT = {3, 11}, {4, 12}


class PixelCueGame:
    """The emulator side: ALE's interface as :class:`~seedrl.envs.atari.AtariEnv` uses it (one frame per ``act``)."""

    def __init__(self, rounds: int = 40) -> None:
        if rounds < 1:
            raise ValueError(f"PixelCueGame: rounds must be >= 1, got {rounds}")
        self.rounds = rounds
        self.ale = self  # AtariEnv talks to `emulator.ale`
        self._action_set = list(ACTION_SET)
        self._rng = np.random.default_rng()
        self._screen = np.full((RAW_HEIGHT, RAW_WIDTH), BACKGROUND, np.uint8)
        self.reset_game()

    # ------------------------------------------------ the ale_py.env.AtariEnv side
    def reset(self, *, seed: int | None = None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.reset_game()

    def get_action_meanings(self) -> list[str]:
        return list(ACTION_MEANINGS)

    def close(self) -> None:
        pass

    # ------------------------------------------------ the ALE side
    def reset_game(self) -> None:
        self._round, self._frame = 0, 0
        self._side = self._next = self._draw()

    def act(self, action: int) -> float:
        """One emulator frame with ALE action id ``action``; the round's reward on its last frame."""
        if self.game_over():
            return 0.0
        reward = 0.0
        if self._frame == ROUND_FRAMES - 2:
            self._next = self._draw()  # shown from now on: the max-pooled observation sees only it
        if self._frame == ROUND_FRAMES - 1:
            right = self._side == 1
            if action in _RIGHT:
                reward = 1.0 if right else -1.0
            elif action in _LEFT:
                reward = -1.0 if right else 1.0
            self._side, self._frame = self._next, 0
            self._round += 1
        else:
            self._frame += 1
        return reward

    def game_over(self, with_truncation: bool = True) -> bool:
        return self._round >= self.rounds

    def lives(self) -> int:
        return 0

    def getScreenGrayscale(self, out: np.ndarray) -> np.ndarray:  # noqa: N802 (ALE's name)
        out[:] = self._screen
        return out

    def getScreenRGB(self, out: np.ndarray) -> np.ndarray:  # noqa: N802 (ALE's name)
        out[:] = self._screen[..., None]
        return out

    # ------------------------------------------------ internals
    def _draw(self) -> int:
        """A new square on a random side (0 left, 1 right), returned; centred in its half of the screen."""
        side = int(self._rng.integers(2))
        half = RAW_WIDTH // 2
        x = (half - CUE_SIZE) // 2 + side * half
        y = (RAW_HEIGHT - CUE_SIZE) // 2
        self._screen.fill(BACKGROUND)
        self._screen[y : y + CUE_SIZE, x : x + CUE_SIZE] = CUE_LEVEL
        return side


def make_pixel_cue(rounds: int = 40, frame_stack: int = 4, resize: int = 84, grayscale: bool = True) -> AtariEnv:
    """The game behind the Atari preprocessing (frame skip 4, no no-op starts, which would shift the rounds)."""
    return AtariEnv(
        "pixel_cue",
        frame_skip=ROUND_FRAMES,
        frame_stack=frame_stack,
        noop_max=0,
        max_episode_frames=None,
        resize=resize,
        grayscale=grayscale,
        emulator=PixelCueGame(rounds),
    )


if PIXEL_CUE_ID not in gym.registry:
    gym.register(PIXEL_CUE_ID, entry_point=make_pixel_cue)
