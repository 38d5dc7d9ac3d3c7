"""Throughput of the SEED runtime (IMPALA) against raw environment stepping and the compute bound.

Part 1, **runtime overhead**: actor processes + central inference exactly as
:func:`seedrl.runtime.loop.train` wires them (``EmbeddedBackend`` +
``InferenceServer.serve``), with a policy of negligible cost (one ``Linear(1, A)``
on the first observation value, zero weights: constant logits, i.e. uniform
random actions) and no learner (a thread drains the unroll queue and discards).
It is compared with raw stepping of the same ``EnvBatch`` environments with
random actions, in one or several plain processes (no transport). Cases:
CartPole on the gymnasium and envpool backends, Pong with full preprocessing on
envpool and on the gymnasium (ale-py) backend.

Every configuration of a case is started once and kept alive; measuring
windows of all configurations are then interleaved round-robin over
``--rounds`` rounds (a runtime that is not being measured is paused: inference
stops replying, so its actors block), and the median per configuration is
reported, so load from other processes on a shared machine hits every
configuration alike. Besides wall-clock rates, CPU seconds per env step of
all involved processes are reported (robust to load: the overhead in CPU).

Part 2, **full training loop** with the real networks: steady-state frames/s
of :func:`seedrl.runtime.loop.train` (updates after a warm-up; the median of
the window's thirds) for CartPole (``configs/cartpole_impala.yaml``: MLP, 2
actors x 8 envs; and the same with 64 envs per actor, batch 128) and Pong
(Nature CNN, 2 actors x 8 envpool envs, batch 16, T=20, torch_threads 1),
against the compute bound ``1 / (env + forward + learner cost per frame)``,
each measured in this script right after the run: env cost from raw stepping
of the actors' environment batches (one process per actor, concurrently),
forward cost from ``model.step`` + sampling at the batch sizes the run's
inference used (weighted by how often), learner cost from ``Learner.update``
(IMPALA loss, backward, grad clip, optimizer step, weight publication) on a
batch of the training shape. Also reported: the learner's busy/waiting
fractions, the actors + inference alone with the real network (no learner),
and CPU seconds per frame of the whole run against the sum of the components'.

    .venv/bin/python benchmarks/runtime_throughput.py            # ~6 minutes (2 busy cores)
    .venv/bin/python benchmarks/runtime_throughput.py --quick    # ~1.5 minutes: fewer configs, CartPole training only
    .venv/bin/python benchmarks/runtime_throughput.py --part 1   # runtime overhead only (or --part 2)
    .venv/bin/python benchmarks/runtime_throughput.py --part layout --out benchmarks/results/runtime_layout.json
        # the shipped CartPole config's automatic layout vs raw and vs its old fixed 2 x 32 (~1 minute)
    .venv/bin/python benchmarks/runtime_throughput.py --part infer --baseline-ref REV --out X.json
        # CPU per InferenceServer.infer batch, against inference.py at git revision REV (~1 minute)

Prints tables and writes ``benchmarks/results/runtime_throughput.json``.
"""

from __future__ import annotations

# Keep the top-level imports light: actor processes are spawned and import this
# module as __mp_main__; torch is imported lazily, in the learner process only.
import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import platform
import queue
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from seedrl.envs import EnvConfig

RESULTS = Path(__file__).parent / "results" / "runtime_throughput.json"
SHIPPED_CARTPOLE = Path(__file__).parents[1] / "configs" / "cartpole_impala.yaml"
_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def frames_per_step(env: EnvConfig) -> int:
    return env.frame_skip if env.kind == "atari" else 1


def env_label(env: EnvConfig) -> str:
    threads = f" t{env.envpool_threads}" if env.backend == "envpool" else ""
    return f"{env.num_envs} env{'s' if env.num_envs > 1 else ''}{threads}"


# --------------------------------------------------------------------------- raw stepping


def _raw_worker(env: EnvConfig, seed: int, conn) -> None:
    """A plain process stepping one EnvBatch with random actions when told to."""
    warnings.filterwarnings("ignore", message=".*precision lowered by casting")
    from seedrl.envs import make_env_batch

    envs = make_env_batch(env, env.num_envs, seed)
    envs.reset(seed=seed)
    actions = np.random.default_rng(seed).integers(0, envs.action_space.n, size=(256, env.num_envs))
    for i in range(10):
        envs.step(actions[i])
    conn.send("ready")
    try:
        while (seconds := conn.recv()) is not None:
            i, start = 0, time.perf_counter()
            while True:
                envs.step(actions[i & 255])
                i += 1
                elapsed = time.perf_counter() - start
                if elapsed >= seconds:
                    break
            conn.send((i * env.num_envs, elapsed))
    finally:
        envs.close()


class RawGroup:
    """``procs`` plain processes, each stepping its own EnvBatch of ``env``; measured together."""

    kind = "raw"

    def __init__(self, env: EnvConfig, procs: int, ctx):
        self.env, self.procs = env, procs
        self.name = f"raw {procs} proc x {env_label(env)}"
        self.total_envs = procs * env.num_envs
        self.conns, self.workers = [], []
        for p in range(procs):
            parent, child = ctx.Pipe()
            w = ctx.Process(target=_raw_worker, args=(env, 1000 + 100 * p, child), daemon=True)
            w.start()
            child.close()
            self.conns.append(parent)
            self.workers.append(w)

    def wait_ready(self, timeout: float) -> None:
        for c in self.conns:
            if not c.poll(timeout):
                raise TimeoutError(f"{self.name}: workers did not start")
            c.recv()

    def measure(self, seconds: float, warm: float) -> dict:
        cpu0 = sum(proc_cpu_seconds(w.pid) for w in self.workers)
        for c in self.conns:
            c.send(seconds)
        results = [c.recv() for c in self.conns]
        cpu = sum(proc_cpu_seconds(w.pid) for w in self.workers) - cpu0
        steps = sum(s for s, _ in results)
        rate = sum(s / e for s, e in results)
        return {"steps_per_s": rate, "cpu_s_per_kstep": 1000 * cpu / max(1, steps)}

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send(None)
            except OSError:
                pass
        for w in self.workers:
            w.join(10)
            if w.is_alive():
                w.kill()


# --------------------------------------------------------------------------- runtime, negligible policy


def tiny_policy(num_actions: int):
    """An actor-critic of negligible cost: constant logits (zero ``Linear(1, A)`` on one input value)."""
    import torch

    class TinyPolicy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(1, num_actions)
            torch.nn.init.zeros_(self.linear.weight)
            torch.nn.init.zeros_(self.linear.bias)

        def initial_state(self, n: int):
            return ()

        def step(self, obs, state, first=None, prev_action=None, prev_reward=None):
            logits = self.linear(obs.reshape(obs.shape[0], -1)[:, :1].float())
            return logits, logits[:, 0], ()

    return TinyPolicy().eval()


def probe(env: EnvConfig):
    from seedrl.envs import make_env_batch

    envs = make_env_batch(env, 1, 0)
    try:
        return envs.observation_space, envs.action_space
    finally:
        envs.close()


def slot_layout(env: EnvConfig, obs_space):
    from seedrl.runtime.transport import SlotLayout

    return SlotLayout(num_envs=env.num_envs, obs_shape=tuple(obs_space.shape),
                      obs_dtype=np.dtype(obs_space.dtype).name, action_shape=(), action_dtype="int64")


class RuntimeGroup:
    """Actor processes + central inference (as ``loop.train`` wires them), no learner."""

    kind = "runtime"

    def __init__(self, env: EnvConfig, num_actors: int, batch_timeout_ms: float, spaces, unroll_length: int = 20,
                 queue_unrolls: int = 8, policy=None):
        from seedrl.runtime.actor import ActorSpec
        from seedrl.runtime.embedded import EmbeddedBackend
        from seedrl.runtime.inference import InferenceServer

        self.env, self.num_actors, self.timeout_ms = env, num_actors, batch_timeout_ms
        self.name = f"runtime {num_actors} actor x {env_label(env)}, timeout {batch_timeout_ms:g} ms"
        self.total_envs = num_actors * env.num_envs
        obs_space, act_space = spaces
        layout = slot_layout(env, obs_space)
        self.unrolls: queue.Queue = queue.Queue(maxsize=queue_unrolls)
        policy = tiny_policy(int(act_space.n)) if policy is None else policy
        self.inference = InferenceServer(policy, layout, num_actors, unroll_length,
                                         self.unrolls, batch_timeout_s=batch_timeout_ms / 1000, seed=1)
        self.backend = EmbeddedBackend(
            layout, num_actors, lambda a, r: ActorSpec(a, env, env.num_envs, 2000 + 100 * a + r),
            on_restart=self.inference.reset_actor,
        )
        self.backend.start()
        self._start_drain()

    def _start_drain(self) -> None:
        self._closed = threading.Event()
        self.discarded = 0
        self._drain = threading.Thread(target=self._drain_loop, daemon=True)
        self._drain.start()

    def _drain_loop(self) -> None:
        while not self._closed.is_set():
            try:
                self.unrolls.get(timeout=0.1)
                self.discarded += 1
            except queue.Empty:
                pass

    def _serve(self) -> threading.Event:
        stop = threading.Event()
        self._thread = threading.Thread(target=self._serving, args=(stop,), daemon=True)
        self._thread.start()
        return stop

    def _serving(self, stop: threading.Event) -> None:
        self.inference.serve(self.backend, stop)

    def _started(self) -> bool:
        return self.inference.batches >= 20 and self.backend.live_actors() == self.num_actors

    def wait_ready(self, timeout: float) -> None:
        stop = self._serve()
        deadline = time.perf_counter() + timeout
        try:
            while not self._started():
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"{self.name}: actors did not start")
                time.sleep(0.05)
        finally:
            stop.set()
            self._thread.join()

    def measure(self, seconds: float, warm: float) -> dict:
        inf = self.inference
        stop = self._serve()
        time.sleep(warm)
        pids = self.backend.pids()
        s0, b0, f0, t0 = inf.steps, inf.batches, inf.forward_seconds, time.perf_counter()
        c_actors0 = sum(proc_cpu_seconds(p) for p in pids)
        c_main0 = time.process_time()
        time.sleep(seconds)
        s1, b1, f1, t1 = inf.steps, inf.batches, inf.forward_seconds, time.perf_counter()
        c_actors = sum(proc_cpu_seconds(p) for p in pids) - c_actors0
        c_main = time.process_time() - c_main0
        stop.set()
        self._thread.join()
        steps = max(1, s1 - s0)
        return {
            "steps_per_s": (s1 - s0) / (t1 - t0),
            "cpu_s_per_kstep": 1000 * (c_actors + c_main) / steps,
            "actor_cpu_s_per_kstep": 1000 * c_actors / steps,
            "inference_cpu_s_per_kstep": 1000 * c_main / steps,
            "mean_batch": (s1 - s0) / max(1, b1 - b0),
            "policy_ms_per_batch": 1000 * (f1 - f0) / max(1, b1 - b0),
            "batches_per_s": (b1 - b0) / (t1 - t0),
        }

    def close(self) -> None:
        self._closed.set()
        self.backend.stop()
        self._drain.join(2)


class ActorsGroup(RuntimeGroup):
    """Actor processes that run the policy themselves (``runtime.inference: actors``, as ``loop.train``
    wires them: :class:`~seedrl.runtime.actor_inference.ActorInference`), no learner: a thread moves
    their unrolls to the queue and another discards them. Paused between windows (no one reads
    the actors' pipes, so they block on their next unroll)."""

    kind = "runtime"

    def __init__(self, cfg, num_actors: int, spaces, unroll_length: int = 20, queue_unrolls: int = 8):
        from seedrl.runtime.actor import ActorSpec
        from seedrl.runtime.actor_inference import ActorInference, LocalPolicy
        from seedrl.runtime.algorithms import game_algo
        from seedrl.runtime.policies import SamplingHead
        from seedrl.runtime.weights import SharedWeights

        env = self.env = cfg.env
        self.num_actors, self.unroll_length = num_actors, unroll_length
        self.name = f"runtime {num_actors} actor x {env_label(env)}, actors inference ({cfg.model.torso} net)"
        self.total_envs = num_actors * env.num_envs
        self.weights = SharedWeights(game_algo(cfg.algo).build_model(cfg, *spaces))
        self.unrolls: queue.Queue = queue.Queue(maxsize=queue_unrolls)
        policy = LocalPolicy(cfg.algo, cfg, *spaces, self.weights, SamplingHead(), unroll_length, 1)
        self.backend = ActorInference(slot_layout(env, spaces[0]), num_actors,
                                      lambda a, r: ActorSpec(a, env, env.num_envs, 2000 + 100 * a + r),
                                      policy=policy, unrolls=self.unrolls)
        self.backend.start()
        self._start_drain()

    def _serving(self, stop: threading.Event) -> None:
        self.backend.serve(stop)

    def _started(self) -> bool:
        return self.backend.unrolls_received >= 4 * self.num_actors

    def measure(self, seconds: float, warm: float) -> dict:
        stop = self._serve()
        time.sleep(warm)
        pids = self.backend.pids()
        u0, t0 = self.backend.unrolls_received, time.perf_counter()
        c_actors0, c_main0 = sum(proc_cpu_seconds(p) for p in pids), time.process_time()
        time.sleep(seconds)
        u1, t1 = self.backend.unrolls_received, time.perf_counter()
        c_actors = sum(proc_cpu_seconds(p) for p in pids) - c_actors0
        c_main = time.process_time() - c_main0
        stop.set()
        self._thread.join()
        steps = max(1, (u1 - u0) * self.unroll_length * self.env.num_envs)
        return {"steps_per_s": steps / (t1 - t0), "cpu_s_per_kstep": 1000 * (c_actors + c_main) / steps,
                "actor_cpu_s_per_kstep": 1000 * c_actors / steps, "inference_cpu_s_per_kstep": 1000 * c_main / steps,
                "mean_batch": float(self.env.num_envs)}

    def close(self) -> None:
        super().close()
        self.weights.close()


def run_case(title: str, env: EnvConfig, raw: list[tuple[dict, int]], runtime: list[tuple[dict, int, float]],
             args, ctx, more: list[Callable[[tuple], Any]] = ()) -> dict:
    """Start every configuration of a case, then measure them round-robin; medians per configuration.
    ``more``: further runtime groups, each built by ``factory(spaces)``."""
    print(f"\n== {title} (load average {os.getloadavg()[0]:.1f})", flush=True)
    fs = frames_per_step(env)
    spaces = probe(env)
    groups: list[Any] = []
    try:
        for over, procs in raw:
            groups.append(RawGroup(dataclasses.replace(env, **over), procs, ctx))
        for over, actors, timeout_ms in runtime:
            groups.append(RuntimeGroup(dataclasses.replace(env, **over), actors, timeout_ms, spaces))
        for factory in more:
            groups.append(factory(spaces))
        for g in groups:
            g.wait_ready(180)
        samples: dict[str, list[dict]] = {g.name: [] for g in groups}
        for r in range(args.rounds):
            order = groups if r % 2 == 0 else groups[::-1]  # alternate the order against load drift
            for g in order:
                samples[g.name].append(g.measure(args.seconds, args.warm))
    finally:
        for g in groups:
            g.close()
    rows = []
    for g in groups:
        s = samples[g.name]
        row = {"config": g.name, "kind": g.kind, "total_envs": g.total_envs, "envs_per_process": g.env.num_envs,
               "envpool_threads": g.env.envpool_threads if g.env.backend == "envpool" else None,
               "env_steps_per_s": statistics.median(x["steps_per_s"] for x in s),
               "all_rounds_steps_per_s": [round(x["steps_per_s"], 1) for x in s]}
        for key in s[0]:
            if key != "steps_per_s":
                row[key] = statistics.median(x[key] for x in s)
        if fs > 1:
            row["frames_per_s"] = row["env_steps_per_s"] * fs
        rows.append(row)
    raw_rows = [r for r in rows if r["kind"] == "raw"]
    best_raw = max(raw_rows, key=lambda r: r["env_steps_per_s"])
    best_rt = max((r for r in rows if r["kind"] == "runtime"), key=lambda r: r["env_steps_per_s"])
    i_raw, i_rt = rows.index(best_raw), rows.index(best_rt)
    paired = [a["steps_per_s"] / b["steps_per_s"]
              for a, b in zip(samples[groups[i_rt].name], samples[groups[i_raw].name])]
    for row in rows:
        row["ratio_to_best_raw"] = row["env_steps_per_s"] / best_raw["env_steps_per_s"]
        if row["kind"] == "runtime":
            # CPU per round trip beyond raw stepping of the same batch size (the raw row closest in batch size)
            ref = min(raw_rows, key=lambda r: (abs(np.log(r["envs_per_process"] / row["envs_per_process"])),
                                               r["envpool_threads"] != row["envpool_threads"], r["cpu_s_per_kstep"]))
            n = row["envs_per_process"]
            row["inference_cpu_us_per_batch"] = row["inference_cpu_s_per_kstep"] * row["mean_batch"] * 1e3
            row["actor_extra_cpu_us_per_round_trip"] = (row["actor_cpu_s_per_kstep"] - ref["cpu_s_per_kstep"]) * n * 1e3
    case = {
        "case": title, "frames_per_step": fs, "rows": rows, "best_raw": best_raw["config"],
        "best_runtime": best_rt["config"],
        "ratio_runtime_over_raw": best_rt["env_steps_per_s"] / best_raw["env_steps_per_s"],
        "ratio_paired_median": statistics.median(paired),
        "ratio_cpu_raw_over_runtime": best_raw["cpu_s_per_kstep"] / best_rt["cpu_s_per_kstep"],
        "load_average_1min": os.getloadavg()[0],
    }
    print_case(case)
    return case


def print_case(case: dict) -> None:
    atari = case["frames_per_step"] > 1
    print(f"{'configuration':<52} {'steps/s':>9} {'frames/s' if atari else '':>9} {'ratio':>6} "
          f"{'CPU us/step':>11} {'batch':>6} {'inf CPU us/batch':>16} {'actor +CPU us/trip':>18}")
    for r in case["rows"]:
        fr = f"{r['frames_per_s']:>9,.0f}" if atari else " " * 9
        rt = r["kind"] == "runtime"
        extra = (f"{r['mean_batch']:6.1f} {r['inference_cpu_us_per_batch']:16.0f} "
                 f"{r['actor_extra_cpu_us_per_round_trip']:18.0f}" if rt else "")
        print(f"{r['config']:<52} {r['env_steps_per_s']:>9,.0f} {fr} {r['ratio_to_best_raw']:6.2f} "
              f"{r['cpu_s_per_kstep'] * 1e3:11.1f} {extra}")
    print(f"-> best runtime / best raw = {case['ratio_runtime_over_raw']:.2f} "
          f"(paired per round: {case['ratio_paired_median']:.2f}); CPU per step raw/runtime = "
          f"{case['ratio_cpu_raw_over_runtime']:.2f}", flush=True)


def part1(args, ctx) -> list[dict]:
    cart = EnvConfig(kind="gym", id="CartPole-v1")
    pong = EnvConfig(kind="atari", id="Pong")
    g, e = dict(backend="gymnasium"), dict(backend="envpool")

    def ep(n: int, threads: int = 1) -> dict:
        return dict(e, num_envs=n, envpool_threads=threads)

    def gy(n: int) -> dict:
        return dict(g, num_envs=n)

    if args.quick:
        plan = [
            ("CartPole-v1, gymnasium backend", cart, [(gy(16), 2)], [(gy(16), 2, 2.0), (gy(128), 2, 2.0)]),
            ("CartPole-v1, envpool backend", cart, [(ep(256), 1)], [(ep(16), 2, 2.0), (ep(256), 2, 2.0)]),
            ("Pong, envpool backend, full preprocessing", pong, [(ep(8), 2)], [(ep(8, 2), 1, 2.0), (ep(8), 2, 0.0)]),
            ("Pong, gymnasium (ale-py) backend, full preprocessing", pong, [(gy(1), 1)], [(gy(1), 1, 2.0)]),
        ]
    else:
        plan = [
            ("CartPole-v1, gymnasium backend", cart,
             [(gy(32), 1), (gy(16), 2)],
             [(gy(16), 2, 0.0), (gy(16), 2, 2.0), (gy(8), 4, 0.0), (gy(64), 2, 2.0), (gy(128), 2, 0.0),
              (gy(128), 2, 2.0)]),
            ("CartPole-v1, envpool backend", cart,
             [(ep(16), 2), (ep(256), 1), (ep(128), 2), (ep(1024), 1)],
             [(ep(16), 2, 0.0), (ep(16), 2, 2.0), (ep(8), 4, 0.0), (ep(64), 2, 2.0), (ep(256), 2, 0.0),
              (ep(256), 2, 2.0), (ep(1024), 2, 2.0)]),
            ("Pong, envpool backend, full preprocessing", pong,
             [(ep(8, 2), 1), (ep(8), 2)],
             [(ep(8, 2), 1, 2.0), (ep(4), 2, 0.0), (ep(8), 2, 0.0), (ep(8), 2, 2.0), (ep(8), 3, 0.0)]),
            ("Pong, gymnasium (ale-py) backend, full preprocessing", pong,
             [(gy(1), 1), (gy(1), 2)],
             [(gy(1), 1, 2.0), (gy(1), 2, 0.0), (gy(2), 2, 0.0), (gy(1), 4, 0.0)]),
        ]
    return [run_case(title, env, raw, runtime, args, ctx) for title, env, raw, runtime in plan]


def part_layout(args, ctx) -> list[dict]:
    """The shipped CartPole config's automatic layout (as ``seedrl run`` picks it) against raw stepping and
    against the layout it fixed before (2 actors x 32 envs, no wait), measured like part 1."""
    from seedrl.config import load_config
    from seedrl.runtime.config import TrainConfig
    from seedrl.runtime.layout import describe, resolve_layout

    cfg = load_config(TrainConfig, SHIPPED_CARTPOLE)
    auto, record = resolve_layout(cfg, *probe(cfg.env))
    print(describe(record), flush=True)
    env, rt = cfg.env, auto.runtime
    raw = [(dict(num_envs=16), 2), (dict(num_envs=256), 1), (dict(num_envs=128), 2), (dict(num_envs=1024), 1)]
    # central inference with a negligible policy at the old fixed layout and at the automatic one (upper bounds of
    # central inference), then the automatic layout as a run has it: the config's own network, where the rule puts it
    runtime = [(dict(num_envs=32), 2, 0.0), (dict(num_envs=auto.env.num_envs), rt.num_actors, rt.batch_timeout_ms)]
    envs_auto = dataclasses.replace(env, num_envs=auto.env.num_envs)

    def with_network(spaces):
        from seedrl.runtime.algorithms import game_algo

        group = RuntimeGroup(envs_auto, rt.num_actors, rt.batch_timeout_ms, spaces,
                             policy=game_algo(cfg.algo).build_model(cfg, *spaces).eval())
        group.name += f", central inference ({cfg.model.torso} net)"
        return group

    more = [with_network, lambda spaces: ActorsGroup(auto, rt.num_actors, spaces)]
    case = run_case("CartPole-v1, shipped config: before (2 x 32) and the automatic layout", env, raw, runtime, args,
                    ctx, more)
    case["layout"] = record
    return [case]


# --------------------------------------------------------------------------- part 2: full training loop


def train_config(name: str, out_dir: str, quick: bool):
    """(config, max_updates, warm-up updates excluded from the rate) of a training case."""
    from seedrl.config import load_config
    from seedrl.runtime.config import TrainConfig
    from seedrl.runtime.layout import resolve_layout

    over = [f"out_dir={out_dir}", f"name={name}", "total_frames=1000000000", "log.progress=false",
            "log.tensorboard=false", "log.every_s=1.0", "log.checkpoint_every=1000000"]
    if name.startswith("cartpole"):
        extra = [] if name == "cartpole" else ["env.num_envs=64", "runtime.batch_size=128"]
        cfg = load_config(TrainConfig, SHIPPED_CARTPOLE, over + ["log.solved_return=null"] + extra)
        cfg, _ = resolve_layout(cfg, *probe(cfg.env))  # the shipped config's 'auto' layout keys, as a run sets them
        return cfg, *((60, 15) if quick else (160, 30) if name == "cartpole" else (50, 10))
    pong = [
        "env.kind=atari", "env.id=Pong", "env.backend=envpool", "env.num_envs=8", "env.envpool_threads=1",
        "model.torso=nature", "agent.reward_clip=1.0", "optim.lr_decay=none",
        "runtime.num_actors=2", "runtime.unroll_length=20", "runtime.batch_size=16", "runtime.torch_threads=1",
    ]
    return load_config(TrainConfig, None, over + pong), *((6, 2) if quick else (14, 3))


class _Capture:
    """Catches the Learner and InferenceServer that ``loop.train`` builds (their timers) and counts batch sizes."""

    def __enter__(self):
        import collections

        import seedrl.runtime.loop as loop

        self.loop, self.orig = loop, (loop.Learner, loop.InferenceServer)
        self.batch_sizes: collections.Counter = collections.Counter()
        cap = self

        class Learner(loop.Learner):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                cap.learner = self

        class InferenceServer(loop.InferenceServer):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                cap.inference = self

            def infer(self, endpoint, ready, stop=None):
                cap.batch_sizes[len(ready) * self.layout.num_envs] += 1
                return super().infer(endpoint, ready, stop)

        loop.Learner, loop.InferenceServer = Learner, InferenceServer
        return self

    def __exit__(self, *exc):
        self.loop.Learner, self.loop.InferenceServer = self.orig


def run_training(cfg, max_updates: int, skip: int) -> dict:
    """``loop.train`` for ``max_updates``; rates from update ``skip`` on (start-up excluded)."""
    from seedrl.runtime.loop import frames_per_step, train

    marks: list[tuple] = []
    cap = _Capture()

    def on_update(row, backend):
        lrn, inf = cap.learner, cap.inference
        marks.append((time.perf_counter(), row["frames"], lrn.train_seconds, lrn.wait_seconds,
                      inf.forward_seconds, inf.steps, inf.batches, time.process_time(),
                      sum(proc_cpu_seconds(p) for p in backend.pids())))

    with cap:
        result = train(cfg, max_updates=max_updates, on_update=on_update)
    a, b = marks[skip - 1], marks[-1]
    dt = b[0] - a[0]
    fs = frames_per_step(cfg)
    n = len(marks) - skip
    thirds = [marks[skip - 1 + (n * i) // 3] for i in range(4)] if n >= 3 else [a, b]
    segments = [(y[1] - x[1]) / (y[0] - x[0]) for x, y in zip(thirds, thirds[1:])]
    return {
        "updates": result.updates,
        "measured_updates": n,
        "frames_per_s": (b[1] - a[1]) / dt,
        "segment_frames_per_s": segments,
        "learner_busy_fraction": (b[2] - a[2]) / dt,
        "learner_wait_fraction": (b[3] - a[3]) / dt,
        "learner_ms_per_update": 1000 * (b[2] - a[2]) / n,
        "inference_forward_fraction": (b[4] - a[4]) / dt,
        "forward_ms_per_batch": 1000 * (b[4] - a[4]) / max(1, b[6] - a[6]),
        "mean_inference_batch": (b[5] - a[5]) / max(1, b[6] - a[6]),
        "batch_sizes": dict(sorted(cap.batch_sizes.items())),
        "cpu_s_per_frame": ((b[7] - a[7]) + (b[8] - a[8])) / (b[1] - a[1]),
        "learner_process_cores": (b[7] - a[7]) / dt,
        "actor_processes_cores": (b[8] - a[8]) / dt,
        "wall_s_including_startup": result.seconds,
    }


def synthetic_batch(cfg, obs_space, act_space, seed: int = 0):
    """A learner batch of the training shape: ``batch_size / num_envs`` unrolls of ``[T + 1, num_envs]``."""
    from seedrl.runtime.unrolls import Unroll

    rng = np.random.default_rng(seed)
    t1, n = cfg.runtime.unroll_length + 1, cfg.env.num_envs
    parts = []
    for _ in range(cfg.runtime.batch_size // n):
        if np.dtype(obs_space.dtype) == np.uint8:
            obs = rng.integers(0, 256, size=(t1, n, *obs_space.shape), dtype=np.uint8)
        else:
            obs = rng.standard_normal((t1, n, *obs_space.shape)).astype(obs_space.dtype)
        arrays = {
            "obs": obs,
            "first": rng.random((t1, n)) < 0.02,
            "reward": rng.standard_normal((t1, n)).astype(np.float32),
            "terminated": rng.random((t1, n)) < 0.01,
            "truncated": np.zeros((t1, n), bool),
            "action": rng.integers(0, act_space.n, (t1, n)),
            "logp": np.full((t1, n), -np.log(act_space.n), np.float32),
            "prev_action": rng.integers(0, act_space.n, (t1, n)),
            "prev_reward": rng.standard_normal((t1, n)).astype(np.float32),
            "version": np.zeros((t1, n), np.int64),
        }
        parts.append(Unroll(arrays, (), {}, 0))
    return parts


def time_calls(fn, seconds: float, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds per call over ``repeats`` timing blocks of ~``seconds`` each, after a warm-up.

    CPU is this process's CPU time (all its threads, so torch's intra-op threads count)."""
    fn(), fn()
    t0 = time.perf_counter()
    fn()
    per = max(1, int(seconds / max(1e-6, time.perf_counter() - t0)))
    wall, cpu = [], []
    for _ in range(repeats):
        start, c0 = time.perf_counter(), time.process_time()
        for _ in range(per):
            fn()
        wall.append((time.perf_counter() - start) / per)
        cpu.append((time.process_time() - c0) / per)
    return statistics.median(wall), statistics.median(cpu)


def compute_costs(cfg, batch_sizes: dict[int, int], args, ctx) -> dict:
    """Seconds per frame of env stepping, batched forward and learner update, for ``cfg``'s shapes."""
    import copy

    import torch

    from seedrl.agents.impala import impala_loss
    from seedrl.models.config import build_model
    from seedrl.runtime.inference import sample_actions
    from seedrl.runtime.learner import Learner, make_optimizer
    from seedrl.runtime.loop import frames_per_step
    from seedrl.runtime.unrolls import stack_unrolls
    from seedrl.runtime.weights import WeightsMailbox

    torch.set_num_threads(cfg.runtime.torch_threads)
    fs = frames_per_step(cfg)
    # env: the actors' batches stepped raw, one process per actor, concurrently
    raw = RawGroup(cfg.env, cfg.runtime.num_actors, ctx)
    try:
        raw.wait_ready(180)
        env = [raw.measure(args.seconds, 0) for _ in range(max(3, args.rounds))]
        env_rate = statistics.median(x["steps_per_s"] for x in env)
        env_cpu_per_step = statistics.median(x["cpu_s_per_kstep"] for x in env) / 1000
    finally:
        raw.close()
    obs_space, act_space = probe(cfg.env)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, obs_space, act_space)
    inf_model = copy.deepcopy(model).eval()
    # forward: model.step + sampling as InferenceServer.infer does, at the batch sizes the run used
    gen = torch.Generator().manual_seed(0)
    total = sum(batch_sizes.values())
    sizes = {b: c / total for b, c in sorted(batch_sizes.items(), key=lambda kv: -kv[1])[:3]}
    forward_ms, forward_cpu_ms = {}, {}
    for b in sizes:
        if np.dtype(obs_space.dtype) == np.uint8:
            obs = torch.randint(0, 256, (b, *obs_space.shape), dtype=torch.uint8)
        else:
            obs = torch.randn(b, *obs_space.shape)
        first, pa, pr = torch.zeros(b, dtype=torch.bool), torch.zeros(b, dtype=torch.int64), torch.zeros(b)

        @torch.inference_mode()
        def forward(obs=obs, first=first, pa=pa, pr=pr, b=b):
            logits, _, _ = inf_model.step(obs, inf_model.initial_state(b), first, pa, pr)
            return sample_actions(logits, gen)

        wall, cpu = time_calls(forward, 0.2 if args.quick else 0.4, max(3, args.rounds))
        forward_ms[b], forward_cpu_ms[b] = 1e3 * wall, 1e3 * cpu
    weight = sum(sizes.values())
    steps_w = sum(w * b for b, w in sizes.items())
    fwd_s_per_step = sum(w * forward_ms[b] / 1e3 for b, w in sizes.items()) / steps_w
    fwd_cpu_per_step = sum(w * forward_cpu_ms[b] / 1e3 for b, w in sizes.items()) / steps_w
    # learner: Learner.update (IMPALA loss, backward, clip, optimizer step, publish) on a batch of the run's shape
    parts = synthetic_batch(cfg, obs_space, act_space)
    batch = stack_unrolls(parts)
    learner = Learner(model, WeightsMailbox(), make_optimizer(cfg.optim, model.parameters()),
                      lambda m, b: impala_loss(m, b, cfg.agent), queue.Queue(), len(parts),
                      grad_clip=cfg.optim.grad_clip)
    learn_s, learn_cpu = time_calls(lambda: learner.update(batch, 0), 0.3 if args.quick else 0.8, max(3, args.rounds))
    stack_s, _ = time_calls(lambda: stack_unrolls(parts), 0.05, 3)
    frames_per_update = cfg.runtime.unroll_length * cfg.runtime.batch_size * fs
    return {
        "env_frames_per_s": env_rate * fs,
        "env_s_per_frame": 1 / (env_rate * fs),
        "forward_ms_by_batch": forward_ms,
        "forward_batch_weights": {b: w / weight for b, w in sizes.items()},
        "forward_s_per_frame": fwd_s_per_step / fs,
        "learner_ms_per_update": learn_s * 1e3,
        "learner_s_per_frame": learn_s / frames_per_update,
        "stack_unrolls_ms_per_update": stack_s * 1e3,
        "cpu_s_per_frame": {"env": env_cpu_per_step / fs, "forward": fwd_cpu_per_step / fs,
                            "learner": learn_cpu / frames_per_update},
    }


def runtime_only(cfg, args) -> float:
    """Frames/s of the actors + central inference with the run's real (untrained) network, no learner."""
    import torch

    from seedrl.models.config import build_model
    from seedrl.runtime.loop import frames_per_step

    torch.set_num_threads(cfg.runtime.torch_threads)
    spaces = probe(cfg.env)
    rt = cfg.runtime
    g = RuntimeGroup(cfg.env, rt.num_actors, rt.batch_timeout_ms, spaces, rt.unroll_length, rt.queue_unrolls,
                     policy=build_model(cfg.model, *spaces).eval())
    try:
        g.wait_ready(180)
        rates = [g.measure(args.seconds, args.warm)["steps_per_s"] for _ in range(args.rounds)]
    finally:
        g.close()
    return statistics.median(rates) * frames_per_step(cfg)


def part2(args, ctx) -> list[dict]:
    out = []
    for name in ("cartpole",) if args.quick else ("cartpole", "cartpole_wide", "pong"):
        with tempfile.TemporaryDirectory(prefix="seedrl-bench-") as tmp:
            cfg, updates, skip = train_config(name, tmp, args.quick)
            rt = cfg.runtime
            label = (f"{name}: {rt.num_actors} actors x {cfg.env.num_envs} envs ({cfg.env.backend} backend), "
                     f"T={rt.unroll_length}, batch {rt.batch_size}, torch_threads {rt.torch_threads}, "
                     f"batch_timeout {rt.batch_timeout_ms:g} ms")
            print(f"\n== training loop, {label} (load average {os.getloadavg()[0]:.1f})", flush=True)
            run = run_training(cfg, updates, skip)
            costs = compute_costs(cfg, run["batch_sizes"], args, ctx)
            no_learner = None if args.quick else runtime_only(cfg, args)
        achieved = statistics.median(run["segment_frames_per_s"])
        c = costs
        bound = 1 / (c["env_s_per_frame"] + c["forward_s_per_frame"] + c["learner_s_per_frame"])
        cpu_sum = sum(c["cpu_s_per_frame"].values())
        row = {"case": name, "config": label, "run": run, "costs": c, "actors_inference_only_frames_per_s": no_learner,
               "achieved_frames_per_s": achieved, "compute_bound_frames_per_s": bound,
               "ratio_bound_over_achieved": bound / achieved,
               "cpu_ratio_training_over_components": run["cpu_s_per_frame"] / cpu_sum,
               "load_average_1min": os.getloadavg()[0]}
        out.append(row)
        fwd = ", ".join(f"B={b}: {ms:.2f} ms" for b, ms in c["forward_ms_by_batch"].items())
        print(f"  costs: env {c['env_frames_per_s']:,.0f} frames/s = {c['env_s_per_frame'] * 1e6:.1f} us/frame; "
              f"forward {fwd} -> {c['forward_s_per_frame'] * 1e6:.1f} us/frame; learner update "
              f"{c['learner_ms_per_update']:.1f} ms -> {c['learner_s_per_frame'] * 1e6:.1f} us/frame "
              f"(+ stack_unrolls {c['stack_unrolls_ms_per_update']:.2f} ms)")
        r = run
        print(f"  run: {r['frames_per_s']:,.0f} frames/s over {r['measured_updates']} updates (thirds: "
              f"{', '.join(f'{x:,.0f}' for x in r['segment_frames_per_s'])}); learner busy "
              f"{r['learner_busy_fraction']:.0%} ({r['learner_ms_per_update']:.1f} ms/update), waiting "
              f"{r['learner_wait_fraction']:.0%}; inference batch {r['mean_inference_batch']:.1f}, forward "
              f"{r['forward_ms_per_batch']:.2f} ms/batch ({r['inference_forward_fraction']:.0%} of wall); "
              f"CPU cores used: learner process {r['learner_process_cores']:.2f}, actors {r['actor_processes_cores']:.2f}")
        if no_learner is not None:
            print(f"  actors + inference alone (real net, no learner): {no_learner:,.0f} frames/s")
        cc = c["cpu_s_per_frame"]
        print(f"  CPU per frame: training {run['cpu_s_per_frame'] * 1e6:.1f} us (all processes) vs components "
              f"{cpu_sum * 1e6:.1f} us (env {cc['env'] * 1e6:.1f} + forward {cc['forward'] * 1e6:.1f} + learner "
              f"{cc['learner'] * 1e6:.1f}) -> x{row['cpu_ratio_training_over_components']:.2f}")
        print(f"-> achieved {achieved:,.0f} frames/s (median third), compute bound {bound:,.0f} frames/s, "
              f"bound/achieved = {bound / achieved:.2f}", flush=True)
    return out


# --------------------------------------------------------------------------- inference step (micro)


def inference_module(ref: str | None):
    """``seedrl.runtime.inference`` as in the working tree, or as at git revision ``ref`` (for before/after)."""
    import subprocess
    import types

    import seedrl.runtime.inference as current

    if ref is None:
        return current
    root = Path(__file__).resolve().parent.parent
    src = subprocess.run(["git", "-C", str(root), "show", f"{ref}:src/seedrl/runtime/inference.py"],
                         capture_output=True, text=True, check=True).stdout
    mod = types.ModuleType(f"inference_at_{ref}")
    exec(compile(src, f"inference.py@{ref}", "exec"), mod.__dict__)
    return mod


class _FakeEndpoint:
    """Actor slots filled once with fixed observations; replies do nothing."""

    def __init__(self, layout, num_actors: int):
        from seedrl.runtime.transport import ActorSlot

        rng = np.random.default_rng(0)
        self.slots = [ActorSlot(layout, bytearray(layout.nbytes())) for _ in range(num_actors)]
        for s in self.slots:
            if s.obs.dtype == np.uint8:
                s.obs[:] = rng.integers(0, 256, s.obs.shape, dtype=np.uint8)
            else:
                s.obs[:] = rng.standard_normal(s.obs.shape)
            s.first[:] = False
            s.first[0] = True
            s.reward[:] = 1.0
            s.terminated[:] = False
            s.truncated[:] = False

    def reply(self, actor_ids) -> None:
        pass

    def live_actors(self) -> int:
        return len(self.slots)


class _DropQueue(queue.Queue):
    def put(self, item, block=True, timeout=None) -> None:  # unrolls are built, then dropped
        pass


def part_infer(args) -> list[dict]:
    """CPU per ``InferenceServer.infer`` call (fake endpoint, all actors ready, unrolls built and dropped).

    With ``--baseline-ref REV`` the same cases also run ``inference.py`` as at
    git revision REV, timing blocks of both interleaved (alternating order), so
    before/after share the machine's load."""
    import gymnasium as gym
    import torch

    from seedrl.models.actor_critic import ActorCritic
    from seedrl.runtime.transport import SlotLayout

    torch.set_num_threads(1)
    versions = {"current": inference_module(None)}
    if args.baseline_ref:
        versions = {args.baseline_ref: inference_module(args.baseline_ref), **versions}
    vec = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    img = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    cases = [("CartPole-like obs [4], MLP", vec, 2, 2, 16, None),
             ("CartPole-like obs [4], MLP + LSTM 64", vec, 2, 2, 16, 64),
             ("Atari obs [4, 84, 84] uint8, Nature CNN", img, 6, 2, 8, None)]
    rounds = max(5, 2 * args.rounds + 1)
    out = []
    print(f"\n== inference step: CPU us per InferenceServer.infer batch, median of {rounds} interleaved blocks "
          f"(load average {os.getloadavg()[0]:.1f})", flush=True)
    for title, space, n_act, actors, envs, lstm in cases:
        torch.manual_seed(0)
        model = ActorCritic.from_spaces(space, gym.spaces.Discrete(n_act), lstm_size=lstm).eval()
        layout = SlotLayout(envs, tuple(space.shape), np.dtype(space.dtype).name)
        endpoint, ready = _FakeEndpoint(layout, actors), list(range(actors))
        servers = {k: m.InferenceServer(model, layout, actors, 20, _DropQueue(), seed=1) for k, m in versions.items()}
        for srv in servers.values():
            for _ in range(20):
                srv.infer(endpoint, ready)
        c0, calls = time.process_time(), 0
        while time.process_time() - c0 < 0.1:
            servers["current"].infer(endpoint, ready)
            calls += 1
        per_block = max(5, int(calls * args.seconds / 0.1))
        us: dict[str, list[float]] = {k: [] for k in servers}
        for r in range(rounds):
            for k in (list(servers) if r % 2 == 0 else list(servers)[::-1]):
                c0 = time.process_time()
                for _ in range(per_block):
                    servers[k].infer(endpoint, ready)
                us[k].append((time.process_time() - c0) / per_block * 1e6)
        row = {"case": f"{title}, {actors} actors x {envs} envs", "batch": actors * envs,
               "cpu_us_per_batch": {k: statistics.median(v) for k, v in us.items()},
               "all_blocks_us": {k: [round(x, 1) for x in v] for k, v in us.items()}}
        med = row["cpu_us_per_batch"]
        line = ", ".join(f"{k} {v:.0f}" for k, v in med.items())
        if args.baseline_ref:
            row["saved_fraction"] = 1 - med["current"] / med[args.baseline_ref]
            line += f" -> {100 * row['saved_fraction']:.1f}% less CPU"
        print(f"  {row['case']}: {line}", flush=True)
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer configurations and shorter runs (~1 minute)")
    parser.add_argument("--seconds", type=float, default=None, help="measuring window per configuration and round")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of interleaved windows (median reported)")
    parser.add_argument("--warm", type=float, default=0.3, help="seconds a runtime runs before its window opens")
    parser.add_argument("--part", choices=["1", "2", "all", "infer", "layout"], default="all",
                        help="infer: only the inference-step micro-benchmark; layout: the shipped CartPole "
                             "config's automatic layout vs raw (neither is part of 'all')")
    parser.add_argument("--baseline-ref", default=None,
                        help="with --part infer: also time inference.py as at this git revision, interleaved")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.seconds = args.seconds or (0.75 if args.quick else 1.25)
    args.rounds = args.rounds or (2 if args.quick else 3)
    warnings.filterwarnings("ignore", message=".*precision lowered by casting")
    import torch

    torch.set_num_threads(1)
    ctx = mp.get_context("spawn")
    start = time.perf_counter()
    load0 = os.getloadavg()
    report: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "load_average_at_start": load0},
        "settings": {"seconds": args.seconds, "rounds": args.rounds, "warm": args.warm, "quick": args.quick},
    }
    print(f"{os.cpu_count()} CPUs, load average {load0[0]:.1f}; windows of {args.seconds:g} s x {args.rounds} rounds")
    if args.part in ("1", "all"):
        report["runtime_overhead"] = part1(args, ctx)
    if args.part in ("2", "all"):
        report["training_loop"] = part2(args, ctx)
    if args.part == "infer":
        report["inference_step"] = part_infer(args)
    if args.part == "layout":
        report["layout"] = part_layout(args, ctx)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["total_seconds"] = time.perf_counter() - start
    print(f"\ntotal {report['total_seconds']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
