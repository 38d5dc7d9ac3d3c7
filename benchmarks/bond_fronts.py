"""Reward/KL fronts on the toy arithmetic world: J-BOND vs REINFORCE-LOO with a KL penalty,
beside Best-of-N sampling's frontier; iterative BOND vs one-shot BOND with the same n.

Every run starts from the same SFT reference (``seedrl lm setup-toy --world arith``) and
uses the world's exact-match reward. A run's (KL, reward) is the mean of its last
``--tail`` metric rows (on-policy samples: sequence-level Monte Carlo estimates of
KL(π ‖ π_ref) and of the reward). Writes ``benchmarks/results/bond_fronts.json`` and the
plots ``docs/images/bond_front.png`` and ``docs/images/bond_iterative.png``.

    .venv/bin/seedrl lm setup-toy --world arith --out runs/toy/arith --no-teacher
    .venv/bin/python benchmarks/bond_fronts.py --reference runs/toy/arith/reference
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from seedrl.config import load_config
from seedrl.runtime.lm_loop import LMBondConfig, LMPGConfig, train_lm

COMMON = ["log.progress=false", "log.every=1", "log.checkpoint_every=100000", "frontier_prompts=0"]


def run(kind: str, config: str, overrides: list[str], args, tmp: str, steps: int | None = None) -> dict:
    cls = LMBondConfig if kind == "bond" else LMPGConfig
    steps = steps or args.steps
    name = "_".join(o.replace("=", "").replace(".", "") for o in overrides) or kind
    cfg = load_config(cls, config, [f"policy={args.reference}", f"out_dir={tmp}", f"name={kind}_{name}",
                                     f"steps={steps}", f"optim.lr={args.lr}", f"seed={args.seed}",
                                     f"task.num_examples={args.num_examples}",
                                     *[c for c in COMMON if kind == "bond" or not c.startswith("frontier")], *overrides])
    rows: list[dict] = []
    start = time.perf_counter()
    train_lm(cfg, on_step=rows.append)
    tail = rows[-args.tail:]
    out = {"kind": kind, "config": config, "overrides": overrides, "steps": steps, "lr": args.lr,
           "seconds": time.perf_counter() - start,
           "kl": float(np.mean([r["kl"] for r in tail])), "reward": float(np.mean([r["reward"] for r in tail])),
           "trajectory": {k: [r[k] for r in rows] for k in ("updates", "kl", "reward")}}
    print(f"{kind:5s} {' '.join(overrides):60s} KL {out['kl']:.3f} reward {out['reward']:.3f} ({out['seconds']:.0f} s)",
          flush=True)
    return out


def smooth(xs, w):
    return np.convolve(xs, np.ones(w) / w, mode="valid") if len(xs) >= w else np.asarray(xs)


def plot(results: dict, path_front: Path, path_iter: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    bon = results["best_of_n"]
    ax.plot([r["kl_estimate"] for r in bon], [r["reward"] for r in bon], "o-", color="black", lw=1.5, label="Best-of-N (reference)")
    for r in bon:
        ax.annotate(f"N={r['n']}", (r["kl_estimate"], r["reward"]), textcoords="offset points", xytext=(4, -10), fontsize=7)
    for run_ in results["runs"]:
        if run_["group"] != "front":
            continue
        t = run_["trajectory"]
        w = max(1, len(t["kl"]) // 10)
        if run_["kind"] == "bond":
            extra = [o for o in run_["overrides"] if not o.startswith("prompts_per_step") and o != "bond.anchor_kl_coef=0"]
            label = "J-BOND" + (f" ({' '.join(extra)})" if extra else "")
        else:
            label = f"REINFORCE β={run_['overrides'][0].split('=')[1]}"
        style = "-" if run_["kind"] == "bond" else "--"
        line, = ax.plot(smooth(t["kl"], w), smooth(t["reward"], w), style, lw=1.2, alpha=0.8, label=label)
        ax.plot([run_["kl"]], [run_["reward"]], "*", ms=10, color=line.get_color())
    ax.set_xlabel("KL(π || π_ref) [nats], sequence-level Monte Carlo")
    ax.set_ylabel("exact-match reward")
    ax.set_title("Arithmetic world: reward vs KL (running means; * = final)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path_front.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path_front, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.6))
    for run_ in results["runs"]:
        if run_["group"] != "iterative":
            continue
        t = run_["trajectory"]
        w = max(1, len(t["kl"]) // 10)
        every = [o.split("=")[1] for o in run_["overrides"] if o.startswith("bond.anchor_every=")]
        label = f"iterative BOND (anchor moves every {every[0]} updates)" if every else "one-shot BOND (fixed anchor)"
        axes[0].plot(smooth(t["updates"], w), smooth(t["reward"], w), lw=1.2, label=label)
        axes[1].plot(smooth(t["updates"], w), smooth(t["kl"], w), lw=1.2, label=label)
    for n in (2, 4, 8, 16):
        row = next((r for r in bon if r["n"] == n), None)
        if row:
            axes[0].axhline(row["reward"], color="grey", lw=0.7, ls=":")
            axes[0].annotate(f"Bo{n}(ref)", (0.01, row["reward"]), xycoords=("axes fraction", "data"), fontsize=7,
                             color="grey", va="bottom")
    axes[0].set_xlabel("update")
    axes[0].set_ylabel("reward")
    axes[1].set_xlabel("update")
    axes[1].set_ylabel("KL(π || π_ref)")
    axes[0].legend(fontsize=6)
    for a in axes:
        a.grid(alpha=0.3)
    fig.suptitle("Iterative BOND (anchor moves) vs one-shot BOND, n = 2")
    fig.tight_layout()
    fig.savefig(path_iter, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="runs/toy/arith/reference")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--jbond-steps", type=int, default=None, help="J-BOND's updates (default --steps)")
    parser.add_argument("--extra-jbond", nargs="*", default=[],
                        help='further J-BOND runs, each a string of overrides of configs/arith_jbond.yaml (which sets '
                             'anchor_kl_coef 1.0), e.g. "prompts_per_step=32 bond.anchor_kl_coef=1.0"')
    parser.add_argument("--append-extra", action="store_true", help="run only --extra-jbond and add them to --out")
    parser.add_argument("--iterative-overrides", nargs="*", default=[], help="overrides of both iterative-group runs")
    parser.add_argument("--pg-prompts", type=int, default=16, help="REINFORCE prompts per update (x K = 4 samples)")
    parser.add_argument("--bond-prompts", type=int, default=32, help="J-BOND prompts per update (x 1 policy + 2 anchor samples)")
    parser.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate of every run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-examples", type=int, default=256,
                        help="distinct prompts drawn from the world (the frontier uses the first 128 of them)")
    parser.add_argument("--tail", type=int, default=50, help="metric rows averaged for a run's final (KL, reward)")
    parser.add_argument("--kl-coefs", type=float, nargs="+", default=[0.01, 0.05, 0.2])
    parser.add_argument("--anchor-every", type=int, default=100, help="iterative BOND: updates between anchor moves")
    parser.add_argument("--only", choices=["front", "iterative"], default=None)
    parser.add_argument("--out", default="benchmarks/results/bond_fronts.json")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plots from --out")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads(Path(args.out).read_text()), Path("docs/images/bond_front.png"), Path("docs/images/bond_iterative.png"))
        return
    import torch

    torch.set_num_threads(1)
    results: dict = {"reference": args.reference, "steps": args.steps, "lr": args.lr, "num_examples": args.num_examples,
                     "runs": []}
    prior = Path(args.out)
    if args.only and prior.exists():  # keep the other group's runs
        old = json.loads(prior.read_text())
        results["runs"] = [r for r in old.get("runs", []) if r["group"] != args.only]
        results["best_of_n"] = old.get("best_of_n")
    if args.append_extra:  # only the --extra-jbond runs, added to the saved front
        results, args.only = json.loads(prior.read_text()), "front"
    with tempfile.TemporaryDirectory() as tmp:
        if not results.get("best_of_n"):
            from seedrl.agents.bon import evaluate_bon
            from seedrl.envs.text import TextTask
            from seedrl.lm.toy_setup import make_world
            from seedrl.models.lm.policy import LMPolicy

            cfg = load_config(LMBondConfig, "configs/arith_jbond.yaml", [f"policy={args.reference}",
                                                                          f"task.num_examples={args.num_examples}"])
            ref = LMPolicy.from_pretrained(args.reference).eval()
            world = make_world(cfg.task.world, cfg.task.world_options)
            task = TextTask(world.examples(cfg.task.num_examples, seed=cfg.task.seed), cfg.task.template, tokenizer=ref.tokenizer)
            ev = evaluate_bon(ref, task, world.reward_fn(cfg.task.world_reward), ns=(1, 2, 4, 8, 16), num_prompts=128,
                              quantile_samples=32)
            results["best_of_n"] = ev.rows
            print(ev.table(), flush=True)
        if args.only in (None, "front") and not args.append_extra:
            results["runs"].append({"group": "front", **run("bond", "configs/arith_jbond.yaml",
                                                            [f"prompts_per_step={args.bond_prompts}", "bond.anchor_kl_coef=0"],
                                                            args, tmp, steps=args.jbond_steps)})
        if args.only in (None, "front"):
            for extra in args.extra_jbond:
                results["runs"].append({"group": "front", **run("bond", "configs/arith_jbond.yaml", extra.split(), args, tmp,
                                                                steps=args.jbond_steps)})
        if args.only in (None, "front") and not args.append_extra:
            for beta in args.kl_coefs:
                results["runs"].append({"group": "front", **run("pg", "configs/arith_pg.yaml",
                                                                [f"pg.kl_coef={beta}", f"prompts_per_step={args.pg_prompts}"], args, tmp)})
        if args.only in (None, "iterative"):
            for over in (["bond.anchor=fixed"], [f"bond.anchor=periodic", f"bond.anchor_every={args.anchor_every}"]):
                results["runs"].append({"group": "iterative", **run(
                    "bond", "configs/arith_bond.yaml", ["bond.n=2", "bond.quantile_samples=4", f"prompts_per_step={args.pg_prompts}",
                                                *args.iterative_overrides, *over],
                    args, tmp)})
    results["load_average"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    plot(results, Path("docs/images/bond_front.png"), Path("docs/images/bond_iterative.png"))
    print(f"wrote {args.out}, docs/images/bond_front.png, docs/images/bond_iterative.png")


if __name__ == "__main__":
    main()
