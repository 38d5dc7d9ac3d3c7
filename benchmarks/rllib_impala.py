"""RLlib IMPALA beside seedrl on Ray (same environment, model, losses and CPUs), and actor scaling on Ray.

Part ``compare``: CartPole-v1, IMPALA (V-trace), the MLP of
``configs/cartpole_impala.yaml`` (64-64 tanh torso shared by the policy and
value heads), 2 actor groups / env runners x 16 environments, unrolls
(rollout fragments) of 20, learner batches of 32 unrolls (640 frames), Adam
2e-3, grad clip 40 (global norm), entropy 0.005, baseline 0.5, discount 0.99,
one torch thread, a local Ray instance of 2 logical CPUs (1 per actor group /
env runner; inference and the learner in the driver on both sides: RLlib with
``num_learners=0``). Systems, alternated over ``--rounds`` rounds, each in a
fresh subprocess (one process, one Ray instance):

- ``seedrl-ray``: ``runtime.backend: ray`` (actor groups as Ray actors, central
  inference and the learner in the driver);
- ``seedrl``: the embedded backend (processes + shared memory), no Ray;
- ``rllib``: RLlib 2.60 IMPALA on its new API stack (``IMPALAConfig``, its
  default RLModule with ``DefaultModelConfig(fcnet_hiddens=[64, 64],
  fcnet_activation="tanh", vf_share_layers=True)``), in its own virtualenv
  (``--setup``), driven by ``benchmarks/peers/rllib_impala_driver.py``;
- ``rllib-learner`` (not in the default set): RLlib's own IMPALA layout, the
  learner a Ray actor of its own (``num_learners=1``, updates asynchronous to
  the driver) on one more logical CPU (the same 2 physical cores).

Per run, sampled about every second: frames, CPU seconds of the process tree
(Ray's raylet, GCS and workers included; :func:`tree_cpu` of the driver
module, the same count on both sides) and the mean return of the last 100
episodes. Reported: steady-state frames/s and CPU us per frame (from the
sample at a fifth of the frames to the last), seconds to the first frames
(start-up), the return at equal frames (quarters of the budget) and at equal
wall time, frames and seconds to a mean return >= 475 if reached; medians over
rounds and the ratios seedrl / RLlib.

Part ``scaling``: seedrl's Ray backend with 1, 2, 4, 8 actor groups (Ray actor
processes, 16 environments each, ``actor_cpus: 1`` on a local instance of as
many logical CPUs as groups): frames/s, CPU us per frame, and CPU per frame by
process kind (the driver = inference + learner, the groups, raylet, GCS).

    .venv/bin/python benchmarks/rllib_impala.py --setup          # /tmp/seedrl-peers/venvs/rllib (idempotent)
    .venv/bin/python benchmarks/rllib_impala.py                  # both parts, ~15 minutes on 2 busy cores
    .venv/bin/python benchmarks/rllib_impala.py --part compare --rounds 2 --frames 300000
    .venv/bin/python benchmarks/rllib_impala.py --quick          # checks that it runs: ~1 minute quiet (RLlib's start-up
                                                                 # adds 40-100 s under load; seedrl only without its venv)
    .venv/bin/python benchmarks/rllib_impala.py --part compare --systems seedrl-ray,rllib,rllib-learner --rounds 1 \
        --frames 3000000 --max-s 180 --out benchmarks/results/rllib_impala_wall180.json   # equal wall time

Writes ``benchmarks/results/rllib_impala.json`` (not with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))
from peers_pong import PeerSetup, _torch_spec, setup_peer, venv_dir  # noqa: E402
from rllib_impala_driver import tree_cpu  # noqa: E402

DRIVER = HERE / "peers" / "rllib_impala_driver.py"
RESULTS = HERE / "results" / "rllib_impala.json"
RLLIB = PeerSetup("rllib", ["ray[rllib]==2.60.0", _torch_spec()], report=["ray", "torch", "gymnasium", "numpy"])
SYSTEMS = ("seedrl-ray", "seedrl", "rllib")
EXTRA_SYSTEMS = ("rllib-learner",)
SOLVED = 475.0


def make_spec(args, num_actors: int = 2, seed: int = 0) -> dict:
    """The settings both systems run with (``configs/cartpole_impala.yaml``'s model, losses and optimiser)."""
    return {"env_id": "CartPole-v1", "num_actors": num_actors, "num_envs": args.envs, "unroll_length": 20,
            "batch_size": 32, "lr": 0.002, "discount": 0.99, "entropy_cost": 0.005, "baseline_cost": 0.5,
            "grad_clip": 40.0, "hidden": [64, 64], "activation": "tanh", "torch_threads": 1,
            "num_cpus": max(2, num_actors), "frames": args.frames, "max_s": args.max_s, "seed": seed,
            "sample_every_s": args.sample_every_s}


# ------------------------------------------------------------------------------------ seedrl's side
def seedrl_side(spec: dict, backend: str) -> dict:
    """Train seedrl in this process with ``spec``; one sample per second of training (as the driver's).

    Stops at the frame budget or, past ``spec["max_s"]``, by sending itself SIGTERM (the
    run's own clean stop, as the driver's wall-time cap)."""
    from seedrl.config import load_config
    from seedrl.runtime.config import TrainConfig
    from seedrl.runtime.loop import train

    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(TrainConfig, {
            "name": "bench", "out_dir": out, "seed": spec["seed"], "total_frames": spec["frames"],
            "env": {"kind": "gym", "id": spec["env_id"], "num_envs": spec["num_envs"]},
            "model": {"torso": "mlp", "hidden": spec["hidden"], "activation": spec["activation"]},
            "optim": {"name": "adam", "lr": spec["lr"], "grad_clip": spec["grad_clip"], "lr_decay": "none"},
            "agent": {"discount": spec["discount"], "entropy_cost": spec["entropy_cost"],
                      "baseline_cost": spec["baseline_cost"]},
            "runtime": {"backend": backend, "num_actors": spec["num_actors"], "unroll_length": spec["unroll_length"],
                        "batch_size": spec["batch_size"], "torch_threads": spec["torch_threads"],
                        "ray": {"num_cpus": spec["num_cpus"]}},
            "log": {"progress": False, "tensorboard": False, "every_s": 5.0, "checkpoint_every": 10**6,
                    "solved_return": None},
        })
        start = time.perf_counter()
        samples: list[dict] = []
        capped: list[float] = []

        def on_update(row: dict, _backend) -> None:
            now = time.perf_counter() - start
            last = int(row["frames"]) >= spec["frames"]  # the update that ends the run is always sampled
            if samples and now - samples[-1]["t"] < spec["sample_every_s"] and not last:
                return
            cpu, kinds = tree_cpu(by_kind=True)
            samples.append({"t": now, "frames": int(row["frames"]), "cpu": cpu, "cpu_by_kind": kinds,
                            "return": row.get("episode_return")})
            if now >= spec["max_s"] and not capped:
                capped.append(now)
                os.kill(os.getpid(), signal.SIGTERM)

        train(cfg, on_update=on_update)
    return {"system": "seedrl-ray" if backend == "ray" else "seedrl", "samples": samples}


# ------------------------------------------------------------------------------------ one run, analysed
def run_system(system: str, spec: dict, workdir: Path) -> dict:
    """``system`` on ``spec`` in a fresh subprocess; its samples, analysed (:func:`analyse`)."""
    if system == "rllib-learner":  # one more logical CPU for the learner actor
        spec = {**spec, "rllib_num_learners": 1, "num_cpus": spec["num_cpus"] + 1}
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, result = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        if system.startswith("rllib"):
            argv = [str(venv_dir(workdir, "rllib") / "bin" / "python"), str(DRIVER), str(spec_path), str(result)]
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        else:
            argv = [sys.executable, __file__, "--side", "ray" if system == "seedrl-ray" else "processes",
                    str(spec_path), str(result)]
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        # its own session: on a timeout or an error here, the run and its Ray processes are stopped together
        proc = subprocess.Popen(argv, env={**env, "PYTHONUNBUFFERED": "1"}, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=spec["max_s"] + 600)  # start-up under load took up to 101 s
        except BaseException:
            stop_group(proc)
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"{system} failed (exit {proc.returncode}):\n{stdout[-2000:]}\n{stderr[-4000:]}")
        out = json.loads(result.read_text())
    return {**analyse(out["samples"], spec["frames"]), "system": system, "process_wall_s": time.perf_counter() - t0,
            "load_1min": [load, os.getloadavg()[0]], "num_actors": spec["num_actors"], "seed": spec["seed"],
            **({"versions": out["versions"]} if "versions" in out else {})}


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the run's process group, SIGKILL what is left after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def analyse(samples: list[dict], budget: int) -> dict:
    """Steady-state rates, start-up, return at quarters of ``budget`` and when the return first reached 475."""
    if len(samples) < 2 or samples[-1]["frames"] <= 0:
        raise ValueError(f"too few samples to measure a rate: {len(samples)} (frames {samples[-1]['frames'] if samples else 0})")
    last = samples[-1]
    steady = [s for s in samples if s["frames"] >= last["frames"] / 5]
    first = steady[0] if steady[0] is not last else samples[-2]
    frames = last["frames"] - first["frames"]
    kinds = sorted(set(first["cpu_by_kind"]) | set(last["cpu_by_kind"]))
    by_kind = {k: 1e6 * (last["cpu_by_kind"].get(k, 0.0) - first["cpu_by_kind"].get(k, 0.0)) / frames for k in kinds}
    solved = next((s for s in samples if s["return"] is not None and s["return"] >= SOLVED), None)
    return {
        "frames": last["frames"], "wall_s": last["t"],
        "fps": frames / (last["t"] - first["t"]), "cpu_us_per_frame": 1e6 * (last["cpu"] - first["cpu"]) / frames,
        "cores_busy": (last["cpu"] - first["cpu"]) / (last["t"] - first["t"]),  # = fps x CPU per frame
        "cpu_us_per_frame_by_kind": {k: v for k, v in by_kind.items() if abs(v) >= 0.05},
        "first_frames_s": next(s["t"] for s in samples if s["frames"] > 0),
        "return_at_frames": {f"{q}/4": return_at(samples, "frames", budget * q / 4) for q in (1, 2, 3, 4)},
        "final_return": last["return"],
        "solved_s": solved and solved["t"], "solved_frames": solved and solved["frames"],
        "curve": [[round(s["t"], 2), s["frames"], s["return"]] for s in samples],
    }


def return_at(samples: list[dict], key: str, x: float) -> float | None:
    """The mean return of the last sample with ``key`` <= ``x`` (the curve as a step function)."""
    before = [s for s in samples if s[key] <= x * 1.001]
    return before[-1]["return"] if before else None


# ------------------------------------------------------------------------------------ the parts
def kinds_text(run: dict) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in sorted(run["cpu_us_per_frame_by_kind"].items()))


def part_compare(args, workdir: Path) -> dict:
    runs = []
    for r in range(args.rounds):
        for system in args.systems:
            run = run_system(system, make_spec(args, seed=r), workdir)
            runs.append(run)
            print(f"  round {r} {system:10s} {run['fps']:8.0f} frames/s {run['cpu_us_per_frame']:7.1f} us CPU/frame "
                  f"({kinds_text(run)})  first frames after {run['first_frames_s']:5.1f} s  return "
                  f"{run['return_at_frames']}  (load {run['load_1min'][0]:.1f})", flush=True)
        wall = min(x["wall_s"] for x in runs[-len(args.systems):])  # equal wall time within the round
        for x in runs[-len(args.systems):]:
            x["return_at_common_wall"] = {"wall_s": wall, "return": return_at(
                [{"t": t, "frames": f, "return": ret} for t, f, ret in x["curve"]], "t", wall)}
    table = []
    for system in args.systems:
        mine = [x for x in runs if x["system"] == system]
        med = lambda f: statistics.median(f(x) for x in mine)  # noqa: E731
        table.append({"system": system, "fps": med(lambda x: x["fps"]), "cpu_us_per_frame": med(lambda x: x["cpu_us_per_frame"]),
                      "first_frames_s": med(lambda x: x["first_frames_s"]),
                      "return_at_budget": [x["return_at_frames"]["4/4"] for x in mine],
                      "return_at_common_wall": [x["return_at_common_wall"]["return"] for x in mine],
                      "solved_s": [x["solved_s"] for x in mine]})
    print(f"\nmedian of {args.rounds} rounds, CartPole 2 x {args.envs} envs, batch 32 x T=20, {args.frames:,d} frames:")
    print(f"  {'system':10s} {'frames/s':>9s} {'us CPU/frame':>13s} {'start s':>8s}  return at budget / at common wall")
    for row in table:
        print(f"  {row['system']:10s} {row['fps']:9.0f} {row['cpu_us_per_frame']:13.1f} {row['first_frames_s']:8.1f}  "
              f"{row['return_at_budget']} / {row['return_at_common_wall']}")
    ratios = {}
    for row in table:
        for base in (b for b in table if b["system"].startswith("rllib") and not row["system"].startswith("rllib")):
            ratio = {"fps": row["fps"] / base["fps"], "cpu_per_frame": row["cpu_us_per_frame"] / base["cpu_us_per_frame"]}
            ratios[f"{row['system']}/{base['system']}"] = ratio
            print(f"  {row['system']} / {base['system']}: {ratio['fps']:.2f}x frames/s, "
                  f"{ratio['cpu_per_frame']:.2f}x CPU per frame")
    return {"runs": runs, "median": table, "ratios": ratios}


def part_scaling(args, workdir: Path) -> dict:
    rows = []
    for r in range(args.rounds):
        for n in args.groups:
            run = run_system("seedrl-ray", make_spec(args, num_actors=n, seed=r), workdir)
            run.pop("curve")
            rows.append(run)
            print(f"  round {r} {n} groups {run['fps']:8.0f} frames/s {run['cpu_us_per_frame']:7.1f} us CPU/frame  "
                  f"({kinds_text(run)})  load {run['load_1min'][0]:.1f}", flush=True)
    table = [{"groups": n, **{k: statistics.median(x[k] for x in rows if x["num_actors"] == n)
                              for k in ("fps", "cpu_us_per_frame", "cores_busy")}} for n in args.groups]
    print(f"\nseedrl Ray backend, {args.envs} envs per group, median of {args.rounds} rounds:")
    for row in table:
        print(f"  {row['groups']} groups {row['fps']:9.0f} frames/s {row['cpu_us_per_frame']:7.1f} us CPU/frame "
              f"{row['cores_busy']:5.2f} cores busy")
    return {"runs": rows, "median": table}


def main(argv=None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setup", action="store_true", help="make RLlib's virtualenv (idempotent)")
    ap.add_argument("--part", choices=["compare", "scaling", "all"], default="all")
    ap.add_argument("--systems", type=lambda v: v.split(","), default=list(SYSTEMS),
                    help="comma-separated, of " + ",".join(SYSTEMS + EXTRA_SYSTEMS) + " (default: " + ",".join(SYSTEMS) + ")")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--frames", type=int, default=300_000, help="frame budget of every run")
    ap.add_argument("--max-s", type=float, default=300.0, help="wall-time cap of every run (seconds)")
    ap.add_argument("--envs", type=int, default=16, help="environments per actor group / env runner")
    ap.add_argument("--groups", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2, 4, 8])
    ap.add_argument("--scaling-frames", type=int, default=100_000)
    ap.add_argument("--sample-every-s", type=float, default=1.0, help="seconds between samples of a run")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/seedrl-peers"), help="where the peer venvs live")
    ap.add_argument("--quick", action="store_true", help="one short round of each part: checks that it runs")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--side", nargs=3, metavar=("BACKEND", "SPEC", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.side:
        backend, spec, result = args.side
        Path(result).write_text(json.dumps(seedrl_side(json.loads(Path(spec).read_text()), backend)))
        return None
    if args.setup:
        setup_peer(RLLIB, args.workdir)
    unknown = set(args.systems) - set(SYSTEMS + EXTRA_SYSTEMS)
    if unknown:
        raise SystemExit(f"--systems: unknown {sorted(unknown)}; choose from {','.join(SYSTEMS + EXTRA_SYSTEMS)}")
    rllib = [s for s in args.systems if s.startswith("rllib")]
    if rllib and not (venv_dir(args.workdir, "rllib") / ".seedrl-bench.json").exists():
        if not args.quick:
            raise SystemExit(f"RLlib is not set up in {venv_dir(args.workdir, 'rllib')}: run with --setup first")
        print(f"RLlib is not set up ({venv_dir(args.workdir, 'rllib')}; --setup makes it): seedrl only")
        args.systems = [s for s in args.systems if s not in rllib]
    if args.quick:
        args.rounds, args.frames, args.scaling_frames, args.envs, args.groups = 1, 8_000, 8_000, 8, [1, 2]
        args.sample_every_s = 0.2
    result = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
              "args": {k: str(v) for k, v in vars(args).items()}, "load_start": os.getloadavg()}
    if args.part in ("compare", "all"):
        print("compare: seedrl (Ray, embedded) and RLlib IMPALA, same env, model, losses, CPUs")
        result["compare"] = part_compare(args, args.workdir)
    if args.part in ("scaling", "all"):
        print("scaling: seedrl Ray backend, actor groups 1..N")
        args.frames = args.scaling_frames
        result["scaling"] = part_scaling(args, args.workdir)
    result["load_end"] = os.getloadavg()
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
