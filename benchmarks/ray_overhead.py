"""The Ray backend's overhead against the embedded one: same config, same machine, one run.

Part ``train``: :func:`seedrl.runtime.loop.train` on CartPole
(``configs/cartpole_impala.yaml``'s model and optimiser; 2 actor groups x
``--envs`` environments, batch 32, T=20) with ``runtime.backend`` processes
(embedded: shared memory + pipes), ray (a local Ray instance started by the
run, one Ray actor per group, inference in the driver) and ray-2servers (two
inference servers as Ray actors, one group each: ``runtime.ray.inference_servers:
2``), alternated over ``--rounds`` rounds so load
from other processes hits both alike. Per run: steady-state frames/s (updates
after the first fifth of the run) and CPU seconds per frame of this process
and every process below it (actors, Ray's raylet/GCS/workers included),
sampled at each update; the median over rounds is reported. Also the time
from ``train()`` to the first update (Ray's start-up).

Part ``transfer``: one actor group's round trip as a Ray call, returning the
slot as one flat byte array (what the backend does) or as a dict of the
slot's seven arrays, for CartPole-sized and Atari-sized slots: the cost of
moving observations through Ray per step.

Part ``lm``: :func:`seedrl.runtime.lm_loop.train_lm` (REINFORCE-LOO on the
arithmetic world, a toy GPT-2 built from a config: ``--lm-width`` wide,
``--lm-layers`` layers; 2 actors, 8 prompts x 4 samples of 6 tokens per update)
with ``runtime.backend`` threads (embedded) and ray (a local Ray instance
started by the run: policy and reference generation servers and the 2
actors as Ray actors, the learner in the driver), alternated over
``--rounds``. Per run: steady-state updates/s and samples/s (updates after
the first fifth), CPU seconds per update of the process tree, and the time to
the first update.

    .venv/bin/python benchmarks/ray_overhead.py                  # ~4 minutes (2 busy cores)
    .venv/bin/python benchmarks/ray_overhead.py --part lm        # ~3 minutes: language run, threads vs ray
    .venv/bin/python benchmarks/ray_overhead.py --tiny           # ~1 minute: checks that it runs
    .venv/bin/python benchmarks/ray_overhead.py --part train --systems ray,ray-2servers   # one server vs two

Prints tables and writes ``benchmarks/results/ray_overhead.json`` (the parts run
replace theirs; the other parts' results stay).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "ray_overhead.json"


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and all live processes below it."""
    import psutil

    total = 0.0
    me = psutil.Process()
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


#: the systems compared: runtime.backend and runtime.ray overrides
SYSTEMS = {
    "processes": ("processes", {"num_cpus": 2}),
    "ray": ("ray", {"num_cpus": 2}),
    # two inference servers as Ray actors, one group each (half a logical CPU per actor to fit 2 CPUs)
    "ray-2servers": ("ray", {"num_cpus": 2, "inference_servers": 2, "server_cpus": 0.5, "actor_cpus": 0.5}),
}


def train_once(system: str, frames: int, envs: int, out_dir: str, seed: int) -> dict:
    from seedrl.config import load_config
    from seedrl.runtime.config import TrainConfig
    from seedrl.runtime.loop import train

    backend, ray_cfg = SYSTEMS[system]
    cfg = load_config(TrainConfig, {
        "name": f"{system}-{seed}", "out_dir": out_dir, "seed": seed, "total_frames": frames,
        "env": {"kind": "gym", "id": "CartPole-v1", "num_envs": envs},
        "model": {"torso": "mlp", "hidden": [64, 64]},
        "optim": {"name": "adam", "lr": 0.002, "lr_decay": "none"},
        "agent": {"entropy_cost": 0.005},
        "runtime": {"backend": backend, "num_actors": 2, "unroll_length": 20, "batch_size": 32, "torch_threads": 1,
                    "ray": ray_cfg},
        "log": {"progress": False, "tensorboard": False, "every_s": 5.0, "checkpoint_every": 10**6},
    })
    samples: list[tuple[float, int, float]] = []
    start = time.perf_counter()
    result = train(cfg, on_update=lambda row, _: samples.append((time.perf_counter(), row["frames"], tree_cpu_seconds())))
    first_update_s = samples[0][0] - start
    steady = samples[len(samples) // 5:]
    (t0, f0, c0), (t1, f1, c1) = steady[0], steady[-1]
    return {"backend": system, "frames": result.frames, "fps": (f1 - f0) / (t1 - t0),
            "cpu_us_per_frame": 1e6 * (c1 - c0) / (f1 - f0), "first_update_s": first_update_s,
            "mean_return": result.mean_return}


def part_train(args) -> list[dict]:
    runs = []
    with tempfile.TemporaryDirectory() as out:
        for r in range(args.rounds):
            for backend in args.systems:
                run = train_once(backend, args.frames, args.envs, out, seed=r)
                print(f"  round {r} {backend:12s} {run['fps']:8.0f} frames/s  {run['cpu_us_per_frame']:6.1f} us CPU/frame  "
                      f"first update after {run['first_update_s']:.1f} s  return {run['mean_return']}", flush=True)
                runs.append(run)
    table = []
    for backend in args.systems:
        mine = [r for r in runs if r["backend"] == backend]
        table.append({"backend": backend, **{k: statistics.median(r[k] for r in mine)
                                              for k in ("fps", "cpu_us_per_frame", "first_update_s")}})
    print(f"\nmedian of {args.rounds} rounds, CartPole 2 groups x {args.envs} envs, batch 32, T=20:")
    print(f"  {'system':12s} {'frames/s':>9s} {'us CPU/frame':>13s} {'start s':>8s}")
    for row in table:
        print(f"  {row['backend']:12s} {row['fps']:9.0f} {row['cpu_us_per_frame']:13.1f} {row['first_update_s']:8.1f}")
    base = table[0]
    for row in table[1:]:
        print(f"  {row['backend']} / {base['backend']}: {row['fps'] / base['fps']:.2f}x frames/s, "
              f"{row['cpu_us_per_frame'] / base['cpu_us_per_frame']:.2f}x CPU per frame")
    return runs + [{"median": table}]


def part_transfer(args) -> list[dict]:
    import ray

    from seedrl.runtime.transport import ActorSlot, SlotLayout

    class Slot:
        def __init__(self, layout):
            self.buffer = bytearray(layout.nbytes())
            self.flat_view = np.frombuffer(self.buffer, np.uint8)
            self.slot = ActorSlot(layout, self.buffer)

        def flat(self, actions):
            self.slot.action[:] = actions
            return self.flat_view, None

        def arrays(self, actions):
            self.slot.action[:] = actions
            return {k: getattr(self.slot, k) for k in ("obs", "final_obs", "reward", "first", "terminated", "truncated", "action")}, None

    layouts = {"cartpole 8 envs": SlotLayout(8, (4,), "float32"), "atari 8 envs": SlotLayout(8, (84, 84, 4), "uint8"),
               "atari 32 envs": SlotLayout(32, (84, 84, 4), "uint8")}
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        for name, layout in layouts.items():
            group = ray.remote(Slot).options(num_cpus=1).remote(layout)
            actions = np.zeros(layout.num_envs, np.int64)
            local = np.zeros(layout.nbytes(), np.uint8)
            for method in ("flat", "arrays"):
                call = getattr(group, method)
                for _ in range(args.transfer_steps // 10):  # warm-up
                    ray.get(call.remote(actions))
                t = time.perf_counter()
                for _ in range(args.transfer_steps):
                    out, _ = ray.get(call.remote(actions))
                    if method == "flat":
                        local[:] = out  # the backend's one memcpy into the driver's slot
                ms = 1e3 * (time.perf_counter() - t) / args.transfer_steps
                rows.append({"slot": name, "bytes": layout.nbytes(), "method": method, "ms_per_round_trip": ms})
                print(f"  {name:16s} {layout.nbytes():>9,d} B  {method:6s} {ms:6.2f} ms per round trip", flush=True)
            ray.kill(group)
    finally:
        ray.shutdown()
    return rows


def lm_once(backend: str, model: str, steps: int, out_dir: str, seed: int) -> dict:
    import numpy as np

    from seedrl.config import load_config
    from seedrl.runtime.lm_loop import LMPGConfig, train_lm

    cfg = load_config(LMPGConfig, {
        "name": f"lm-{backend}-{seed}", "out_dir": out_dir, "policy": model, "seed": seed, "steps": steps,
        "task": {"world": "arithmetic", "num_examples": 500}, "sampling": {"max_new_tokens": 6},
        "pg": {"samples_per_prompt": 4, "kl_coef": 0.01}, "prompts_per_step": 8, "optim": {"lr": 3e-3},
        "runtime": {"backend": backend, "num_actors": 2, "torch_threads": 1,
                    **({"ray": {"num_cpus": 2, "generation_cpus": 0.5, "actor_cpus": 0.25}} if backend == "ray" else {})},
        "log": {"progress": False, "every": 10, "checkpoint_every": 10**6},
    })
    sevens = lambda p, c, e: np.array([x.count("7") / max(1, len(x)) for x in c], np.float32)  # noqa: E731
    samples: list[tuple[float, int, float]] = []
    start = time.perf_counter()
    train_lm(cfg, reward_fn=sevens, on_step=lambda row: samples.append((time.perf_counter(), row["frames"], tree_cpu_seconds())))
    steady = samples[len(samples) // 5:]
    (t0, f0, c0), (t1, f1, c1) = steady[0], steady[-1]
    updates = len(steady) - 1
    return {"backend": backend, "updates": len(samples), "updates_per_s": updates / (t1 - t0),
            "samples_per_s": (f1 - f0) / (t1 - t0), "cpu_s_per_update": (c1 - c0) / updates,
            "first_update_s": samples[0][0] - start}


def part_lm(args) -> list[dict]:
    from seedrl.envs.text import build_toy_assets

    runs = []
    with tempfile.TemporaryDirectory() as out:
        model = str(build_toy_assets(Path(out) / "toy", world="arithmetic", seed=0, n_embd=args.lm_width,
                                     n_layer=args.lm_layers, n_head=2).path)
        for r in range(args.rounds):
            for backend in ("threads", "ray"):
                run = lm_once(backend, model, args.lm_steps, out, seed=r)
                print(f"  round {r} {backend:8s} {run['updates_per_s']:6.2f} updates/s  {run['samples_per_s']:7.1f} samples/s  "
                      f"{run['cpu_s_per_update']:6.3f} CPU s/update  first update after {run['first_update_s']:.1f} s", flush=True)
                runs.append(run)
    table = []
    for backend in ("threads", "ray"):
        mine = [r for r in runs if r["backend"] == backend]
        table.append({"backend": backend, **{k: statistics.median(r[k] for r in mine)
                                              for k in ("updates_per_s", "samples_per_s", "cpu_s_per_update", "first_update_s")}})
    print(f"\nmedian of {args.rounds} rounds, PG on the arithmetic world, GPT-2 {args.lm_width} wide x {args.lm_layers} layers:")
    print(f"  {'backend':8s} {'updates/s':>10s} {'samples/s':>10s} {'CPU s/update':>13s} {'start s':>8s}")
    for row in table:
        print(f"  {row['backend']:8s} {row['updates_per_s']:10.2f} {row['samples_per_s']:10.1f} {row['cpu_s_per_update']:13.3f} "
              f"{row['first_update_s']:8.1f}")
    print(f"  ray / threads: {table[1]['updates_per_s'] / table[0]['updates_per_s']:.2f}x updates/s, "
          f"{table[1]['cpu_s_per_update'] / table[0]['cpu_s_per_update']:.2f}x CPU per update")
    return runs + [{"median": table}]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["train", "transfer", "lm", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--systems", type=lambda v: v.split(","), default=list(SYSTEMS),
                        help=f"comma-separated, the first is the baseline (default: {','.join(SYSTEMS)})")
    parser.add_argument("--transfer-steps", type=int, default=500)
    parser.add_argument("--lm-steps", type=int, default=60, help="learner updates of each language run")
    parser.add_argument("--lm-width", type=int, default=64)
    parser.add_argument("--lm-layers", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="one short round per part (~1 minute): checks that the script runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.tiny:
        args.rounds, args.frames, args.envs, args.transfer_steps, args.lm_steps = 1, 20_000, 8, 20, 10
    import os

    result = json.loads(args.out.read_text()) if args.out.exists() and not args.tiny else {}
    result.update({"machine": platform.platform(), "python": sys.version.split()[0]})
    result[f"args_{args.part}"] = {k: str(v) for k, v in vars(args).items()}
    result[f"loadavg_{args.part}"] = os.getloadavg()
    if args.part in ("transfer", "all"):
        print("transfer: one actor group's round trip through Ray")
        result["transfer"] = part_transfer(args)
    if args.part in ("train", "all"):
        print("train: embedded vs ray, same config")
        result["train"] = part_train(args)
    if args.part in ("lm", "all"):
        print("lm: a language run, threads vs ray")
        result["lm"] = part_lm(args)
    if not args.tiny:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
