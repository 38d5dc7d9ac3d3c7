"""How long Learner.publish takes while central inference runs forward passes back to back.

Two ways to hand the learner's weights to inference, on the same network and the same
inference loop (a thread doing forward passes of ``--batch`` rows, as central inference does):

* ``lock``: the design this replaced — copy the weights in place into the inference network
  under a lock that inference holds for each whole forward pass (re-implemented here, a few
  lines, as the baseline);
* ``mailbox``: :class:`seedrl.runtime.weights.WeightsMailbox` — the learner posts a snapshot
  (clone, no lock while copying), inference applies the latest before its next forward pass.

The figure is the wall time of one publish as the learner sees it (median and p90 over
``--publishes``), with the learner publishing every ``--every-ms`` (a learner step's worth).
Writes benchmarks/results/publish_wait.json with the load average.

    .venv/bin/python benchmarks/publish_wait.py            # R2D2 Pong's Q-network
    .venv/bin/python benchmarks/publish_wait.py --quick    # CartPole's, a few publishes
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from seedrl.config import load_config
from seedrl.runtime.algorithms import game_algo
from seedrl.runtime.config import R2D2TrainConfig
from seedrl.runtime.weights import WeightsMailbox


def _network(config: str):
    cfg = load_config(R2D2TrainConfig, config)
    if "Pong" in cfg.env.id:
        obs = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
        act = gym.spaces.Discrete(6)
    else:
        env = gym.make(cfg.env.id)
        obs, act = env.observation_space, env.action_space
    return game_algo("r2d2").build_model(cfg, obs, act), obs


def measure(mode: str, config: str, batch: int, publishes: int, every_s: float) -> dict:
    learner, obs_space = _network(config)
    acting = copy.deepcopy(learner).eval()
    obs = torch.from_numpy(np.zeros((batch, *obs_space.shape), obs_space.dtype))
    state = acting.initial_state(batch)
    first = torch.zeros(batch, dtype=torch.bool)
    prev_a, prev_r = torch.zeros(batch, dtype=torch.int64), torch.zeros(batch)
    lock, mailbox, stop = threading.Lock(), WeightsMailbox(), threading.Event()
    forwards = [0]

    def inference() -> None:
        with torch.inference_mode():
            while not stop.is_set():
                if mode == "lock":
                    with lock:
                        acting.step(obs, state, first, prev_a, prev_r)
                else:
                    mailbox.apply(acting)
                    acting.step(obs, state, first, prev_a, prev_r)
                forwards[0] += 1

    @torch.no_grad()
    def publish(version: int) -> None:
        if mode == "lock":
            with lock:
                for dst, src in zip([*acting.parameters(), *acting.buffers()], [*learner.parameters(), *learner.buffers()]):
                    dst.copy_(src)
        else:
            mailbox.post(learner, version)

    thread = threading.Thread(target=inference, daemon=True)
    thread.start()
    while forwards[0] < 3:
        time.sleep(0.01)
    waits = []
    for v in range(publishes):
        time.sleep(every_s)
        start = time.perf_counter()
        publish(v)
        waits.append(time.perf_counter() - start)
    stop.set()
    thread.join()
    ms = 1e3 * np.array(waits)
    return {"mode": mode, "publish_ms_median": float(np.median(ms)), "publish_ms_p90": float(np.percentile(ms, 90)),
            "publish_ms_max": float(ms.max()), "publishes": publishes, "forwards": forwards[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/pong_r2d2.yaml")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--publishes", type=int, default=100)
    parser.add_argument("--every-ms", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the runs use runtime.torch_threads)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/publish_wait.json")
    args = parser.parse_args()
    if args.quick:
        args.config, args.publishes, args.out = "configs/cartpole_r2d2.yaml", 10, args.out.replace(".json", "_quick.json")
    torch.set_num_threads(args.threads)
    out = {"config": args.config, "batch": args.batch, "every_ms": args.every_ms, "torch_threads": args.threads,
           "load_average_start": os.getloadavg()}
    for mode in ("lock", "mailbox"):
        out[mode] = measure(mode, args.config, args.batch, args.publishes, args.every_ms / 1e3)
        print(json.dumps(out[mode]), flush=True)
    out["load_average_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
