"""Shared by the play tests: a CartPole session on a fake clock, its server in a thread, a replay of actions."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("pygame", reason="CartPole's rgb_array rendering needs pygame (pip install seedrl[play])")

from seedrl.play.envs import env_config, make_play_env  # noqa: E402
from seedrl.play.keys import default_key_map  # noqa: E402
from seedrl.play.server import make_server  # noqa: E402
from seedrl.play.session import PlaySession  # noqa: E402
from tests.threaded_server import in_thread  # noqa: E402


class FakeClock:
    """Unix time that moves 1.5 s per reading (so started_at < ended_at, exactly)."""

    def __init__(self, start: float = 1_000_000.0):
        self.now = start

    def __call__(self) -> float:
        self.now += 1.5
        return self.now


def cartpole_session(path, env: str = "CartPole-v1", **kwargs) -> PlaySession:
    play_env = make_play_env(env_config(env))
    key_map = kwargs.pop("key_map", None) or default_key_map(play_env.env.action_space, play_env.meanings)
    return PlaySession(play_env, path, key_map, clock=kwargs.pop("clock", FakeClock()), **kwargs)


def replay(env_id: str, seed: int, actions) -> tuple[np.ndarray, list[float], bool]:
    """(observations o_0..o_N, rewards, terminated) of a fresh env reset with ``seed`` and given ``actions``."""
    env = gym.make(env_id)
    obs, _ = env.reset(seed=seed)
    seen, rewards, terminated = [obs], [], False
    for a in actions:
        obs, r, terminated, truncated, _ = env.step(int(a))
        seen.append(obs)
        rewards.append(float(r))
    env.close()
    return np.stack(seen), rewards, terminated


@contextlib.contextmanager
def served(session: PlaySession):
    """``session``'s server on a free port, in a thread; yields its base URL (``http://127.0.0.1:P``).
    Leaving stops the server and closes the session."""
    try:
        with in_thread(make_server(session, 0, "CartPole-v1"), poll_interval=0.05) as port:
            yield f"http://127.0.0.1:{port}"
    finally:
        session.close()


@contextlib.contextmanager
def play_process(*argv: str):
    """``seedrl play ARGV --port 0`` as a process; yields ``(process, base URL)`` read from its banner.
    Leaving kills it if it still runs."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from seedrl.cli import main; sys.exit(main())", "play", *argv,
         "--port", "0"], env={**os.environ, "PYTHONPATH": src}, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stderr.readline()
        assert " on http://127.0.0.1:" in banner, banner
        yield proc, banner.split(" on ", 1)[1].split()[0].rstrip("/")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
