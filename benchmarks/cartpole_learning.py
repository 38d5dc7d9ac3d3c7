"""CartPole-v1 to the solved level (mean return >= 475 over 100 episodes), several seeds.

Runs `configs/cartpole_impala.yaml` once per seed on the embedded runtime and
records frames and wall time to the solved level. Writes
benchmarks/results/cartpole_learning.json and prints a table.

    .venv/bin/python benchmarks/cartpole_learning.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from seedrl.config import load_config
from seedrl.runtime.config import TrainConfig
from seedrl.runtime.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", default="configs/cartpole_impala.yaml")
    parser.add_argument("--max-frames", type=int, default=5_000_000)
    parser.add_argument("--out", default="benchmarks/results/cartpole_learning.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            cfg = load_config(TrainConfig, args.config, [f"seed={seed}", f"out_dir={tmp}", f"name=seed{seed}",
                                                        f"total_frames={args.max_frames}", "log.progress=false",
                                                        "log.tensorboard=false"])
            start = time.perf_counter()
            result = train(cfg)
            rows.append({"seed": seed, "solved": result.solved, "frames": result.frames, "seconds": time.perf_counter() - start,
                         "mean_return": result.mean_return, "updates": result.updates})
            print(f"seed {seed}: solved={result.solved} frames={result.frames:,} wall={rows[-1]['seconds']:.0f}s "
                  f"return={result.mean_return:.1f}", flush=True)
    solved = [r for r in rows if r["solved"]]
    summary = {
        "config": args.config, "load_average": os.getloadavg(), "runs": rows,
        "solved": f"{len(solved)}/{len(rows)}",
        "median_frames": statistics.median(r["frames"] for r in solved) if solved else None,
        "median_seconds": statistics.median(r["seconds"] for r in solved) if solved else None,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
