"""R2D2 learning on this machine: CartPole solved, the memory task with and without recurrence,
learner updates per second.

Three measurements, each a run of the embedded runtime (processes backend):

* ``cartpole``: `configs/cartpole_r2d2.yaml` until the solved level (mean return >= 475 over
  the last 100 episodes of its 4 evaluation envs at ε = 1e-3, ``agent.eval_envs``) or
  ``--cartpole-frames``; frames and wall time to it.
* ``memory``: `configs/memory_cue_r2d2.yaml` (seedrl/MemoryCue-v0) with ``agent.recurrent``
  true and false, the same frames each; the frames and wall time at which the mean return of
  the last 100 episodes first reaches the config's ``log.solved_return`` (0.9; null = never),
  and the final mean return (R2D2 ~1, feed-forward ~0: the junction looks the same for both
  cues).

Each run also keeps a curve ``[frames, seconds, mean return]`` every 25 updates.
* ``learner``: updates/s of the R2D2 learner step alone on replayed CartPole-shaped batches
  (no actors), so the figure is the learner's, not the machine's actor throughput.

Writes benchmarks/results/r2d2_learning.json (with the 1/5/15-minute load averages at the
start and the end: the numbers are only comparable on a quiet machine) and prints a summary.

    .venv/bin/python benchmarks/r2d2_learning.py            # the full measurement
    .venv/bin/python benchmarks/r2d2_learning.py --quick    # a tiny end-to-end check (~1-2 min)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from seedrl.config import load_config
from seedrl.runtime.config import R2D2TrainConfig
from seedrl.runtime.loop import train

COMMON = ["log.progress=false", "log.tensorboard=false"]


def run(config: str, tmp: str, name: str, frames: int, overrides: list[str], *, solved_at: float | None = None,
        every: int = 25) -> dict:
    """One training run; with ``solved_at``, also the frames and wall time at which the mean return of
    the last 100 episodes first reached it (the run itself goes on to ``frames`` when the config's
    ``log.solved_return`` is null, so an ablation that never gets there still runs as long)."""
    cfg = load_config(R2D2TrainConfig, config, [f"out_dir={tmp}", f"name={name}", f"total_frames={frames}", *COMMON,
                                                *overrides])
    threshold = cfg.log.solved_return if solved_at is None else solved_at
    curve: list[list[float]] = []
    reached: dict = {}
    last = [-1]
    start = time.perf_counter()

    def on_update(row: dict, backend) -> None:
        ret = row.get("episode_return")
        if ret is None:
            return
        if row["updates"] % every == 0 and row["updates"] != last[0]:  # once per update count (warm-up draws repeat 0)
            last[0] = row["updates"]
            curve.append([row["frames"], round(time.perf_counter() - start, 2), round(ret, 4)])
        if threshold is not None and not reached and row["episodes"] >= 100 and ret >= threshold:
            reached.update(frames=row["frames"], seconds=time.perf_counter() - start, updates=row["updates"])

    result = train(cfg, on_update=on_update)
    seconds = time.perf_counter() - start
    row = {"config": config, "overrides": overrides, "solved": result.solved, "frames": result.frames,
           "updates": result.updates, "episodes": result.episodes, "seconds": seconds,
           "mean_return": result.mean_return, "updates_per_s": result.updates / max(seconds, 1e-9),
           "threshold": threshold, "frames_to_threshold": reached.get("frames"),
           "seconds_to_threshold": reached.get("seconds"), "updates_to_threshold": reached.get("updates"),
           "curve_frames_seconds_return": curve}
    print(f"{name}: solved={result.solved} frames={result.frames:,} updates={result.updates:,} wall={seconds:.0f}s "
          f"return={result.mean_return} threshold {threshold} reached at {reached or 'never'}", flush=True)
    return row


def learner_updates_per_s(config: str, seconds: float) -> dict:
    """Updates/s of loss + backward + Adam step + priority update on a filled replay (CartPole shapes)."""
    import gymnasium as gym

    from seedrl.runtime.algorithms import game_algo
    from seedrl.runtime.replay import SequenceReplay
    from seedrl.runtime.unrolls import Unroll

    torch.set_num_threads(1)
    cfg = load_config(R2D2TrainConfig, config)
    algo = game_algo("r2d2")
    env = gym.make(cfg.env.id)
    model = algo.build_model(cfg, env.observation_space, env.action_space)
    step = algo.learner_step(cfg, model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, eps=cfg.optim.eps)
    length, overlap = algo.unroll(cfg)
    replay = SequenceReplay(4096, length + 1, overlap, seed=0)
    rng = np.random.default_rng(0)
    n, t1 = 16, length + 1
    for actor in range(64):
        arrays = {"obs": rng.normal(size=(t1, n, *env.observation_space.shape)).astype(np.float32),
                  "first": rng.random((t1, n)) < 0.05, "reward": np.ones((t1, n), np.float32),
                  "terminated": np.zeros((t1, n), bool), "truncated": np.zeros((t1, n), bool),
                  "action": rng.integers(0, 2, (t1, n)), "logp": np.zeros((t1, n), np.float32),
                  "prev_action": rng.integers(0, 2, (t1, n)), "prev_reward": np.ones((t1, n), np.float32),
                  "version": np.zeros((t1, n), np.int64)}
        arrays["terminated"] = arrays["first"].copy()
        replay.insert(Unroll(arrays, model.initial_state(n), actor_id=actor), np.ones(n))
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        ids, batch, weights = replay.sample(cfg.runtime.batch_size)
        loss, priorities, _ = step.loss(batch, torch.from_numpy(weights))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or 40.0)
        opt.step()
        replay.update_priorities(ids, priorities)
        done += 1
        step.after_update(done)
    elapsed = time.perf_counter() - start
    return {"config": config, "batch_size": cfg.runtime.batch_size, "sequence_length": length + 1,
            "updates": done, "seconds": elapsed, "updates_per_s": done / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script end to end, measures nothing")
    parser.add_argument("--cartpole-frames", type=int, default=1_000_000)
    parser.add_argument("--memory-frames", type=int, default=50_000)
    parser.add_argument("--learner-seconds", type=float, default=30.0)
    parser.add_argument("--out", default="benchmarks/results/r2d2_learning.json")
    args = parser.parse_args()
    cp_frames, mem_frames, learner_s = args.cartpole_frames, args.memory_frames, args.learner_seconds
    tiny: list[str] = []
    if args.quick:
        cp_frames, mem_frames, learner_s = 3_000, 2_000, 2.0
        tiny = ["agent.min_replay=16"]
        args.out = args.out.replace(".json", "_quick.json")
    summary: dict = {"quick": args.quick, "load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        summary["cartpole"] = run("configs/cartpole_r2d2.yaml", tmp, "cartpole", cp_frames, tiny)
        memory_solved = load_config(R2D2TrainConfig, "configs/memory_cue_r2d2.yaml").log.solved_return
        summary["memory"] = {  # the same frames each; frames and wall time to the config's solved return
            "recurrent": run("configs/memory_cue_r2d2.yaml", tmp, "memory_lstm", mem_frames,
                             ["agent.recurrent=true", "log.solved_return=null", *tiny], solved_at=memory_solved),
            "feed_forward": run("configs/memory_cue_r2d2.yaml", tmp, "memory_ff", mem_frames,
                                ["agent.recurrent=false", "log.solved_return=null", *tiny], solved_at=memory_solved),
        }
    summary["learner"] = learner_updates_per_s("configs/cartpole_r2d2.yaml", learner_s)
    summary["load_average_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    mem = summary["memory"]
    print(json.dumps({"cartpole_solved": summary["cartpole"]["solved"], "cartpole_frames": summary["cartpole"]["frames"],
                      "cartpole_seconds": round(summary["cartpole"]["seconds"]),
                      "memory_return_lstm": mem["recurrent"]["mean_return"],
                      "memory_lstm_frames_to_solved": mem["recurrent"]["frames_to_threshold"],
                      "memory_lstm_seconds_to_solved": mem["recurrent"]["seconds_to_threshold"],
                      "memory_return_ff": mem["feed_forward"]["mean_return"],
                      "memory_ff_frames_to_solved": mem["feed_forward"]["frames_to_threshold"],
                      "learner_updates_per_s": round(summary["learner"]["updates_per_s"], 1),
                      "load_average_end": summary["load_average_end"]}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
