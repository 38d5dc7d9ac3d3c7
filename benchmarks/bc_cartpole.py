"""Behaviour cloning from a trained IMPALA policy's CartPole episodes (issue 17's acceptance run).

1. trains IMPALA with `configs/cartpole_impala.yaml` to the solved level;
2. records 50 episodes of the trained policy (sampling its softmax, as it acts)
   and 50 of a uniformly random policy into the store (`RecordEpisodes`);
3. runs `algo: bc` (`configs/cartpole_bc.yaml`, no return filter) on each dataset;
4. plays each BC policy greedily for 20 live episodes.

Writes benchmarks/results/bc_cartpole.json and prints the returns:

    .venv/bin/python benchmarks/bc_cartpole.py --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from seedrl.agents.bc_train import BCTrainConfig, train_bc
from seedrl.config import load_config
from seedrl.data.recording import RecordEpisodes
from seedrl.runtime.algorithms import game_algo
from seedrl.runtime.checkpoint import load_checkpoint
from seedrl.runtime.config import TrainConfig
from seedrl.runtime.evaluate import evaluate
from seedrl.runtime.loop import train


def record(path: Path, act, episodes: int, seed: int) -> list[float]:
    """``episodes`` CartPole-v1 episodes of ``act(obs) -> action`` into the dataset at ``path``; their returns."""
    env = RecordEpisodes(gym.make("CartPole-v1"), path)
    returns = []
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        done, total = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(act(obs))
            total, done = total + float(r), term or trunc
        returns.append(total)
    env.close()
    return returns


def impala_actor(checkpoint: Path, seed: int):
    """The trained policy, acting as IMPALA's actors do (a softmax sample of its logits)."""
    state = load_checkpoint(checkpoint)
    algo = game_algo("impala")
    cfg = load_config(algo.config_class(), state["config"])
    model = algo.build_model(cfg, state["spaces"]["observation"], state["spaces"]["action"])
    model.load_state_dict(state["model"])
    model.eval()
    gen = torch.Generator().manual_seed(seed)

    def act(obs: np.ndarray) -> int:
        with torch.inference_mode():
            logits = model.step(torch.from_numpy(obs[None].astype(np.float32)), ())[0]
        return int(torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=gen))

    return act


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--bc-updates", type=int, default=1000)
    parser.add_argument("--out", default="benchmarks/results/bc_cartpole.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        cfg = load_config(TrainConfig, "configs/cartpole_impala.yaml",
                          [f"seed={args.seed}", f"out_dir={root}", "name=impala", "log.progress=false",
                           "log.tensorboard=false"])
        trained = train(cfg)
        impala_s = time.perf_counter() - start
        print(f"impala: solved={trained.solved} frames={trained.frames:,} in {impala_s:.0f} s", flush=True)
        rng = np.random.default_rng(args.seed)
        data = {
            "impala": record(root / "impala_data", impala_actor(trained.checkpoint, args.seed), args.episodes, 10_000),
            "random": record(root / "random_data", lambda obs: int(rng.integers(2)), args.episodes, 20_000),
        }
        rows = {}
        for name, returns in data.items():
            bc_cfg = load_config(BCTrainConfig, "configs/cartpole_bc.yaml", [
                f"agent.dataset={root / (name + '_data')}", f"out_dir={root}", f"name=bc_{name}", "agent.where=[]",
                f"agent.updates={args.bc_updates}", "agent.eval_every=0", "agent.eval_episodes=0",
                f"seed={args.seed}", "log.progress=false", "log.tensorboard=false"])
            t0 = time.perf_counter()
            result = train_bc(bc_cfg)
            bc_s = time.perf_counter() - t0
            live = evaluate(result.checkpoint, episodes=20, greedy=True, seed=30_000)["returns"]
            rows[name] = {"data_mean_return": float(np.mean(returns)), "data_steps": result.steps,
                          "bc_mean_return": float(np.mean(live)), "bc_min_return": float(np.min(live)),
                          "bc_updates": result.updates, "bc_seconds": bc_s}
            print(f"{name}: data mean return {rows[name]['data_mean_return']:.1f} -> BC greedy mean return "
                  f"{rows[name]['bc_mean_return']:.1f} (20 episodes; {bc_s:.0f} s of BC)", flush=True)
    summary = {"seed": args.seed, "episodes": args.episodes, "impala_frames": trained.frames,
               "impala_solved": trained.solved, "impala_seconds": impala_s, "results": rows,
               "load_average": os.getloadavg(), "under_load": os.getloadavg()[0] > (os.cpu_count() or 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
