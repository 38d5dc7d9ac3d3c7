"""The LM loop's held-out summarization evaluation (any algo): rows in metrics.jsonl, eval.json, the result."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")

from seedrl.config import load_config  # noqa: E402
from seedrl.envs.text import FactsWorld, build_toy_assets  # noqa: E402
from seedrl.lm.toy_nli import NLIConfig, train_toy_nli  # noqa: E402
from seedrl.models.lm.policy import LMPolicy  # noqa: E402
from seedrl.models.lm.sampler import SamplingParams  # noqa: E402
from seedrl.report.summarization import summarization_metrics  # noqa: E402
from seedrl.rewards import NLIReward  # noqa: E402
from seedrl.runtime.lm_eval import make_summary_eval  # noqa: E402
from seedrl.runtime.lm_loop import LMPGConfig, train_lm  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
OPTIONS = {"min_facts": 1, "max_facts": 2, "max_fillers": 1, "hallucination_rate": 0.25}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("facts")
    assets = build_toy_assets(root / "policy", world="facts", seed=0, n_embd=32, n_layer=1, n_head=2)
    train_toy_nli(FactsWorld(**OPTIONS), root / "nli", config=NLIConfig(hidden=16, layers=1, heads=2, steps=5,
                                                                        train_documents=50, eval_documents=10))
    return str(assets.path), str(root / "nli")


def _cfg(tmp_path, policy, **over):
    base = {"name": "sum", "out_dir": str(tmp_path), "policy": policy,
            "task": {"world": "facts", "world_options": OPTIONS, "world_reward": "faithfulness", "num_examples": 50},
            "sampling": {"max_new_tokens": 12}, "pg": {"samples_per_prompt": 2}, "steps": 3, "prompts_per_step": 2,
            "runtime": {"num_actors": 1}, "log": {"progress": False}, "eval": {"prompts": 6, "every": 2}}
    for key, value in over.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    return load_config(LMPGConfig, base)


def test_facts_run_logs_summarization_metrics_and_final_eval(tmp_path, models):
    policy, nli = models
    cfg = _cfg(tmp_path, policy, task={"nli_model": nli, "reward_weights": {"task": 1.0, "nli": 0.1}})
    result = train_lm(cfg)
    rows = [json.loads(line) for line in open(tmp_path / "sum" / "metrics.jsonl")]
    evals = [r for r in rows if "eval_rouge1" in r]
    assert [r["updates"] for r in evals] == [0, 2, 3]  # start (the baseline), every 2, the end
    for key in ("eval_entail_nli", "eval_nli_prob", "eval_entail_exact", "eval_hallucination_rate", "eval_rouge2",
                "eval_rougeL", "eval_length_words", "eval_length_tokens", "eval_novel_1", "eval_coverage",
                "eval_density", "eval_shrinking", "eval_copying"):
        assert key in evals[-1], key
    # the initial policy is the baseline of later evaluations (the first compares with the references)
    assert evals[-1]["eval_length_ratio"] == pytest.approx(evals[-1]["eval_length_words"] / evals[0]["eval_length_words"])
    final = json.loads((tmp_path / "sum" / "eval.json").read_text())
    assert final["updates"] == 3 and all(result[k] == v for k, v in final.items() if k != "updates")
    # recomputed by hand from the final model: greedy completions of the held-out draw (seed + 1)
    model = LMPolicy.from_pretrained(result["final"]).eval()
    examples = FactsWorld(**OPTIONS).examples(6, seed=1)
    tokens = [model.tokenize_prompts([ex["prompt"]])[0] for ex in examples]
    comps = model.generate(tokens, SamplingParams(temperature=0.0, max_new_tokens=12), max_batch=6)
    texts = [c.text for c in comps]
    probs = np.exp(NLIReward.from_pretrained(nli)([""] * 6, texts, examples))
    world = FactsWorld(**OPTIONS)
    base = json.loads((tmp_path / "sum" / "eval_baseline.json").read_text())
    want = summarization_metrics(texts, [e["document"] for e in examples], [e["summary"] for e in examples],
                                 nli_probs=probs, checker=world.entails, hallucinates=world.hallucinates,
                                 num_tokens=[len(c.tokens) for c in comps], baseline=base)
    for k, v in want.items():
        assert final[f"eval_{k}"] == pytest.approx(v, nan_ok=True), k


def test_no_evaluation_for_tasks_that_are_not_summaries_or_when_off(tmp_path, models):
    policy, _ = models
    cfg = _cfg(tmp_path, policy, task={"world": "arithmetic", "world_options": {}, "world_reward": "exact"})
    assert make_summary_eval(cfg, None) is None
    assert make_summary_eval(_cfg(tmp_path, policy, eval={"prompts": 0}), None) is None
    ev = make_summary_eval(_cfg(tmp_path, policy), LMPolicy.from_pretrained(policy).tokenizer)
    assert ev is not None and ev.nli is None and ev.reference_field == "summary"
