"""Sequence replay throughput and memory: insert / sample / update at a given capacity.

    python benchmarks/replay_throughput.py --capacity 100000            # the issue's target (quiet machine)
    python benchmarks/replay_throughput.py --capacity 2000 --case atari --compression lz4

Cases. ``atari``: R2D2's Atari sequences (burn-in 40 + unroll 80 + 1 = 121
entries, overlap 41, ``[4, 84, 84] uint8`` frame stacks, LSTM state 2 x 512
float32), the frames real Pong frames recorded once with a random policy
(``seedrl.envs.atari.AtariEnv``, ``--game`` for another game; synthetic noise frames with ``--synthetic``,
which do not compress and so give a worst case). The streams replay the
recorded pool from different offsets, so every unroll continues its actor's
previous one (frames de-stacked, overlap shared); each chunk is compressed on
its own, so reusing the pool does not flatter the compression ratio. ``small``:
the same sequence shape with ``[4] float32`` observations (CartPole-like).

Reported per case and codec: insert sequences/s (``replay.insert`` only; the
unroll arrays are built outside the timer), sample sequences/s (batch 64,
gather included) and update_priorities calls/s, the stored bytes per entry
(frames only and all fields), the capacity that fits in ``--target-gb``
(16) and the process's resident memory after filling. When filling to
``--capacity`` would exceed ``--budget-gb`` (8; raw frames at 100k sequences
need ~56 GB), filling stops there and the report says so
(``stopped_at_budget``) and projects from what was stored. Prints one
JSON line per case.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from seedrl.runtime.replay import SequenceReplay  # noqa: E402
from seedrl.runtime.unrolls import Unroll  # noqa: E402


def record_game(game: str, steps: int, seed: int = 0) -> np.ndarray:
    """``steps`` observations ``[4, 84, 84] uint8`` of ``game`` under a random policy (episodes restart)."""
    from seedrl.envs.atari import AtariEnv

    env = AtariEnv(game)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    out = np.empty((steps, *obs.shape), obs.dtype)
    for t in range(steps):
        out[t] = obs
        obs, _, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
        if term or trunc:
            obs, _ = env.reset()
    env.close()
    return out


def synthetic_pool(steps: int, shape: tuple, dtype, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if len(shape) == 3:  # a frame stack that shifts by one fresh noise frame per step
        frames = rng.integers(0, 256, (steps + shape[0] - 1, *shape[1:]), dtype=np.uint8)
        return np.lib.stride_tricks.sliding_window_view(frames, shape[0], axis=0).transpose(0, 3, 1, 2)[:steps]
    return rng.standard_normal((steps, *shape)).astype(dtype)


class Actors:
    """``actors`` actors of ``envs`` streams each; stream j reads the pool from its own offset."""

    def __init__(self, pool, actors, envs, length, overlap, state_dim):
        self.pool, self.actors, self.envs, self.length, self.stride = pool, actors, envs, length, length - overlap
        self.offsets = np.arange(actors * envs).reshape(actors, envs) * 997 % len(pool)
        self.count = np.zeros(actors, np.int64)
        self.state = (torch.zeros(envs, state_dim), torch.zeros(envs, state_dim))
        self.rng = np.random.default_rng(0)

    def unroll(self, a: int) -> Unroll:
        pos = (self.offsets[a][None] + self.count[a] * self.stride + np.arange(self.length)[:, None]) % len(self.pool)
        T, N = self.length, self.envs
        first = np.zeros((T, N), bool)
        arrays = {
            "obs": self.pool[pos], "first": first, "reward": np.zeros((T, N), np.float32),
            "terminated": first, "truncated": first, "action": np.zeros((T, N), np.int64),
            "logp": np.zeros((T, N), np.float32), "prev_action": np.zeros((T, N), np.int64),
            "prev_reward": np.zeros((T, N), np.float32), "version": np.zeros((T, N), np.int64),
        }
        u = Unroll(arrays, self.state, {}, a, continues=bool(self.count[a] > 0))
        self.count[a] += 1
        return u


def run_case(case, compression, args, pool):
    L, overlap = args.burn_in + args.unroll + 1, args.burn_in + 1
    replay = SequenceReplay(args.capacity, L, overlap, compression=compression, seed=0)
    actors = Actors(pool, args.actors, args.envs, L, overlap, state_dim=512)
    rss0 = psutil.Process().memory_info().rss
    budget = args.budget_gb * 2**30
    insert_s, inserted, stopped_at_budget, a = 0.0, 0, False, 0
    while inserted < args.capacity:
        u = actors.unroll(a)
        a = (a + 1) % args.actors
        prio = np.random.default_rng(inserted).random(args.envs) + 0.1
        t0 = time.perf_counter()
        replay.insert(u, prio)
        insert_s += time.perf_counter() - t0
        inserted += args.envs
        if inserted % (args.envs * 50) == 0 and replay.memory()["total"] > budget:
            stopped_at_budget = True
            break
    mem = replay.memory()
    rss_filled = psutil.Process().memory_info().rss  # before sampling: a sampled Atari batch alone is ~220 MB
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < args.seconds:
        ids, batch, w = replay.sample(args.batch)
        del batch  # as a learner would: one batch alive at a time
        n += 1
    sample_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(200):
        replay.update_priorities(ids, np.random.default_rng(1).random(len(ids)) + 0.1)
    update_s = time.perf_counter() - t0
    per_entry = mem["total"] / mem["entries"]
    per_seq = mem["total"] / len(replay)
    return {
        "case": case, "compression": compression, "capacity": args.capacity, "stored_sequences": len(replay),
        "stopped_at_budget": stopped_at_budget, "sequence_length": L, "overlap": overlap,
        "insert_sequences_per_s": round(inserted / insert_s, 1),
        "sample_sequences_per_s": round(n * args.batch / sample_s, 1),
        "update_priorities_calls_per_s": round(200 / update_s, 1),
        "entries": mem["entries"], "frames_stored": mem["frames_stored"],
        "frame_bytes_per_entry": round(mem["frames"] / mem["entries"], 1),
        "bytes_per_entry": round(per_entry, 1),
        "raw_obs_bytes_per_entry": int(pool[0].nbytes),
        "projected_gb_at_capacity": round(per_seq * args.capacity / 2**30, 2),
        "capacity_in_target_gb": int(args.target_gb * 2**30 / per_seq),
        "rss_gb": round(rss_filled / 2**30, 2),
        "rss_growth_gb": round((rss_filled - rss0) / 2**30, 2),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capacity", type=int, default=100_000, help="sequences")
    ap.add_argument("--case", choices=["atari", "small", "both"], default="both")
    ap.add_argument("--compression", nargs="+", default=["lz4", "zlib", "none"], help="codecs to measure (atari case)")
    ap.add_argument("--burn-in", type=int, default=40)
    ap.add_argument("--unroll", type=int, default=80)
    ap.add_argument("--actors", type=int, default=16)
    ap.add_argument("--envs", type=int, default=16, help="environments per actor (sequences per insert)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5.0, help="sampling time per case")
    ap.add_argument("--budget-gb", type=float, default=8.0, help="stop filling when the replay holds this much")
    ap.add_argument("--target-gb", type=float, default=16.0, help="report the capacity that fits in this much")
    ap.add_argument("--pool-steps", type=int, default=4000, help="Pong steps recorded for the frame pool")
    ap.add_argument("--game", default="Pong", help="Atari game recorded for the frame pool")
    ap.add_argument("--synthetic", action="store_true", help="noise frames instead of Pong (incompressible)")
    args = ap.parse_args()
    cases = ["atari", "small"] if args.case == "both" else [args.case]
    for case in cases:
        if case == "atari":
            pool = synthetic_pool(args.pool_steps, (4, 84, 84), np.uint8) if args.synthetic else record_game(args.game, args.pool_steps)
            codecs = args.compression
        else:
            pool, codecs = synthetic_pool(args.pool_steps, (4,), np.float32), ["none"]
        for codec in codecs:
            row = run_case(case, codec, args, pool)
            row["frames"] = "synthetic" if (args.synthetic or case == "small") else f"{args.game}-random-policy"
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
