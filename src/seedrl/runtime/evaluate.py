"""Evaluating a checkpoint in-process (no actors): returns and an optional GIF."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from seedrl.config import load_config
from seedrl.envs import make_env_batch
from seedrl.runtime.checkpoint import load_checkpoint


def evaluate(
    checkpoint: str | Path, *, episodes: int = 10, greedy: bool = False, seed: int = 12345, video: str | None = None
) -> dict[str, Any]:
    """Play ``episodes`` full episodes with the checkpoint's policy; returns raw episode returns.

    The algorithm's evaluation head acts: IMPALA samples its policy (``greedy``: argmax);
    R2D2 is ε-greedy with ``agent.eval_epsilon`` (``greedy``: ε = 0); BC acts like IMPALA on discrete
    actions and samples its Gaussian on continuous ones (``greedy``: the mean)."""
    from seedrl.runtime.algorithms import game_algo

    state = load_checkpoint(checkpoint)
    algo = game_algo(state["config"].get("algo", "impala"))
    cfg = load_config(algo.config_class(), state["config"])
    spaces = state["spaces"]
    model = algo.build_model(cfg, spaces["observation"], spaces["action"])
    model.load_state_dict(state["model"])
    model.eval()
    frames: list[np.ndarray] | None = [] if video else None
    returns = play(model, cfg, algo.eval_head(cfg, greedy, spaces["action"]), episodes=episodes, seed=seed,
                   frames=frames)
    if video and frames:
        write_gif(frames, video)
    return {"returns": returns, "config": cfg}


def play(model: torch.nn.Module, cfg: Any, head: Any, *, episodes: int, seed: int,
         frames: list[np.ndarray] | None = None) -> list[float]:
    """Raw returns of ``episodes`` episodes of ``model`` acting through ``head`` in one of ``cfg.env``'s
    environments; ``frames`` (a list) receives the first episode's observations. Continuous actions
    are clipped to the action space's bounds."""
    from gymnasium import spaces

    rows = np.zeros(1, np.int64)
    envs = make_env_batch(cfg.env, 1, seed)
    box = envs.action_space if isinstance(envs.action_space, spaces.Box) else None
    gen = torch.Generator().manual_seed(seed)
    returns: list[float] = []
    try:
        obs = envs.reset(seed=seed)
        rstate = model.initial_state(1)
        first = torch.ones(1, dtype=torch.bool)
        prev_action = torch.zeros(1, dtype=torch.long)
        prev_reward = torch.zeros(1)
        while len(returns) < episodes:
            with torch.inference_mode():
                out = model.step(torch.from_numpy(obs), rstate, first, prev_action, prev_reward)
            rstate = out[-1]
            chosen = np.asarray(head(out[0], rows, gen)[0])
            if box is not None:
                chosen = np.clip(chosen, box.low, box.high).astype(box.dtype)
            else:
                chosen = chosen.astype(np.int64)
            if frames is not None and not returns:
                frames.append(np.asarray(obs[0]))
            result = envs.step(chosen)
            obs = result.obs
            done = bool(result.terminated[0] or result.truncated[0])
            first = torch.tensor([done])
            prev_action = torch.from_numpy(chosen) if box is None else prev_action
            prev_reward = torch.from_numpy(np.asarray(result.reward, dtype=np.float32))
            for _, ret, _ in result.episodes:
                returns.append(float(ret))
    finally:
        envs.close()
    return returns


def write_gif(observations: list[np.ndarray], path: str, fps: int = 30) -> None:
    """Observations as an animated GIF: image stacks show their newest frame, vectors a bar chart."""
    from PIL import Image

    images = []
    for obs in observations:
        if obs.ndim == 3:  # [stack, H, W] -> newest frame
            frame = obs[-1]
        elif obs.ndim == 2:
            frame = obs
        else:
            frame = _vector_frame(obs)
        img = Image.fromarray(frame.astype(np.uint8))
        images.append(img.resize((img.width * 3, img.height * 3), Image.NEAREST))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)


def _vector_frame(obs: np.ndarray, h: int = 40, w: int = 16) -> np.ndarray:
    v = np.clip(np.asarray(obs, np.float64).ravel(), -3, 3)
    out = np.zeros((h, w * len(v)), dtype=np.uint8)
    for i, x in enumerate(v):
        top = int((1 - (x + 3) / 6) * (h - 1))
        out[min(top, h // 2) : max(top, h // 2) + 1, i * w + 2 : (i + 1) * w - 2] = 220
    return out
