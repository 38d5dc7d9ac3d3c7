"""End-to-end Atari Pong training speed: seedrl against peer RL systems, one at a time.

Every system trains Pong (84x84 grey, frame stack 4, frame skip 4, up to 30 no-ops,
sticky actions 0.25 where the peer can be given them) for ``--minutes`` of wall time;
frames/s is measured over the last ``--window`` seconds from the system's own counters:

* seedrl: ``<run>/metrics.jsonl`` rows (``frames``; their ``fps`` field is reported too);
* CleanRL ``ppo_atari_envpool.py``: one ``SPS:`` line per PPO update of
  ``num_envs x num_steps`` agent steps (x4 emulator frames);
* Sample Factory 2 (APPO): ``Total num frames`` of its ``Fps is ...`` lines (emulator frames;
  its own ``60 sec`` figure is reported too).

Each line/row is time-stamped here when it appears. Systems run sequentially, never two at
once; torch gets 2 intra-op threads in every learner. The machine may be shared, so the
1-minute load average and the machine's CPU use by other processes are recorded for every
measurement window.

Peers are installed from PyPI into their own virtualenvs outside the repository (default
``/tmp/seedrl-peers``); nothing of theirs is copied into this repository.

    .venv/bin/python benchmarks/peers_pong.py --setup                 # make the peer venvs (idempotent)
    .venv/bin/python benchmarks/peers_pong.py --run                   # seedrl, cleanrl, sample-factory (+async)
    .venv/bin/python benchmarks/peers_pong.py --run --round 2 --merge # repeat; the best round of each counts
    .venv/bin/python benchmarks/peers_pong.py --run --sweep --systems "" --minutes 2.5 --merge  # seedrl settings
    .venv/bin/python benchmarks/peers_pong.py --run --systems seedrl:a3_e16_b32 --merge
    .venv/bin/python benchmarks/peers_pong.py --table                 # print the tables of the JSON

``--quiet-load X`` waits (up to ``--quiet-wait`` s) for the 1-minute load average to drop
below X before each system starts. Each result row also gives the CPU the system's own
processes got in the window (``cpu.cores_used``) and ``frames_per_cpu_s``, a figure that
contention from other processes distorts much less than frames/s.

Results: ``benchmarks/results/peers_pong.json`` (``--out``); logs stay under the workdir.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import pathlib
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from typing import Callable

REPO = pathlib.Path(__file__).resolve().parents[1]
PEERS = REPO / "benchmarks" / "peers"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "peers_pong.json"
SEEDRL_CONFIG = "configs/pong_impala.yaml"
FRAME_SKIP = 4
TORCH_THREADS = 2
STICKY = 0.25


def _torch_spec() -> str:
    """The torch release of seedrl's own venv, so every system runs the same torch build."""
    try:
        return "torch==" + importlib.metadata.version("torch").split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        return "torch"


# ---------------------------------------------------------------------------------------------
# peer virtualenvs

@dataclass
class PeerSetup:
    name: str
    packages: list[str]
    python: str = "python3.11"
    extra: Callable[[pathlib.Path, pathlib.Path], dict] | None = None  # (venv, workdir) -> info
    report: list[str] = field(default_factory=list)  # distributions whose versions are recorded


def _fetch_cleanrl_script(venv: pathlib.Path, workdir: pathlib.Path) -> dict:
    """CleanRL's PyPI wheel ships its single-file scripts; take ppo_atari_envpool.py from it.

    The wheel itself is not installed: cleanrl 1.2.0 requires Python < 3.11 and pulls wandb,
    stable-baselines3 and pygame, none of which the script needs. The wheel is pure Python,
    so it is downloaded for the 3.10 tag and only unzipped.
    """
    dest = workdir / "cleanrl-src"
    script = dest / "ppo_atari_envpool.py"
    cmd = [str(venv / "bin" / "pip"), "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.10",
           "-d", str(dest), "cleanrl==1.2.0"]
    if not script.exists():
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(cmd, check=True)
        wheel = next(dest.glob("cleanrl-1.2.0-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            script.write_bytes(zf.read("cleanrl/ppo_atari_envpool.py"))
    return {"script": str(script), "script_from": " ".join(shlex.quote(c) for c in cmd) + "  # then unzip cleanrl/ppo_atari_envpool.py"}


SETUPS = {
    "cleanrl": PeerSetup(
        "cleanrl",
        [_torch_spec(), "envpool==0.8.4", "gym==0.23.1", "numpy==1.26.4", "tensorboard"],
        extra=_fetch_cleanrl_script,
        report=["torch", "envpool", "gym", "numpy"],
    ),
    "sample-factory": PeerSetup(
        "sample-factory",
        [_torch_spec(), "sample-factory==2.1.1", "gymnasium==0.29.1", "ale-py==0.9.1", "numpy==1.26.4"],
        report=["sample-factory", "torch", "gymnasium", "ale-py", "numpy", "opencv-python"],
    ),
}


def venv_dir(workdir: pathlib.Path, peer: str) -> pathlib.Path:
    return workdir / "venvs" / peer


def versions_in(python: pathlib.Path, dists: list[str]) -> dict[str, str | None]:
    code = ("import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            "for d in sys.argv[1:]:\n"
            "    try: out[d] = m.version(d)\n"
            "    except m.PackageNotFoundError: out[d] = None\n"
            "print(json.dumps(out))")
    res = subprocess.run([str(python), "-c", code, *dists], capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def setup_peer(spec: PeerSetup, workdir: pathlib.Path) -> dict:
    venv = venv_dir(workdir, spec.name)
    stamp = venv / ".seedrl-bench.json"
    key = hashlib.sha256(json.dumps([spec.python, spec.packages]).encode()).hexdigest()[:16]
    if stamp.exists():
        info = json.loads(stamp.read_text())
        if info.get("key") == key and (spec.extra is None or pathlib.Path(info.get("script", "/")).exists()):
            print(f"[setup] {spec.name}: up to date ({venv})")
            return info
    python = shutil.which(spec.python) or sys.executable
    commands = [[python, "-m", "venv", str(venv)],
                [str(venv / "bin" / "pip"), "install", "-q", *spec.packages]]
    if not (venv / "bin" / "python").exists():
        print(f"[setup] {spec.name}: {shlex.join(commands[0])}")
        subprocess.run(commands[0], check=True)
    print(f"[setup] {spec.name}: {shlex.join(commands[1])}")
    subprocess.run(commands[1], check=True)
    info = {"key": key, "venv": str(venv), "install": [shlex.join(c) for c in commands]}
    if spec.extra is not None:
        info.update(spec.extra(venv, workdir))
    info["versions"] = versions_in(venv / "bin" / "python", spec.report)
    info["python"] = subprocess.run([str(venv / "bin" / "python"), "-c", "import platform; print(platform.python_version())"],
                                    capture_output=True, text=True, check=True).stdout.strip()
    stamp.write_text(json.dumps(info, indent=2))
    print(f"[setup] {spec.name}: {info['versions']}")
    return info


def peer_info(workdir: pathlib.Path, peer: str) -> dict:
    stamp = venv_dir(workdir, peer) / ".seedrl-bench.json"
    if not stamp.exists():
        raise SystemExit(f"peer {peer!r} is not set up: run with --setup first (workdir {workdir})")
    return json.loads(stamp.read_text())


# ---------------------------------------------------------------------------------------------
# systems to run

SEEDRL_VARIANTS: dict[str, list[str]] = {
    # name: overrides on top of configs/pong_impala.yaml (actors 2, envs 8, batch 32, constant lr, envpool)
    "default": [],
    "gymnasium": ["env.backend=gymnasium"],
    "a3": ["runtime.num_actors=3"],
    "a4": ["runtime.num_actors=4"],
    "b32": ["runtime.batch_size=32"],
    "e16_b32": ["env.num_envs=16", "runtime.batch_size=32"],
    "a3_e16_b32": ["runtime.num_actors=3", "env.num_envs=16", "runtime.batch_size=32"],
    # the comparison's 2 torch threads, whatever the config file says (it moved to 1 on 2026-11-27)
    "tt2": ["runtime.torch_threads=2"],
    # outside the 2-thread rule of the comparison: shows what OpenMP spinning costs on a loaded machine
    "t1": ["runtime.torch_threads=1"],
}


@dataclass
class Launch:
    name: str
    system: str
    version: dict
    settings: str
    argv: list[str]
    cwd: pathlib.Path
    env: dict[str, str]
    parse_line: Callable[[str], dict | None] | None = None  # log line -> {"frames": ..., ...}
    poll: Callable[[], list[dict]] | None = None  # new counter rows since the last call
    own_key: str | None = None  # a field of the samples holding the system's own frames/s figure


def seedrl_version() -> dict:
    out = {}
    for d in ("seedrl", "torch", "envpool", "ale-py", "gymnasium"):
        try:
            out[d] = importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            out[d] = None
    return out


def metrics_poller(metrics: pathlib.Path, to_sample: Callable[[dict], dict]) -> Callable[[], list[dict]]:
    """A ``Launch.poll`` over a seedrl run's growing metrics.jsonl: each new complete row through ``to_sample``."""
    state = {"offset": 0, "buf": ""}

    def poll() -> list[dict]:
        if not metrics.exists():
            return []
        with metrics.open() as f:
            f.seek(state["offset"])
            data = f.read()
            state["offset"] = f.tell()
        state["buf"] += data
        *lines, state["buf"] = state["buf"].split("\n")
        return [to_sample(json.loads(line)) for line in lines if line.strip()]
    return poll


def seedrl_launch(variant: str, run_dir: pathlib.Path) -> Launch:
    overrides = SEEDRL_VARIANTS[variant]
    argv = [str(REPO / ".venv" / "bin" / "seedrl"), "run", SEEDRL_CONFIG, "name=bench", f"out_dir={run_dir}",
            "total_frames=1_000_000_000", "log.progress=false", "log.every_s=5", *overrides]
    poll = metrics_poller(run_dir / "bench" / "metrics.jsonl", lambda r: {
        "frames": r["frames"], "own_fps": r.get("fps"), "inference_batch": r.get("inference_batch"),
        "policy_lag": r.get("policy_lag")})

    settings = "IMPALA/V-trace; " + (", ".join(overrides) if overrides else "configs/pong_impala.yaml as is") + \
        " (config: 2 actors x 8 envs, batch 32 x T=20, envpool; torch_threads as the config file says)"
    return Launch(f"seedrl:{variant}", "seedrl", seedrl_version(), settings, argv, REPO,
                  {**os.environ, "PYTHONUNBUFFERED": "1"}, poll=poll, own_key="own_fps")


CLEANRL_ARGS = ["--env-id", "Pong-v5", "--num-envs", "8", "--num-steps", "128", "--total-timesteps", "1000000000",
                "--cuda", "False", "--track", "False", "--capture-video", "False", "--seed", "1"]


def cleanrl_launch(workdir: pathlib.Path, run_dir: pathlib.Path, threads: int = TORCH_THREADS) -> Launch:
    info = peer_info(workdir, "cleanrl")
    steps_per_update = 8 * 128
    state = {"updates": 0}

    def parse(line: str) -> dict | None:
        m = re.match(r"SPS:\s*(\d+)", line)
        if not m:
            return None
        state["updates"] += 1
        return {"frames": state["updates"] * steps_per_update * FRAME_SKIP, "own_cumulative_fps": int(m.group(1)) * FRAME_SKIP}

    argv = [str(pathlib.Path(info["venv"]) / "bin" / "python"), str(PEERS / "cleanrl_driver.py"), info["script"], *CLEANRL_ARGS]
    settings = ("PPO (sync): 8 envs x 128 steps, 4 epochs x 4 minibatches; envpool Pong-v5 with episodic_life=True, "
                f"reward_clip=True (script's own), sticky {STICKY} via driver; torch threads {threads} via driver")
    name = "cleanrl" if threads == TORCH_THREADS else f"cleanrl-t{threads}"
    return Launch(name, "cleanrl ppo_atari_envpool.py", {"cleanrl": "1.2.0 (script)", **info["versions"]}, settings,
                  argv, run_dir, {**os.environ, "PYTHONUNBUFFERED": "1", "PEER_TORCH_THREADS": str(threads),
                                  "PEER_STICKY": str(STICKY)}, parse_line=parse)


_SF_FPS = re.compile(r"Fps is \(10 sec: ([\d.na]+), 60 sec: ([\d.na]+), 300 sec: ([\d.na]+)\)\. Total num frames: (\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def sf_launch(workdir: pathlib.Path, run_dir: pathlib.Path, async_rl: bool) -> Launch:
    info = peer_info(workdir, "sample-factory")

    def parse(line: str) -> dict | None:
        m = _SF_FPS.search(_ANSI.sub("", line))
        if not m:
            return None
        own = float(m.group(2))
        return {"frames": int(m.group(4)), "own_fps": own if own == own else None}

    args = ["--env=atari_pong", "--device=cpu", "--experiment=bench", f"--train_dir={run_dir / 'train_dir'}",
            "--with_wandb=False", "--train_for_env_steps=10000000000", f"--async_rl={async_rl}"]
    argv = [str(pathlib.Path(info["venv"]) / "bin" / "python"), str(PEERS / "sf_driver.py"), *args]
    settings = (f"APPO ({'async_rl=True' if async_rl else 'sync, async_rl=False'}): sf_examples.atari defaults, "
                "8 workers x 1 env, rollout 128, batch 256 x 4 minibatches x 4 epochs; gymnasium PongNoFrameskip-v4 + "
                f"SF's Python wrappers (episodic life, reward clip); sticky {STICKY} and learner torch threads "
                f"{TORCH_THREADS} via driver")
    return Launch("sample-factory-async" if async_rl else "sample-factory", "sample-factory APPO", info["versions"],
                  settings, argv, run_dir, {**os.environ, "PYTHONUNBUFFERED": "1", "PEER_TORCH_THREADS": str(TORCH_THREADS),
                                            "PEER_STICKY": str(STICKY)}, parse_line=parse, own_key="own_fps")


def make_launch(name: str, workdir: pathlib.Path, run_dir: pathlib.Path) -> Launch:
    if name == "seedrl" or name.startswith("seedrl:"):
        return seedrl_launch(name.partition(":")[2] or "default", run_dir)
    if name == "cleanrl":
        return cleanrl_launch(workdir, run_dir)
    if name == "cleanrl-t1":  # outside the 2-thread rule, next to seedrl:t1
        return cleanrl_launch(workdir, run_dir, threads=1)
    if name in ("sample-factory", "sf"):
        return sf_launch(workdir, run_dir, async_rl=False)
    if name in ("sample-factory-async", "sf-async"):
        return sf_launch(workdir, run_dir, async_rl=True)
    raise SystemExit(f"unknown system {name!r}")


# ---------------------------------------------------------------------------------------------
# measuring

def _proc_cpu(pgid: int) -> dict[int, tuple[str, float]]:
    """pid -> (label, CPU seconds) for every live process of the process group."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = pathlib.Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        if int(fields[2]) != pgid:  # fields[2] is pgrp
            continue
        out[int(entry)] = (comm, (int(fields[11]) + int(fields[12])) / tick)
    return out


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    parts = [int(x) for x in pathlib.Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = parts[3] + parts[4]
    return (sum(parts[:8]) - idle) / tick, sum(parts[:8]) / tick


def _cpu_window(a: dict, b: dict, wall: float) -> dict:
    per = []
    for pid, (label, cpu_b) in b.items():
        if pid in a:
            per.append({"pid": pid, "comm": label, "cores": round((cpu_b - a[pid][1]) / wall, 3)})
    per.sort(key=lambda r: -r["cores"])
    return {"cores_used": round(sum(r["cores"] for r in per), 3), "per_process": per[:12]}


def _default_sigint() -> None:
    # A shell's background job starts with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler; the SIGINT that stops each run must reach it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_quiet(max_load: float | None, max_wait_s: float) -> float:
    """Wait (up to ``max_wait_s``) for the 1-minute load average to drop below ``max_load``."""
    start = time.monotonic()
    if max_load is not None:
        while os.getloadavg()[0] > max_load and time.monotonic() - start < max_wait_s:
            time.sleep(5)
    return round(time.monotonic() - start, 1)


def run_one(launch: Launch, minutes: float, window: float, log_dir: pathlib.Path) -> dict:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{launch.name.replace(':', '_')}.log"
    samples: list[dict] = []
    lock = threading.Lock()
    print(f"\n[run] {launch.name}: {shlex.join(launch.argv)}\n[run]   cwd {launch.cwd}, log {log_path}", flush=True)
    load_launch = os.getloadavg()[0]
    t_launch = time.monotonic()
    proc = subprocess.Popen(launch.argv, cwd=launch.cwd, env=launch.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, text=True, errors="replace", bufsize=1,
                            preexec_fn=_default_sigint)
    pgid = proc.pid
    log_f = log_path.open("w")
    tail: list[str] = []

    def reader() -> None:
        for line in proc.stdout:
            now = time.monotonic()
            log_f.write(f"{now - t_launch:9.2f} | {line}")
            tail.append(line.rstrip())
            del tail[:-30]
            if launch.parse_line is not None:
                rec = launch.parse_line(line)
                if rec is not None:
                    with lock:
                        samples.append({"t": now, **rec})
        log_f.flush()

    rt = threading.Thread(target=reader, daemon=True)
    rt.start()
    deadline = t_launch + minutes * 60
    window_start = deadline - window
    snap_a = mach_a = None
    load_window_start = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if launch.poll is not None:
                now = time.monotonic()
                for rec in launch.poll():
                    with lock:
                        samples.append({"t": now, **rec})
            if snap_a is None and time.monotonic() >= window_start:
                snap_a, mach_a, t_a = _proc_cpu(pgid), _machine_cpu(), time.monotonic()
                load_window_start = os.getloadavg()[0]
            time.sleep(0.5)
        if launch.poll is not None:
            now = time.monotonic()
            for rec in launch.poll():
                samples.append({"t": now, **rec})
        t_end = time.monotonic()
        snap_b, mach_b = _proc_cpu(pgid), _machine_cpu()
        load_end = os.getloadavg()[0]
        exited_early = proc.poll() is not None
    finally:
        stopped_by, t_stop = None, time.monotonic()
        if proc.poll() is None:
            stopped_by = "SIGINT"
            proc.send_signal(signal.SIGINT)  # seedrl: checkpoint and clean exit; peers: their own shutdown
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                stopped_by = "SIGTERM (SIGINT ignored for 120 s)"
                os.killpg(pgid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    stopped_by = "SIGKILL"
                    os.killpg(pgid, signal.SIGKILL)
                    proc.wait()
        stop_s = round(time.monotonic() - t_stop, 1)
        try:  # leftover children of the run (its own process group only)
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        rt.join(timeout=10)
        log_f.close()

    with lock:
        in_window = [s for s in samples if window_start - 1e-6 <= s["t"] <= t_end]
        before = [s for s in samples if s["t"] < window_start - 1e-6]
    result: dict = {
        "name": launch.name, "system": launch.system, "version": launch.version, "settings": launch.settings,
        "command": shlex.join(launch.argv), "cwd": str(launch.cwd), "log": str(log_path),
        "minutes": minutes, "window_s": window, "returncode": proc.returncode, "exited_early": exited_early,
        "stopped_by": stopped_by, "stop_s": stop_s,
        "load_avg_1min": {"launch": load_launch, "window_start": load_window_start, "end": load_end},
        "total_frames_seen": samples[-1]["frames"] if samples else 0,
    }
    if exited_early:
        result["log_tail"] = tail[-15:]
    # From the last counter reading before the window to the last one in it: for coarse
    # counters (one CleanRL line per PPO update) the span is a little over the window.
    points = before[-1:] + in_window
    if len(points) >= 2 and points[-1]["t"] > points[0]["t"]:
        a, b = points[0], points[-1]
        result["frames_per_s"] = round((b["frames"] - a["frames"]) / (b["t"] - a["t"]), 1)
        result["window_points"] = len(points)
        result["window_span_s"] = round(b["t"] - a["t"], 1)
    else:
        result["frames_per_s"] = None
    result["counter_samples"] = [[round(s["t"] - t_launch, 2), s["frames"]] for s in samples]
    # score rows (benchmarks/atari_learning.py's launches add a "return" to some samples)
    result["return_samples"] = [[round(s["t"] - t_launch, 2), s["frames"], s["return"]] for s in samples if "return" in s]
    if launch.own_key:
        own = [s[launch.own_key] for s in in_window if s.get(launch.own_key) is not None]
        if launch.system == "seedrl":  # mean of its per-interval fps rows in the window
            result["own_frames_per_s"] = round(sum(own[1:]) / len(own[1:]), 1) if len(own) > 1 else None
        else:  # Sample Factory's trailing 60 s figure at the end
            result["own_frames_per_s"] = own[-1] if own else None
    if launch.system == "seedrl" and in_window:
        for key in ("inference_batch", "policy_lag"):
            vals = [s[key] for s in in_window if s.get(key) is not None]
            if vals:
                result[f"mean_{key}"] = round(sum(vals) / len(vals), 2)
    if snap_a is not None:
        wall = t_end - t_a
        result["cpu"] = _cpu_window(snap_a, snap_b, wall)
        busy = (mach_b[0] - mach_a[0]) / wall
        result["cpu"]["machine_cores_busy"] = round(busy, 3)
        result["cpu"]["other_processes_cores"] = round(max(0.0, busy - result["cpu"]["cores_used"]), 3)
        if result["frames_per_s"] and result["cpu"]["cores_used"] > 0.05:
            # contention-robust companion figure: frames per CPU-second the system actually got
            result["frames_per_cpu_s"] = round(result["frames_per_s"] / result["cpu"]["cores_used"], 1)
    fps = result["frames_per_s"]
    print(f"[run] {launch.name}: {fps if fps is not None else 'n/a'} frames/s over the last {window:.0f} s "
          f"(load {load_launch:.2f} -> {load_end:.2f}; other processes "
          f"{result.get('cpu', {}).get('other_processes_cores', 'n/a')} cores)", flush=True)
    return result


# ---------------------------------------------------------------------------------------------
# reporting

# runs with 1 torch thread: shown for information, left out of "fastest peer" and "seedrl best"
OFF_RULE = {"seedrl:t1", "cleanrl-t1"}


def summarize(results: list[dict]) -> dict:
    """Best round of each system (the least disturbed on a shared machine), ratios to the fastest peer."""
    best: dict[str, dict] = {}
    for r in results:
        r.setdefault("round", 1)
        if r.get("frames_per_s") and (r["name"] not in best or r["frames_per_s"] > best[r["name"]]["frames_per_s"]):
            best[r["name"]] = r
    peers = [r for r in best.values() if r["system"] != "seedrl" and r["name"] not in OFF_RULE]
    fastest = max(peers, key=lambda r: r["frames_per_s"], default=None)
    for r in results:
        r["ratio_to_fastest_peer"] = (round(r["frames_per_s"] / fastest["frames_per_s"], 3)
                                      if fastest and r.get("frames_per_s") else None)
    seedrl_rows = [r for r in best.values() if r["system"] == "seedrl" and r["name"] not in OFF_RULE]
    seedrl_best = max(seedrl_rows, key=lambda r: r["frames_per_s"], default=None)
    rows = []
    for name, r in sorted(best.items(), key=lambda kv: -kv[1]["frames_per_s"]):
        rounds = [x for x in results if x["name"] == name and x.get("frames_per_s")]
        rows.append({"name": name, "system": r["system"], "version": r["version"], "settings": r["settings"],
                     "frames_per_s": r["frames_per_s"], "round": r["round"],
                     "all_rounds_frames_per_s": [x["frames_per_s"] for x in rounds],
                     "frames_per_cpu_s": r.get("frames_per_cpu_s"),
                     "all_rounds_frames_per_cpu_s": [x.get("frames_per_cpu_s") for x in rounds],
                     "ratio_to_fastest_peer": r["ratio_to_fastest_peer"]})
    return {"fastest_peer": fastest["name"] if fastest else None,
            "seedrl_best": seedrl_best["name"] if seedrl_best else None, "rows": rows}


def fmt_summary(rows: list[dict]) -> str:
    lines = ["| system | frames/s (best round) | all rounds | vs fastest peer | frames/CPU-s (best round) | all rounds |",
             "| --- | ---: | --- | ---: | ---: | --- |"]
    for r in rows:
        ratio = f"{r['ratio_to_fastest_peer']:.2f}x" if r["ratio_to_fastest_peer"] else "n/a"
        lines.append(f"| {r['name']} | {r['frames_per_s']} | {', '.join(str(x) for x in r['all_rounds_frames_per_s'])} "
                     f"| {ratio} | {r['frames_per_cpu_s']} | {', '.join(str(x) for x in r['all_rounds_frames_per_cpu_s'])} |")
    return "\n".join(lines)


def fmt_table(results: list[dict]) -> str:
    peers = [r for r in results if r["system"] != "seedrl" and r.get("frames_per_s") and r["name"] not in OFF_RULE]
    fastest = max((r["frames_per_s"] for r in peers), default=None)
    lines = ["| system | version | settings | frames/s (last min) | vs fastest peer | cores used | frames/CPU-s "
             "| load 1-min start -> end | other procs (cores) |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    for r in results:
        v = r["version"]
        ver = ", ".join(f"{k} {val}" for k, val in v.items() if val)
        fps = r.get("frames_per_s")
        ratio = f"{fps / fastest:.2f}x" if fps and fastest else "n/a"
        la = r["load_avg_1min"]
        ws = la.get("window_start")
        load = f"{ws:.2f} -> {la['end']:.2f}" if ws is not None else f"{la['launch']:.2f} -> {la['end']:.2f}"
        other = r.get("cpu", {}).get("other_processes_cores", "n/a")
        used = r.get("cpu", {}).get("cores_used", "n/a")
        lines.append(f"| {r['name']} (round {r.get('round', 1)}) | {ver} | {r['settings']} | {fps if fps is not None else 'n/a'} | {ratio} | {used} "
                     f"| {r.get('frames_per_cpu_s', 'n/a')} | {load} | {other} |")
    return "\n".join(lines)


def machine_info() -> dict:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help="create/refresh the peer virtualenvs")
    parser.add_argument("--run", action="store_true", help="run the systems one after another")
    parser.add_argument("--table", action="store_true", help="print the table of the results file")
    parser.add_argument("--systems", default="seedrl,cleanrl,sample-factory,sample-factory-async",
                        help="comma list: seedrl[:VARIANT], cleanrl, cleanrl-t1, sample-factory, sample-factory-async")
    parser.add_argument("--sweep", action="store_true", help=f"add every seedrl variant: {', '.join(SEEDRL_VARIANTS)}")
    parser.add_argument("--peers", default="cleanrl,sample-factory", help="peers for --setup")
    parser.add_argument("--minutes", type=float, default=4.0, help="wall time each system trains")
    parser.add_argument("--window", type=float, default=60.0, help="seconds at the end over which frames/s is measured")
    parser.add_argument("--workdir", default=os.environ.get("SEEDRL_PEERS_DIR", "/tmp/seedrl-peers"),
                        help="peer venvs, run directories and logs (outside the repository)")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--merge", action="store_true", help="keep entries of --out that this run does not redo")
    parser.add_argument("--quiet-load", type=float, default=None,
                        help="before each system, wait until the 1-min load average is below this (shared machine)")
    parser.add_argument("--quiet-wait", type=float, default=300.0, help="at most this many seconds of --quiet-load waiting")
    parser.add_argument("--round", type=int, default=1,
                        help="label of this pass; --merge keeps other rounds' rows of the same system (repeats)")
    parser.add_argument("--keep-runs", action="store_true", help="keep the run directories (checkpoints, tb events)")
    args = parser.parse_args()
    workdir = pathlib.Path(args.workdir).resolve()
    if REPO in workdir.parents or workdir == REPO:
        raise SystemExit("--workdir must be outside the repository")
    out = pathlib.Path(args.out)
    if not (args.setup or args.run or args.table):
        parser.error("give --setup, --run and/or --table")

    if args.setup:
        for peer in [p for p in args.peers.split(",") if p]:
            setup_peer(SETUPS[peer], workdir)

    if args.run:
        names = [s for s in args.systems.split(",") if s]
        if args.sweep:
            names += [f"seedrl:{v}" for v in SEEDRL_VARIANTS if f"seedrl:{v}" not in names and not (v == "default" and "seedrl" in names)]
        stamp = time.strftime("%Y%m%d-%H%M%S")
        log_dir = workdir / "logs" / stamp
        results = []
        for name in names:
            runs_root = workdir / "runs"
            runs_root.mkdir(parents=True, exist_ok=True)
            run_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"{name.replace(':', '_')}-", dir=runs_root))
            waited = wait_for_quiet(args.quiet_load, args.quiet_wait)
            try:
                results.append(run_one(make_launch(name, workdir, run_dir), args.minutes, args.window, log_dir))
                results[-1]["waited_for_quiet_s"] = waited
                results[-1]["round"] = args.round
            finally:
                if not args.keep_runs:
                    shutil.rmtree(run_dir, ignore_errors=True)
        previous = []
        if args.merge and out.exists():
            done = {(r["name"], r["round"]) for r in results}
            previous = [r for r in json.loads(out.read_text())["results"] if (r["name"], r.get("round", 1)) not in done]
        all_results = previous + results
        summary = summarize(all_results)
        payload = {
            "machine": machine_info(),
            "measured": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "method": {"minutes_per_system": sorted({r["minutes"] for r in all_results}), "window_s": args.window,
                       "frame_skip": FRAME_SKIP, "torch_threads": TORCH_THREADS, "sticky_action_prob": STICKY,
                       "sequential": True, "best_of_rounds": True},
            "fastest_peer": summary["fastest_peer"],
            "seedrl_best": summary["seedrl_best"],
            "summary": summary["rows"],
            "results": all_results,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {out}")

    if args.run or args.table:
        data = json.loads(out.read_text())
        print(fmt_table(data["results"]))
        print()
        print(fmt_summary(summarize(data["results"])["rows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
