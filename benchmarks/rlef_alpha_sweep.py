"""The entailment-feedback trade-off in miniature: ``configs/facts_rlef.yaml`` at several α.

For each α the config is trained (one torch thread), then the final policy and the SFT
summariser it started from are evaluated on the same held-out documents of the facts world
(``--eval-prompts``, examples drawn with ``--eval-seed``, not training's), one summary per
document sampled at temperature 1 with a fixed sampling seed (the distribution RL trains).
The metrics are the run's own held-out evaluation (:class:`seedrl.runtime.lm_eval.SummaryEval`,
i.e. :func:`seedrl.report.summarization.summarization_metrics`: one definition of each), with
the SFT policy's summaries as the baseline of the shrinking / copying signals:

* ``hallucination_rate``: summaries with at least one claimed fact the document does not
  state, by the world's exact checker (:meth:`FactsWorld.hallucinates`; the ground truth,
  the reward was the NLI model's); ``entail_exact``: summaries the checker calls entailed;
* ``entail_nli`` / ``nli_prob``: summaries the NLI reward model calls entailed (P >= 0.5) and
  the mean P; ``nli_reward``: the mean log P (the RL reward);
* ``rouge1`` / ``rouge2`` / ``rougeL`` F-measures against the clean reference summaries;
* ``length_words``, ``length_ratio`` (to SFT's), ``novel_1..3`` (fraction of summary n-grams
  absent from the document: 0 = fully extractive), ``coverage`` / ``density`` (extractive
  fragments), ``shrinking`` / ``copying``: the paper's reward-hacking signals;
* ``fact_coverage`` / ``faithfulness`` / ``f1`` of the exact checker (share of the document's
  facts stated; share of the claims supported); ``degenerate_rate``: summaries neither entailed
  nor hallucinating (empty, or with a sentence that is neither a fact nor the document's:
  repetitions, broken sentences), i.e. ``1 − entail_exact − hallucination_rate``.

Writes ``benchmarks/results/rlef_alpha_sweep.json`` and ``docs/images/rlef_alpha_sweep.png``.
Runs are asynchronous (actor threads), so one seed per α cannot resolve small changes: ``--seed``
sets the config's seed (and the run names), so seeds can run as separate processes, each with its
own ``--out``; ``--merge`` then combines their JSON files into one (per-α mean, min and max over
seeds, and every seed's row) and plots the means with the seeds' range.

    .venv/bin/python benchmarks/rlef_alpha_sweep.py --alphas 0.02 0.05 0.1 0.3
    .venv/bin/python benchmarks/rlef_alpha_sweep.py --alphas 0.03 0.1 0.3 --steps 300 --seed 1 \
        --out benchmarks/results/rlef_alpha_sweep_s1.json --plot /tmp/s1.png       # one seed
    .venv/bin/python benchmarks/rlef_alpha_sweep.py --merge benchmarks/results/rlef_alpha_sweep_s{0,1}.json
    .venv/bin/python benchmarks/rlef_alpha_sweep.py --alphas 0.1 --steps 3 --eval-prompts 8   # smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from seedrl.agents.rlef import LMRLEFConfig
from seedrl.config import load_config
from seedrl.runtime.lm_loop import train_lm


def make_evaluator(cfg: LMRLEFConfig, num_prompts: int, seed: int):
    """The held-out evaluation shared by the SFT policy and every α (module docstring)."""
    from seedrl.envs.text import TextTask
    from seedrl.lm.toy_setup import make_world
    from seedrl.models.lm.policy import LMPolicy
    from seedrl.rewards import NLIReward
    from seedrl.runtime.lm_eval import SummaryEval

    world = make_world(cfg.task.world, cfg.task.world_options)
    examples = world.examples(num_prompts, seed=seed)
    task = TextTask(examples, cfg.task.template, tokenizer=LMPolicy.from_pretrained(cfg.policy).tokenizer, shuffle=False)
    nli = (NLIReward.from_pretrained(cfg.task.nli_model, source_field=cfg.task.nli_source_field, output="log_prob")
           if cfg.task.nli_model else None)
    return SummaryEval(examples, [task.prompt(i).tokens for i in range(len(examples))],
                       source_field=cfg.task.nli_source_field, reference_field="summary", world=world, nli=nli,
                       max_new_tokens=cfg.sampling.max_new_tokens, temperature=1.0, seed=seed)


def exact_metrics(world, texts: list[str], examples: list[dict]) -> dict[str, float]:
    """The exact checker's means over summaries: ``fact_coverage``, ``faithfulness``, ``f1`` and
    ``degenerate_rate``, the share neither entailed nor hallucinating (empty, or a sentence that is
    neither a fact nor the document's: repetitions, broken sentences, which a reward model may call
    entailed)."""
    checks = [world.check(t, ex["document"]) for t, ex in zip(texts, examples)]
    degenerate = [not world.entails(t, ex["document"]) and not c.hallucinated for t, ex, c in zip(texts, examples, checks)]
    return {"degenerate_rate": float(np.mean(degenerate)), "fact_coverage": float(np.mean([c.coverage for c in checks])),
            "faithfulness": float(np.mean([c.faithfulness for c in checks])), "f1": float(np.mean([c.f1 for c in checks]))}


def evaluate(policy_dir: str, evaluator) -> dict[str, float]:
    """Summary metrics of one policy (the first policy evaluated is the baseline of the later ones)."""
    from seedrl.models.lm.policy import LMPolicy

    out = {k.removeprefix("eval_"): v for k, v in evaluator(LMPolicy.from_pretrained(policy_dir).eval()).items()}
    texts = evaluator.last_texts
    out.update(exact_metrics(evaluator.world, texts, evaluator.examples), example=texts[0])
    if "nli_prob" in out:  # the RL reward: mean log P(entailment), the per-summary probabilities' logs
        probs = np.exp(np.asarray(evaluator.nli(["" for _ in texts], texts, evaluator.examples), np.float64))
        out["nli_reward"] = float(np.mean(np.log(np.clip(probs, 1e-12, 1.0))))
    return out


def merge(results: list[dict]) -> dict:
    """One sweep from several seeds' results (same config, α values and held-out documents).

    Each α row's ``eval`` holds the mean over seeds of every numeric metric, ``eval_min`` /
    ``eval_max`` their range, and ``seeds`` the per-seed rows. The SFT evaluation is the same in
    every file (a fixed sampling seed), so it is kept once and checked to agree."""
    if not results:
        raise ValueError("merge: no results given")
    first = results[0]
    for res in results[1:]:
        for key in ("config", "eval_prompts", "eval_seed", "nli_model"):
            if res[key] != first[key]:
                raise ValueError(f"merge: {key}={res[key]!r} differs from the first file's {first[key]!r}")
        if abs(res["sft"]["hallucination_rate"] - first["sft"]["hallucination_rate"]) > 1e-9:
            raise ValueError(f"merge: the SFT evaluations differ (hallucination_rate {res['sft']['hallucination_rate']} "
                             f"vs {first['sft']['hallucination_rate']}): not the same SFT policy or documents")
    alphas = sorted({r["alpha"] for res in results for r in res["rows"]})
    rows = []
    for alpha in alphas:
        seeds = [{"seed": res.get("seed"), **r} for res in results for r in res["rows"] if r["alpha"] == alpha]
        keys = [k for k, v in seeds[0]["eval"].items() if isinstance(v, (int, float))
                and all(isinstance(s["eval"].get(k), (int, float)) for s in seeds)]
        vals = {k: [float(s["eval"][k]) for s in seeds] for k in keys}
        rows.append({"alpha": alpha, "num_seeds": len(seeds), "eval": {k: float(np.mean(v)) for k, v in vals.items()},
                     "eval_min": {k: min(v) for k, v in vals.items()}, "eval_max": {k: max(v) for k, v in vals.items()},
                     "seeds": seeds})
    return {**{k: first[k] for k in ("config", "eval_prompts", "eval_seed", "nli_model", "sft")},
            "overrides": [res["overrides"] for res in results], "seeds": [res.get("seed") for res in results],
            "load_average": [res["load_average"] for res in results], "rows": rows}


def plot(rows: list[dict], sft: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = [r["alpha"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = [("faithfulness", ["hallucination_rate", "entail_nli"]), ("ROUGE vs references", ["rouge1", "rougeL"]),
              ("extractiveness and length", ["novel_2"])]
    for ax, (title, keys) in zip(axes, panels):
        for k in keys:
            if k in rows[0]:
                line, = ax.plot(alphas, [r[k] for r in rows], "o-", label=k)
                if "min" in rows[0]:  # merged seeds: their range
                    ax.fill_between(alphas, [r["min"][k] for r in rows], [r["max"][k] for r in rows],
                                    color=line.get_color(), alpha=0.2)
                ax.axhline(sft[k], color=line.get_color(), ls=":", label=f"{k} (SFT)")
        ax.set_xscale("log")
        ax.set_xticks(alphas, [f"{a:g}" for a in alphas])
        ax.minorticks_off()
        ax.set_xlabel("α (KL weight)")
        ax.set_title(title)
        ax.legend(fontsize=7)
    twin = axes[2].twinx()
    twin.plot(alphas, [r["length_words"] for r in rows], "s--", color="gray", label="length (words)")
    twin.axhline(sft["length_words"], color="gray", ls=":")
    twin.set_ylabel("length (words)")
    fig.suptitle("Entailment-feedback RL on the facts world: the trade-off across α")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/facts_rlef.yaml")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.3])
    parser.add_argument("--steps", type=int, default=None, help="override the config's steps")
    parser.add_argument("--eval-prompts", type=int, default=200)
    parser.add_argument("--eval-seed", type=int, default=12345)
    parser.add_argument("--out-dir", default="runs/rlef_sweep")
    parser.add_argument("--seed", type=int, default=None, help="the runs' seed (default: the config's)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="combine these per-seed results into --out and --plot (no training)")
    parser.add_argument("--overrides", nargs="*", default=[], help="more key=value overrides of the config")
    parser.add_argument("--out", default="benchmarks/results/rlef_alpha_sweep.json")
    parser.add_argument("--plot", default="docs/images/rlef_alpha_sweep.png")
    args = parser.parse_args()
    if args.merge:
        merged = merge([json.loads(Path(p).read_text()) for p in args.merge])
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(merged, indent=1))
        plot([{"alpha": r["alpha"], **r["eval"], "min": r["eval_min"], "max": r["eval_max"]} for r in merged["rows"]],
             merged["sft"], Path(args.plot))
        print(f"wrote {args.out} and {args.plot}")
        return
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    base = [f"out_dir={args.out_dir}", "log.progress=false", *args.overrides]
    if args.steps is not None:
        base.append(f"steps={args.steps}")
    if args.seed is not None:
        base.append(f"seed={args.seed}")
    tag = "" if args.seed is None else f"_s{args.seed}"
    cfg = load_config(LMRLEFConfig, args.config, base)
    cfg.check_inputs()
    evaluator = make_evaluator(cfg, args.eval_prompts, args.eval_seed)
    sft = {"alpha": None, "policy": cfg.policy, **evaluate(cfg.policy, evaluator)}
    print(json.dumps(sft), flush=True)
    rows = []
    for alpha in args.alphas:
        run_cfg = load_config(LMRLEFConfig, args.config, [*base, f"rlef.alpha={alpha}", f"name={cfg.name}_a{alpha:g}{tag}"])
        start = time.perf_counter()
        final = train_lm(run_cfg)
        row = {"alpha": alpha, "train_s": time.perf_counter() - start,
               **{k: final[k] for k in ("reward", "kl", "length", "value_loss") if k in final},
               "eval": evaluate(final["final"], evaluator)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"config": args.config, "overrides": base, "seed": cfg.seed, "eval_prompts": args.eval_prompts, "eval_seed": args.eval_seed,
           "nli_model": cfg.task.nli_model, "load_average_start": load_start, "load_average": os.getloadavg(),
           "sft": sft, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    plot([{"alpha": r["alpha"], **r["eval"]} for r in rows], sft, Path(args.plot))
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
