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
  facts stated; share of the claims supported).

Writes ``benchmarks/results/rlef_alpha_sweep.json`` and ``docs/images/rlef_alpha_sweep.png``.

    .venv/bin/python benchmarks/rlef_alpha_sweep.py --alphas 0.02 0.05 0.1 0.3
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


def evaluate(policy_dir: str, evaluator) -> dict[str, float]:
    """Summary metrics of one policy (the first policy evaluated is the baseline of the later ones)."""
    from seedrl.models.lm.policy import LMPolicy

    out = {k.removeprefix("eval_"): v for k, v in evaluator(LMPolicy.from_pretrained(policy_dir).eval()).items()}
    texts, world = evaluator.last_texts, evaluator.world
    checks = [world.check(t, ex["document"]) for t, ex in zip(texts, evaluator.examples)]
    out.update(fact_coverage=float(np.mean([c.coverage for c in checks])),
               faithfulness=float(np.mean([c.faithfulness for c in checks])), f1=float(np.mean([c.f1 for c in checks])),
               example=texts[0])
    if "nli_prob" in out:  # the RL reward: mean log P(entailment), the per-summary probabilities' logs
        probs = np.exp(np.asarray(evaluator.nli(["" for _ in texts], texts, evaluator.examples), np.float64))
        out["nli_reward"] = float(np.mean(np.log(np.clip(probs, 1e-12, 1.0))))
    return out


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
                ax.axhline(sft[k], color=line.get_color(), ls=":", label=f"{k} (SFT)")
        ax.set_xscale("log")
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
    parser.add_argument("--overrides", nargs="*", default=[], help="more key=value overrides of the config")
    parser.add_argument("--out", default="benchmarks/results/rlef_alpha_sweep.json")
    parser.add_argument("--plot", default="docs/images/rlef_alpha_sweep.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    base = [f"out_dir={args.out_dir}", "log.progress=false", *args.overrides]
    if args.steps is not None:
        base.append(f"steps={args.steps}")
    cfg = load_config(LMRLEFConfig, args.config, base)
    cfg.check_inputs()
    evaluator = make_evaluator(cfg, args.eval_prompts, args.eval_seed)
    sft = {"alpha": None, "policy": cfg.policy, **evaluate(cfg.policy, evaluator)}
    print(json.dumps(sft), flush=True)
    rows = []
    for alpha in args.alphas:
        run_cfg = load_config(LMRLEFConfig, args.config, [*base, f"rlef.alpha={alpha}", f"name={cfg.name}_a{alpha:g}"])
        start = time.perf_counter()
        final = train_lm(run_cfg)
        row = {"alpha": alpha, "train_s": time.perf_counter() - start,
               **{k: final[k] for k in ("reward", "kl", "length", "value_loss") if k in final},
               "eval": evaluate(final["final"], evaluator)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"config": args.config, "overrides": base, "eval_prompts": args.eval_prompts, "eval_seed": args.eval_seed,
           "nli_model": cfg.task.nli_model, "load_average_start": load_start, "load_average": os.getloadavg(),
           "sft": sft, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    plot([{"alpha": r["alpha"], **r["eval"]} for r in rows], sft, Path(args.plot))
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
