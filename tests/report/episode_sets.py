"""Tiny RLDS datasets with known values for the episode browser's tests.

* :func:`game_dataset`: episodes with an image observation ``pixels`` (uint8 8x12x3), a vector ``state``
  (float32[2]), an int action and a reward. Episode ``e`` has ``4 + e`` steps; at step t
  ``pixels[..., 0] = (20 t + e) mod 256``, ``pixels[..., 1] = 7 e mod 256``, ``state = (t, -e)``, ``action = (t + e) % 3``,
  ``reward = 0.5 t - e`` (so its return is 0.5 Σt - e n).
* :func:`language_dataset`: single-step completion episodes (:mod:`seedrl.envs.text.steps`) with
  behaviour log-probs; episode ``e`` has prompt ``PROMPTS[e]``, completion ``COMPLETIONS[e]``
  (one token per character), reward ``REWARDS[e]`` and log-prob ``-0.25 j`` for token j.
"""

from __future__ import annotations

import numpy as np

from seedrl.data import DatasetWriter

PROMPTS = ["Is the sky blue?", "Name a prime.", "Say hello."]
COMPLETIONS = ["Yes, it is.", "Seven", "hi there"]
REWARDS = [1.0, 0.25, -0.5]


def game_frame(e: int, t: int) -> np.ndarray:
    f = np.zeros((8, 12, 3), np.uint8)
    f[..., 0] = (20 * t + e) % 256
    f[..., 1] = (7 * e) % 256
    f[2:4, 3:9, 2] = 255  # a bar, so the frame is not flat
    return f


def game_episode(e: int) -> list[dict]:
    n = 4 + e
    return [{"observation": {"pixels": game_frame(e, t), "state": np.array([t, -e], np.float32)},
             "action": np.int64((t + e) % 3), "reward": np.float32(0.5 * t - e), "discount": np.float32(1.0),
             "is_first": t == 0, "is_last": t == n - 1, "is_terminal": t == n - 1} for t in range(n)]


def game_return(e: int) -> float:
    n = 4 + e
    return 0.5 * n * (n - 1) / 2 - e * n


def game_dataset(path, episodes: int = 3, start: int = 0):
    with DatasetWriter(path) as w:
        for e in range(start, start + episodes):
            w.write_episode(game_episode(e), metadata={"episode_id": f"g{e}", "agent_id": f"actor-{e % 2}"})
    return path


def language_dataset(path):
    from seedrl.envs.text.steps import completion_spec, completion_step

    with DatasetWriter(path) as w:
        for e, (p, c, r) in enumerate(zip(PROMPTS, COMPLETIONS, REWARDS)):
            step = completion_step(p, np.arange(len(p)) + 3, c, np.arange(len(c)) + 100, r,
                                   {"behaviour_logprobs": -0.25 * np.arange(len(c), dtype=np.float32)})
            if w.spec is None:
                w.spec = completion_spec(step)
            w.write_episode([step], metadata={"episode_id": f"lm{e}", "prompt_index": e})
    return path
