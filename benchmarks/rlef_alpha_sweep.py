"""The entailment-feedback trade-off in miniature: ``configs/facts_rlef.yaml`` at several α.

For each α the config is trained (one torch thread), then the final policy and the SFT
summariser it started from are evaluated on held-out documents of the facts world
(``--eval-prompts``, examples drawn with another seed than training's), one summary per
document sampled at temperature 1 (the distribution RL trains):

* ``hallucination_rate``: summaries with at least one claim the document does not support,
  by the world's exact checker (the ground truth; the reward was the NLI model's);
* ``nli_entailment_rate``: summaries the NLI reward model calls entailed (P > 0.5);
* ``faithfulness`` / ``coverage`` / ``f1`` of the exact checker;
* ``rouge1`` / ``rouge2`` / ``rougeL`` F-measures against the reference summaries (``rouge-score``);
* ``length`` (words) and ``novel_bigrams`` (fraction of summary bigrams absent from the
  document: 0 = fully extractive), the paper's reward-hacking signals (shrinking, copying).

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


def _bigrams(words: list[str]) -> set[tuple[str, str]]:
    return set(zip(words, words[1:]))


def evaluate(policy_dir: str, cfg: LMRLEFConfig, num_prompts: int, seed: int) -> dict[str, float]:
    """Summary metrics of one policy on held-out documents (module docstring)."""
    from seedrl.lm.toy_setup import make_world
    from seedrl.models.lm.policy import LMPolicy
    from seedrl.models.lm.sampler import SamplingParams
    from seedrl.report.summarization import rouge_f
    from seedrl.rewards import NLIReward

    world = make_world(cfg.task.world, cfg.task.world_options)
    examples = world.examples(num_prompts, seed=seed)
    policy = LMPolicy.from_pretrained(policy_dir).eval()
    prompts = policy.tokenize_prompts([cfg.task.template.format(**ex) for ex in examples])
    torch.manual_seed(seed)
    params = SamplingParams(temperature=1.0, max_new_tokens=cfg.sampling.max_new_tokens, seed=seed)
    texts = [c.text for c in policy.generate(prompts, params, max_batch=64)]
    checks = [world.check(t, ex["document"]) for t, ex in zip(texts, examples)]
    rouge = rouge_f(texts, [ex["summary"] for ex in examples])
    novel = []
    for t, ex in zip(texts, examples):
        grams = _bigrams(t.split())
        novel.append(len(grams - _bigrams(ex["document"].split())) / len(grams) if grams else 0.0)
    out = {
        "hallucination_rate": float(np.mean([c.num_supported < c.num_claims + c.num_unparsed for c in checks])),
        "faithfulness": float(np.mean([c.faithfulness for c in checks])),
        "coverage": float(np.mean([c.coverage for c in checks])),
        "f1": float(np.mean([c.f1 for c in checks])),
        **{k: float(v.mean()) for k, v in rouge.items()},
        "length": float(np.mean([len(t.split()) for t in texts])),
        "novel_bigrams": float(np.mean(novel)),
        "example": texts[0],
    }
    if cfg.task.nli_model:
        nli = NLIReward.from_pretrained(cfg.task.nli_model, source_field=cfg.task.nli_source_field, output="prob")
        p = np.asarray(nli([ex["prompt"] for ex in examples], texts, examples), dtype=np.float64)
        out["nli_entailment_rate"] = float(np.mean(p > 0.5))
        out["nli_reward"] = float(np.mean(np.log(np.clip(p, 1e-12, 1))))
    return out


def plot(rows: list[dict], sft: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = [r["alpha"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = [("faithfulness", ["hallucination_rate", "nli_entailment_rate"]), ("ROUGE vs references", ["rouge1", "rougeL"]),
              ("extractiveness and length", ["novel_bigrams"])]
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
    twin.plot(alphas, [r["length"] for r in rows], "s--", color="gray", label="length (words)")
    twin.axhline(sft["length"], color="gray", ls=":")
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
    base = [f"out_dir={args.out_dir}", "log.progress=false", *args.overrides]
    if args.steps is not None:
        base.append(f"steps={args.steps}")
    cfg = load_config(LMRLEFConfig, args.config, base)
    cfg.check_inputs()
    sft = {"alpha": None, "policy": cfg.policy, **evaluate(cfg.policy, cfg, args.eval_prompts, args.eval_seed)}
    print(json.dumps(sft), flush=True)
    rows = []
    for alpha in args.alphas:
        run_cfg = load_config(LMRLEFConfig, args.config, [*base, f"rlef.alpha={alpha}", f"name={cfg.name}_a{alpha:g}"])
        start = time.perf_counter()
        final = train_lm(run_cfg)
        row = {"alpha": alpha, "train_s": time.perf_counter() - start,
               **{k: final[k] for k in ("reward", "kl", "length", "value_loss") if k in final},
               "eval": evaluate(final["final"], run_cfg, args.eval_prompts, args.eval_seed)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"config": args.config, "overrides": base, "eval_prompts": args.eval_prompts, "load_average": os.getloadavg(),
           "sft": sft, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    plot([{"alpha": r["alpha"], **r["eval"]} for r in rows], sft, Path(args.plot))
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
