"""``seedrl demo``: the data layer end to end on a real Gymnasium environment.

Records episodes of an agent acting in a Gymnasium environment into an RLDS
store, prints a summary, exports the store to a TFDS directory (no
TensorFlow needed), imports it back and checks the round trip is bit-exact.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from seedrl.config import load_config, save_config


@dataclass
class DemoConfig:
    """Settings of ``seedrl demo`` (``configs/demo.yaml``)."""

    env_id: str = field(default="CartPole-v1", metadata={"help": "Gymnasium environment id"})
    episodes: int = field(default=50, metadata={"help": "episodes to record", "min": 1})
    max_episode_steps: int = field(default=200, metadata={"help": "time limit (truncation)", "min": 1})
    policy: str = field(
        default="heuristic",
        metadata={"help": "random, or heuristic (CartPole: push toward the pole's lean)", "choices": ["random", "heuristic"]},
    )
    seed: int = field(default=0, metadata={"help": "seed of environment resets and the policy"})
    out_dir: Path = field(default=Path("runs/demo"), metadata={"help": "where the datasets go (replaced)"})


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="record a Gymnasium environment, summarise, export to TFDS and read back")
    p.add_argument("--config", default=None, help="YAML config (default: built-in DemoConfig)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. episodes=20")
    p.set_defaults(func=cmd_demo)


def _policy(cfg: DemoConfig, env, rng: np.random.Generator):
    if cfg.policy == "heuristic" and cfg.env_id.startswith("CartPole"):
        return lambda obs: int(obs[2] + 0.5 * obs[3] > 0) if rng.random() > 0.1 else int(rng.integers(2))
    return lambda obs: env.action_space.sample()


def cmd_demo(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from seedrl.data import open_dataset
    from seedrl.data.formats.tfds import export_tfds, import_tfds
    from seedrl.data.recording import RecordEpisodes
    from seedrl.data.stats import compute_stats, format_info, format_stats

    from seedrl.envs.checks import check_env_id

    cfg = load_config(DemoConfig, args.config, args.overrides)
    check_env_id(cfg.env_id, "env_id")  # a bad id fails here, before the previous demo's output is replaced
    raw_env = gym.make(cfg.env_id, max_episode_steps=cfg.max_episode_steps)
    out = Path(cfg.out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_config(cfg, out / "config.yaml")
    store, tfds_dir, back = out / "episodes", out / "episodes-tfds", out / "episodes-from-tfds"

    env = RecordEpisodes(raw_env, store)
    env.action_space.seed(cfg.seed)
    act = _policy(cfg, env, np.random.default_rng(cfg.seed))
    start = time.perf_counter()
    for i in tqdm(range(cfg.episodes), desc=f"recording {cfg.env_id}", unit="ep"):
        obs, _ = env.reset(seed=cfg.seed + i)
        done = False
        while not done:
            obs, _, terminated, truncated, _ = env.step(act(obs))
            done = terminated or truncated
    env.close()
    elapsed = time.perf_counter() - start

    ds = open_dataset(store)
    print()
    print(format_info(ds))
    print(format_stats(ds, compute_stats(ds)))
    print(f"recorded {ds.num_steps} steps in {elapsed:.2f} s ({ds.num_steps / elapsed:,.0f} steps/s incl. the env)")

    export_tfds(ds, tfds_dir)
    import_tfds(tfds_dir, back)
    again = open_dataset(back)
    same = len(again) == len(ds) and all(a.equals(b) for a, b in zip(ds, again))
    print(f"exported to TFDS at {tfds_dir} ({sum(f.stat().st_size for f in tfds_dir.iterdir()):,} bytes)")
    print(f"read back {len(again)} episodes: " + ("bit-exact round trip" if same else "MISMATCH"))
    print(f"try: seedrl data head {store}   |   seedrl data validate {store}")
    return 0 if same else 1
