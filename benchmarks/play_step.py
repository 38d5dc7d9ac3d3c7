"""``seedrl play``: how long one step takes on the server, i.e. the highest frame rate a page can ask for.

For each environment, a session recording into a temporary dataset serves ``--steps`` steps, timed
three ways (medians and 95th percentiles, in ms): ``session.step`` alone (environment step + recording),
the frame (``with_frame``: ``env.render()`` or the emulator's screen, then PNG at compress level 1),
and the whole ``POST /api/step`` round trip over HTTP on 127.0.0.1 (what the page waits for before
its next frame). Episodes that end are reset as the page would (the next step starts the next one). Results: ``benchmarks/results/play_step.json``.

    python benchmarks/play_step.py --steps 300
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from seedrl.play.envs import env_config, make_play_env
from seedrl.play.keys import default_key_map
from seedrl.play.server import make_server, with_frame
from seedrl.play.session import PlaySession


def _stats(ms: list[float]) -> dict:
    ms = sorted(ms)
    return {"median_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2)}


def measure(env: str, steps: int, root: Path) -> dict:
    play_env = make_play_env(env_config(env))
    key_map = default_key_map(play_env.env.action_space, play_env.meanings)
    session = PlaySession(play_env, root / env.replace("/", "_"), key_map, player="bench")
    held = [key_map.keys[0]]
    shape = list(play_env.frame().shape)
    step_ms, frame_ms, http_ms = [], [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        view = session.step(held)
        t1 = time.perf_counter()
        with_frame(session, view)
        t2 = time.perf_counter()
        step_ms.append(1e3 * (t1 - t0))
        frame_ms.append(1e3 * (t2 - t1))
    server = make_server(session, 0, env)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/step"
    body = json.dumps({"keys": held}).encode()
    try:
        for _ in range(steps):
            t0 = time.perf_counter()
            with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as r:
                r.read()
            http_ms.append(1e3 * (time.perf_counter() - t0))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        session.close()
    http = _stats(http_ms)
    return {"env": env, "kind": play_env.config.kind, "frame_shape": shape, "steps": steps,
            "episodes_written": len(session.saved),
            "session_step": _stats(step_ms), "frame": _stats(frame_ms), "http_round_trip": http,
            "max_fps_at_median": round(1000 / http["median_ms"], 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--envs", default="CartPole-v1,Pong")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "play_step.json"))
    args = p.parse_args()
    result: dict = {"load_average_before": [round(x, 2) for x in os.getloadavg()], "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for env in args.envs.split(","):
            result["runs"].append(measure(env, args.steps, Path(tmp)))
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
