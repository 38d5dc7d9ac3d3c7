"""Raw environment stepping rates with random actions (no network, no transport).

Cases: CartPole in a plain Python loop (1 env), ``GymnasiumBatch`` x16,
EnvPool x16 (1 and 2 threads, raw and through ``EnvpoolBatch``), Pong with our
ale-py preprocessing x1, and EnvPool Pong x8 on 2 threads. Atari rates are
also given in emulator frames/s (agent steps x frame_skip).

    .venv/bin/python benchmarks/env_throughput.py [--seconds 1.5] [--repeats 3] [--out PATH]

Each case runs ``--repeats`` times and reports the best rate (the machine may be
shared); results go to ``benchmarks/results/env_throughput.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import platform
import time
import warnings
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from seedrl.envs import EnvConfig, EnvpoolBatch, GymnasiumBatch, envpool_options, make_env

HAS_ENVPOOL = importlib.util.find_spec("envpool") is not None


def timed(step: Callable[[np.ndarray], None], actions: np.ndarray, seconds: float) -> tuple[int, float]:
    """Call ``step`` on successive rows of ``actions`` for about ``seconds``; (calls, elapsed)."""
    for row in actions[:20]:  # warm-up
        step(row)
    calls, start = 0, time.perf_counter()
    while True:
        for row in actions:
            step(row)
        calls += len(actions)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls, elapsed


def random_actions(num_actions: int, num_envs: int, rows: int = 512) -> np.ndarray:
    return np.random.default_rng(0).integers(0, num_actions, size=(rows, num_envs))


def bench_python_loop(env_id: str, seconds: float) -> tuple[int, float]:
    env = gym.make(env_id)
    env.reset(seed=0)

    def step(a: np.ndarray) -> None:
        _, _, term, trunc, _ = env.step(int(a[0]))
        if term or trunc:
            env.reset()

    out = timed(step, random_actions(env.action_space.n, 1), seconds)
    env.close()
    return out


def bench_batch(batch, seconds: float) -> tuple[int, float]:
    batch.reset(seed=0)
    out = timed(batch.step, random_actions(batch.action_space.n, batch.num_envs), seconds)
    batch.close()
    return out


def bench_raw_envpool(task: str, num_envs: int, threads: int, seconds: float, **options) -> tuple[int, float]:
    import envpool

    env = envpool.make_gymnasium(task, num_envs=num_envs, num_threads=threads, seed=0, **options)
    num_actions = env.action_space.n
    env.reset()
    out = timed(env.step, random_actions(num_actions, num_envs), seconds)
    env.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="measuring time per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per case; the best rate is reported")
    parser.add_argument("--out", default="benchmarks/results/env_throughput.json")
    args = parser.parse_args()
    # raw EnvPool builds float64 Box bounds for float32 spaces and says so on every build
    warnings.filterwarnings("ignore", message=".*precision lowered by casting", category=UserWarning)
    s = args.seconds
    pong = EnvConfig(kind="atari", id="Pong")
    cartpole_16 = [lambda: gym.make("CartPole-v1")] * 16
    cases: list[tuple[str, int, int, Callable[[], tuple[int, float]]]] = [
        # (name, num_envs, frame_skip, run)
        ("cartpole python loop x1", 1, 1, lambda: bench_python_loop("CartPole-v1", s)),
        ("cartpole GymnasiumBatch x16", 16, 1, lambda: bench_batch(GymnasiumBatch(cartpole_16), s)),
    ]
    if HAS_ENVPOOL:
        for threads in (1, 2):
            cases += [
                (f"cartpole envpool raw x16 {threads} thread(s)", 16, 1,
                 lambda t=threads: bench_raw_envpool("CartPole-v1", 16, t, s)),
                (f"cartpole EnvpoolBatch x16 {threads} thread(s)", 16, 1,
                 lambda t=threads: bench_batch(EnvpoolBatch("CartPole-v1", 16, num_threads=t), s)),
            ]
    cases.append(("pong ale-py preprocessed GymnasiumBatch x1", 1, 4,
                  lambda: bench_batch(GymnasiumBatch([lambda: make_env(pong)]), s)))
    if HAS_ENVPOOL:
        cases += [
            ("pong envpool raw x8 2 threads", 8, 4,
             lambda: bench_raw_envpool("Pong-v5", 8, 2, s, **envpool_options(pong))),
            ("pong EnvpoolBatch x8 2 threads", 8, 4,
             lambda: bench_batch(EnvpoolBatch("Pong-v5", 8, num_threads=2, **envpool_options(pong)), s)),
        ]
    results = []
    for name, num_envs, frame_skip, run in cases:
        rates = []
        for _ in range(args.repeats):
            calls, elapsed = run()
            rates.append(calls * num_envs / elapsed)
        steps_per_s = max(rates)  # the least disturbed run on a shared machine
        row = {"case": name, "num_envs": num_envs, "env_steps_per_s": round(steps_per_s, 1),
               "all_runs_steps_per_s": [round(r, 1) for r in rates]}
        if frame_skip > 1:
            row["frames_per_s"] = round(steps_per_s * frame_skip, 1)
        results.append(row)
        extra = f"  ({row['frames_per_s']:>9,.0f} frames/s)" if frame_skip > 1 else ""
        print(f"{name:<46} {steps_per_s:>10,.0f} steps/s{extra}", flush=True)
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_average_1min": round(os.getloadavg()[0], 2),
        "seconds_per_run": s,
        "repeats": args.repeats,
        "results": results,
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
