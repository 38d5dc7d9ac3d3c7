"""SIGTERM / SIGINT stop a game run cleanly: checkpoint saved, actors stopped, shared memory freed."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from seedrl.config import load_config
from seedrl.report.metrics import read_metrics
from seedrl.runtime.checkpoint import latest_checkpoint, load_checkpoint
from seedrl.runtime.config import TrainConfig
from seedrl.runtime.loop import train

CARTPOLE = {
    "name": "t", "total_frames": 10_000_000,
    "env": {"kind": "gym", "id": "CartPole-v1", "num_envs": 4},
    "model": {"torso": "mlp", "hidden": [32]},
    "runtime": {"num_actors": 2, "unroll_length": 10, "batch_size": 8, "torch_threads": 1},
    "log": {"progress": False, "tensorboard": False, "every_s": 0.2, "checkpoint_every": 1000},
}

# A run in its own process, as `seedrl run ... &` would start it; it reports its actors and
# shared memory once training is under way, then trains until a signal stops it.
SCRIPT = """
import json, sys
from seedrl.config import load_config
from seedrl.report.metrics import read_metrics
from seedrl.runtime.config import TrainConfig
from seedrl.runtime.loop import train

def on_update(row, backend):
    if row["updates"] == 3:
        print("READY " + json.dumps({"shm": backend._shared.name, "pids": backend.pids()}), flush=True)

res = train(load_config(TrainConfig, json.loads(sys.argv[1])), on_update=on_update)
print("RESULT " + json.dumps({"interrupted": res.interrupted, "signal": res.stop_signal, "updates": res.updates,
                              "checkpoint": str(res.checkpoint)}), flush=True)
"""


def _config(tmp_path: Path, **over) -> dict:
    cfg = json.loads(json.dumps(CARTPOLE))
    cfg["out_dir"] = str(tmp_path)
    cfg.update(over)
    return cfg


def _lines(proc: subprocess.Popen) -> queue.Queue:
    q: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _expect(q: queue.Queue, prefix: str, timeout: float, seen: list[str]) -> dict:
    while True:
        line = q.get(timeout=timeout)
        if line is None:
            raise AssertionError(f"process ended before {prefix!r}:\n{''.join(seen)}")
        seen.append(line)
        if line.startswith(prefix + " "):
            return json.loads(line[len(prefix) + 1:])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_stops_a_background_run_cleanly_and_it_resumes(tmp_path):
    cfg = _config(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    seen: list[str] = []
    try:
        q = _lines(proc)
        ready = _expect(q, "READY", 120, seen)
        assert len(ready["pids"]) == 2 and all(_alive(p) for p in ready["pids"])
        assert Path("/dev/shm", ready["shm"]).exists() or not Path("/dev/shm").is_dir()
        proc.send_signal(signal.SIGTERM)
        result = _expect(q, "RESULT", 60, seen)
        assert proc.wait(timeout=30) == 0, "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert result["interrupted"] and result["signal"] == "SIGTERM" and result["updates"] >= 3
    # checkpoint saved, actors gone, shared memory released, curves written
    ckpt = latest_checkpoint(tmp_path / "t")
    assert ckpt is not None and str(ckpt) == result["checkpoint"]
    assert load_checkpoint(ckpt)["counters"]["updates"] == result["updates"]
    assert not any(_alive(p) for p in ready["pids"])
    assert not Path("/dev/shm", ready["shm"]).exists()
    assert (tmp_path / "t" / "curves.png").exists()

    before = read_metrics(tmp_path / "t" / "metrics.jsonl")
    threads = {**cfg["runtime"], "backend": "threads", "num_actors": 1}  # the checkpoint is the same for both backends
    resumed = train(load_config(TrainConfig, {**cfg, "runtime": threads}), resume=True, max_updates=result["updates"] + 2)
    assert not resumed.interrupted and resumed.stop_signal is None
    assert resumed.updates == result["updates"] + 2
    assert load_checkpoint(resumed.checkpoint)["counters"]["resumes"] == 1
    after = read_metrics(tmp_path / "t" / "metrics.jsonl")[len(before):]  # the run's clock goes on
    assert after and min(r["elapsed_s"] for r in after) >= before[-1]["elapsed_s"] > 0
    assert all(r["time"] >= before[-1]["time"] for r in after)


def test_sigint_in_process_stops_and_the_previous_handlers_come_back(tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    cfg = load_config(TrainConfig, _config(tmp_path, runtime={**CARTPOLE["runtime"], "backend": "threads", "num_actors": 1}))

    def on_update(row, backend):
        if row["updates"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # handled by train: a stop request, not an exception

    result = train(cfg, on_update=on_update)
    assert result.interrupted and result.stop_signal == "SIGINT" and result.updates == 2
    assert load_checkpoint(result.checkpoint)["counters"]["updates"] == 2
    assert {s: signal.getsignal(s) for s in before} == before


def test_no_handlers_outside_the_main_thread(tmp_path):
    cfg = load_config(TrainConfig, _config(tmp_path, runtime={**CARTPOLE["runtime"], "backend": "threads", "num_actors": 1}))
    out: list = []
    t = threading.Thread(target=lambda: out.append(train(cfg, max_updates=2)))
    t.start()
    t.join(120)
    assert out and out[0].updates == 2 and not out[0].interrupted


if not sys.platform.startswith("linux"):  # /dev/shm and the signal semantics above are Linux's
    pytestmark = pytest.mark.skip("Linux only")
