"""GKD's divergence × λ table in miniature, on the toy arithmetic world.

Runs, from ``configs/arith_gkd.yaml`` (student: setup-toy's reference, teacher: its teacher),
{forward KL, reverse KL, JSD(0.1), JSD(0.5), JSD(0.9)} × λ ∈ {0, 0.5, 1} (λ < 1: the other
batches are the dataset's answers, supervised KD) plus sequence-level KD (teacher samples,
trained by NLL), each for the SAME number of updates with the same prompts per update
(the student tokens each run trained on are recorded: they differ with the completions'
lengths). The task metric is the world's exact match of greedy completions of held-out
prompts (the world's draw with task.seed + 1; the seeds vary
init-free things only: sampling, prompt order, the λ coin); the student before training and the teacher
are the reference lines. ``--seeds`` runs each cell per seed (the spread is the seed noise; the run's
seed orders the prompts, so λ = 0 cells differ between seeds too). ``--only NAME:LAMBDA ...`` runs a
subset of the cells (e.g. ``--only forward_kl:0 forward_kl:1 --steps 900``: the longer-run variant of
``benchmarks/results/gkd_sweep_900steps_fkl.json``).
Torch runs one thread; the load average is recorded (the script measures quality, not speed).

Writes ``benchmarks/results/gkd_sweep.json`` and ``docs/images/gkd_sweep.png``.

Lead's command (needs ``seedrl lm setup-toy --world arith --out runs/toy/arith`` first, ~3 CPU-minutes):

    PYTHONPATH=src python benchmarks/gkd_sweep.py --steps 300 --seeds 0 1 --eval-prompts 200

Sizing (measured, one thread, quiet machine): 20 updates × 8 prompts take 4.5 CPU-s on-policy
(λ = 1, 2 samples per prompt), 1.5 CPU-s on dataset batches (λ = 0); a 200-prompt greedy
evaluation 3.6 CPU-s; so 300 updates × 16 cells × 2 seeds is about 30 CPU-minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIVERGENCES = {"forward_kl": ("forward_kl", 0.5), "reverse_kl": ("reverse_kl", 0.5), "jsd(0.1)": ("jsd", 0.1),
               "jsd(0.5)": ("jsd", 0.5), "jsd(0.9)": ("jsd", 0.9)}
LAMBDAS = (0.0, 0.5, 1.0)


def held_out_score(model_dir: str, cfg, num_prompts: int) -> float:
    """Mean world reward (exact match) of greedy completions of ``num_prompts`` held-out prompts
    (the world's examples drawn with ``task.seed + 1``)."""
    from seedrl.envs.text import TextTask
    from seedrl.lm.toy_setup import make_world
    from seedrl.models.lm.policy import LMPolicy
    from seedrl.models.lm.sampler import SamplingParams

    policy = LMPolicy.from_pretrained(model_dir).eval()
    t = cfg.task
    world = make_world(t.world, t.world_options)
    task = TextTask(world.examples(num_prompts, seed=t.seed + 1), t.template, tokenizer=policy.tokenizer, seed=t.seed + 1)
    prompts = [task.prompt(i) for i in range(num_prompts)]
    comps = policy.generate([p.tokens for p in prompts], SamplingParams(temperature=0.0, max_new_tokens=cfg.sampling.max_new_tokens),
                            max_batch=64)
    reward = world.reward_fn(t.world_reward)
    return float(np.mean(reward([p.text for p in prompts], [c.text for c in comps], [p.example for p in prompts])))


def cells():
    """``(name, λ, gkd overrides)`` of every run of the table."""
    for lam in LAMBDAS:
        for name, (kind, beta) in DIVERGENCES.items():
            yield name, lam, {"divergence": kind, "beta": beta, "lmbda": lam, "off_policy": "dataset"}
    yield "seq_kd", 0.0, {"lmbda": 0.0, "off_policy": "teacher", "teacher_loss": "nll"}


def run_cell(base: list[str], gkd: dict, seed: int, out: Path, eval_prompts: int) -> dict:
    from seedrl.agents.gkd import LMGKDConfig
    from seedrl.config import load_config
    from seedrl.runtime.lm_loop import train_lm

    over = [*base, f"seed={seed}", f"out_dir={out}", "name=run", *(f"gkd.{k}={v}" for k, v in gkd.items())]
    cfg = load_config(LMGKDConfig, str(ROOT / "configs" / "arith_gkd.yaml"), over)
    rows = []
    t0 = time.process_time()
    final = train_lm(cfg, on_step=rows.append)
    score = held_out_score(final["final"], cfg, eval_prompts)
    shutil.rmtree(out / "run")
    return {"exact_match": score, "final_divergence": rows[-1]["divergence"],
            "on_policy_fraction": float(np.mean([r["on_policy"] for r in rows])), "cpu_s": time.process_time() - t0}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = [n for n in DIVERGENCES if any(c["name"] == n for c in result["cells"])]  # all, unless --only
    width = 0.8 / len(LAMBDAS)
    for j, lam in enumerate(LAMBDAS):
        cells_ = {c["name"]: c for c in result["cells"] if c["lmbda"] == lam and c["name"] in names}
        x = [i + (j - 1) * width for i, n in enumerate(names) if n in cells_]
        means = [np.mean(c["exact_match"]) for c in cells_.values()]
        spread = [np.ptp(c["exact_match"]) / 2 for c in cells_.values()]
        if x:
            ax.bar(x, means, width, yerr=spread, capsize=2, label=f"λ = {lam:g}")
    seq = next((c for c in result["cells"] if c["name"] == "seq_kd"), None)
    if seq is not None:
        ax.bar([len(names)], [np.mean(seq["exact_match"])], width, yerr=[np.ptp(seq["exact_match"]) / 2], capsize=2,
               color="grey", label="sequence KD (NLL)")
    ax.axhline(np.mean(result["student_before"]), color="k", ls=":", label="student before")
    ax.axhline(result["teacher"], color="k", ls="--", label="teacher")
    ax.set_xticks(range(len(names) + (seq is not None)), [*names, *(["seq KD"] if seq is not None else [])])
    ax.set_ylabel("held-out exact match (greedy)")
    ax.set_title(f"GKD on arithmetic: {result['steps']} updates × {result['prompts_per_step']} prompts, "
                 f"seeds {result['seeds']} (bars: mean, whiskers: half range)", fontsize=9)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default=str(ROOT / "runs/toy/arith/reference"))
    ap.add_argument("--teacher", default=str(ROOT / "runs/toy/arith/teacher"))
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--prompts-per-step", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--eval-prompts", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--set", nargs="*", default=[], help="more config overrides (key=value)")
    ap.add_argument("--only", nargs="+", default=None, metavar="NAME:LAMBDA",
                    help="run only these cells (e.g. forward_kl:1 seq_kd:0); the plot then shows only them")
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/gkd_sweep.json"))
    ap.add_argument("--plot", default=str(ROOT / "docs/images/gkd_sweep.png"))
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="combine the JSONs of runs with other seeds (e.g. one process per seed) into --json and --plot")
    a = ap.parse_args(argv)
    if a.merge:
        return merge_runs([json.loads(Path(f).read_text()) for f in a.merge], Path(a.json), Path(a.plot))
    import torch

    from seedrl.agents.gkd import LMGKDConfig
    from seedrl.config import load_config

    torch.set_num_threads(1)
    base = [f"policy={a.student}", f"teacher={a.teacher}", f"steps={a.steps}", f"prompts_per_step={a.prompts_per_step}",
            f"optim.lr={a.lr}", "runtime.num_actors=1", "log.progress=false", "log.every=10", *a.set]
    cfg0 = load_config(LMGKDConfig, str(ROOT / "configs" / "arith_gkd.yaml"), base)
    load = [os.getloadavg()]
    result = {"steps": a.steps, "prompts_per_step": a.prompts_per_step, "seeds": a.seeds, "eval_prompts": a.eval_prompts,
              "only": a.only,
              "budget": "same updates, same prompts per update (student tokens differ with completion lengths)",
              "samples_per_prompt": cfg0.gkd.samples_per_prompt, "lr": a.lr, "overrides": a.set,
              "student_before": held_out_score(a.student, cfg0, a.eval_prompts),
              "teacher": held_out_score(a.teacher, cfg0, a.eval_prompts), "cells": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name, lam, gkd in cells():
            if a.only is not None and f"{name}:{lam:g}" not in a.only:
                continue
            runs = [run_cell(base, gkd, seed, Path(tmp), a.eval_prompts) for seed in a.seeds]
            load.append(os.getloadavg())
            cell = {"name": name, "lmbda": lam, **{k: [r[k] for r in runs] for k in runs[0]}}
            result["cells"].append(cell)
            print(f"{name:>10} λ={lam:<4g} exact match {np.mean(cell['exact_match']):.3f} "
                  f"(seeds {cell['exact_match']}), {sum(cell['cpu_s']):.0f} CPU-s", flush=True)
    result["loadavg_1_5_15"] = {"min": np.min(load, 0).tolist(), "max": np.max(load, 0).tolist()}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(result, indent=1))
    plot(result, Path(a.plot))
    return result


def merge_runs(parts: list[dict], out_json: Path, out_plot: Path) -> dict:
    """One result from runs of the same sweep with different seeds: each cell's per-seed lists concatenated."""
    first = parts[0]
    same = ("steps", "prompts_per_step", "eval_prompts", "samples_per_prompt", "lr", "overrides")
    for other in parts[1:]:
        differ = [k for k in same if other[k] != first[k]]
        if differ or [c["name"] + str(c["lmbda"]) for c in other["cells"]] != [c["name"] + str(c["lmbda"]) for c in first["cells"]]:
            raise SystemExit(f"--merge: the runs differ in {differ or 'their cells'}")
    result = {**first, "seeds": [s for p in parts for s in p["seeds"]], "cells": []}
    for cells in zip(*(p["cells"] for p in parts)):
        merged = {"name": cells[0]["name"], "lmbda": cells[0]["lmbda"]}
        for k, v in cells[0].items():
            if isinstance(v, list):
                merged[k] = [x for c in cells for x in c[k]]
        result["cells"].append(merged)
    loads = [p["loadavg_1_5_15"] for p in parts]
    result["loadavg_1_5_15"] = {"min": np.min([x["min"] for x in loads], 0).tolist(),
                                "max": np.max([x["max"] for x in loads], 0).tolist()}
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=1))
    plot(result, out_plot)
    return result


if __name__ == "__main__":
    main()
