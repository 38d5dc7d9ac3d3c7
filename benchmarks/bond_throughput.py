"""Cost of J-BOND against REINFORCE-LOO at the same batch of policy samples.

Both train the same SFT reference on the arithmetic world, on the same runtime (actor
threads, one generation server, one learner), with the same number of *policy*
samples per update (``--policy-samples``): REINFORCE as ``P`` prompts x ``K = 2``,
J-BOND as ``2P`` prompts x 1 policy sample + 2 anchor samples each (its extra cost:
twice as many generations, the anchor's scores, the forward term's extra sequence and
the EMA anchor pushed into the server after every update). Seconds per update and
samples/s are taken after ``--warmup`` updates; the systems alternate over
``--rounds``. Writes ``benchmarks/results/bond_throughput.json``.

    .venv/bin/python benchmarks/bond_throughput.py --reference runs/toy/arith/reference
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
from seedrl.runtime.lm_loop import LMBondConfig, LMPGConfig, train_lm


def measure(kind: str, args, tmp: str, rnd: int) -> dict:
    p = args.policy_samples
    common = [f"policy={args.reference}", f"out_dir={tmp}", f"name={kind}{rnd}", f"steps={args.steps}", "log.progress=false",
              "log.every=1000", "log.checkpoint_every=100000"]
    if kind == "pg":
        cfg = load_config(LMPGConfig, "configs/arith_pg.yaml", [*common, "pg.samples_per_prompt=2", f"prompts_per_step={p // 2}"])
    else:
        cfg = load_config(LMBondConfig, "configs/arith_jbond.yaml", [*common, "frontier_prompts=0", f"prompts_per_step={p}"])
    stamps: list[tuple[float, int]] = []
    train_lm(cfg, on_step=lambda row: stamps.append((time.perf_counter(), row["frames"])))
    (t0, f0), (t1, f1) = stamps[args.warmup - 1], stamps[-1]
    updates = len(stamps) - args.warmup
    policy_samples = updates * p
    return {"kind": kind, "round": rnd, "s_per_update": (t1 - t0) / updates, "samples_per_s": (f1 - f0) / (t1 - t0),
            "policy_samples_per_s": policy_samples / (t1 - t0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="runs/toy/arith/reference")
    parser.add_argument("--policy-samples", type=int, default=32, help="policy samples per update (both systems)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/bond_throughput.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for kind in (("pg", "jbond") if rnd % 2 == 0 else ("jbond", "pg")):
                rows.append(measure(kind, args, tmp, rnd))
                print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for kind in ("pg", "jbond"):
        mine = [r for r in rows if r["kind"] == kind]
        summary[kind] = {k: statistics.median(r[k] for r in mine) for k in ("s_per_update", "samples_per_s", "policy_samples_per_s")}
    summary["jbond_over_pg_s_per_update"] = summary["jbond"]["s_per_update"] / summary["pg"]["s_per_update"]
    out = {"policy_samples_per_update": args.policy_samples, "steps": args.steps, "warmup": args.warmup,
           "load_average": os.getloadavg(), "rows": rows, "summary": summary}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
