"""Cost of the entailment-feedback actor-critic (rlef) against REINFORCE-LOO (pg) at the same batch.

All systems train the same policy on the arithmetic world, on the same runtime (actor
threads, one generation server, one learner), with the same batch: ``--prompts`` prompts
x ``--samples`` completions per update. rlef's extra cost over pg is its critic: the value
head reads the hidden states the policy's forward already computes (``critic=head``), or a
second model runs forward and backward (``critic=separate``, here a copy of the policy);
both score the anchor on the server as pg scores its reference. Seconds per update and
samples/s are taken after ``--warmup`` updates; the systems alternate over ``--rounds``.
Writes ``benchmarks/results/rlef_throughput.json``.

    .venv/bin/python benchmarks/rlef_throughput.py                       # tiny untrained GPT-2, ~2 min
    .venv/bin/python benchmarks/rlef_throughput.py --policy runs/toy/arith/reference
    .venv/bin/python benchmarks/rlef_throughput.py --steps 4 --warmup 1 --rounds 1   # smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from seedrl.agents.rlef import LMRLEFConfig
from seedrl.config import load_config
from seedrl.runtime.lm_loop import LMPGConfig, train_lm

KINDS = ("pg", "rlef_head", "rlef_separate")


def measure(kind: str, args, policy: str, tmp: str, rnd: int) -> dict:
    common = {"policy": policy, "out_dir": tmp, "name": f"{kind}{rnd}", "steps": args.steps, "seed": rnd,
              "task": {"world": "arithmetic", "num_examples": 2000}, "sampling": {"max_new_tokens": args.max_new_tokens},
              "prompts_per_step": args.prompts, "runtime": {"num_actors": args.actors},
              "log": {"progress": False, "every": 1000, "checkpoint_every": 100000}}
    if kind == "pg":
        cfg = load_config(LMPGConfig, {**common, "pg": {"samples_per_prompt": args.samples}})
    else:
        critic = kind.split("_")[1]
        cfg = load_config(LMRLEFConfig, {**common, "rlef": {"samples_per_prompt": args.samples, "critic": critic}})
    stamps: list[tuple[float, int]] = []
    train_lm(cfg, on_step=lambda row: stamps.append((time.perf_counter(), row["frames"])))
    (t0, f0), (t1, f1) = stamps[args.warmup - 1], stamps[-1]
    updates = len(stamps) - args.warmup
    return {"kind": kind, "round": rnd, "s_per_update": (t1 - t0) / updates, "samples_per_s": (f1 - f0) / (t1 - t0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default=None, help="model directory; default: a tiny untrained GPT-2 built here")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per update")
    parser.add_argument("--samples", type=int, default=4, help="completions per prompt (both systems)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", default="benchmarks/results/rlef_throughput.json")
    args = parser.parse_args()
    if not 1 <= args.warmup < args.steps:
        parser.error(f"--warmup must be in [1, --steps), got {args.warmup}")
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        policy = args.policy
        if policy is None:
            from seedrl.envs.text import build_toy_assets

            policy = build_toy_assets(Path(tmp) / "tiny", world="arithmetic", seed=0, n_embd=64, n_layer=2, n_head=4).path
        for rnd in range(args.rounds):
            for kind in (KINDS if rnd % 2 == 0 else KINDS[::-1]):
                rows.append(measure(kind, args, str(policy), tmp, rnd))
                print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind]
        summary[kind] = {k: statistics.median(r[k] for r in mine) for k in ("s_per_update", "samples_per_s")}
    for kind in KINDS[1:]:
        summary[f"{kind}_over_pg_s_per_update"] = summary[kind]["s_per_update"] / summary["pg"]["s_per_update"]
    out = {"policy": args.policy or "tiny untrained GPT-2 (64 wide, 2 layers)", "prompts_per_update": args.prompts,
           "samples_per_prompt": args.samples, "max_new_tokens": args.max_new_tokens, "steps": args.steps,
           "warmup": args.warmup, "threads": args.threads, "load_average": os.getloadavg(), "rows": rows,
           "summary": summary}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
