"""Held-out summarization evaluation of a language policy, whatever trains it.

:func:`make_summary_eval` returns a :class:`SummaryEval` when the run's task is a
summarization task: its examples hold a source document (``task.nli_source_field``,
default ``document``) and a reference (``eval.reference_field``; by default ``summary``
when the examples have one, the facts world's clean summary, else ``reference``);
otherwise None, and nothing is evaluated. Held-out prompts: a toy world's draw with seed
``task.seed + 1`` (the SFT's held-out draw), or the first ``eval.prompts`` examples of
``task.data_path`` (not held out: a data file has no second split here).

Each evaluation completes the prompts with the policy (greedy by default,
``eval.temperature``) and returns :func:`seedrl.report.summarization.summarization_metrics`
with every key prefixed ``eval_``: the entailment rate by the NLI model (``task.nli_model``
or ``eval.nli_model``, when one is given) and by the world's exact checker with its
hallucination rate (toy worlds), ROUGE, length (words and tokens), extractiveness and the
shrinking / copying signals. Their baseline is the first evaluation of the run (the initial
policy, before any update; that first one compares with the references), kept in ``<run>/eval_baseline.json`` so that a resumed run
compares with the same one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LMEvalConfig", "SummaryEval", "make_summary_eval"]

BASELINE_FILE = "eval_baseline.json"
EVAL_FILE = "eval.json"


@dataclass
class LMEvalConfig:
    """Held-out evaluation (summarization tasks): at the start, every ``every`` updates and at the end."""

    prompts: int = field(default=64, metadata={"help": "held-out prompts per evaluation (0: no evaluation)", "min": 0})
    every: int = field(default=0, metadata={"help": "updates between evaluations (0: only at the start and the end)", "min": 0})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature of the evaluation (0: greedy)", "min": 0.0})
    max_new_tokens: int | None = field(default=None, metadata={"help": "completion cap (default sampling.max_new_tokens)", "min": 1})
    nli_model: str | None = field(default=None, metadata={"help": "NLI classifier for the entailment rate (default task.nli_model)"})
    reference_field: str | None = field(default=None, metadata={"help": "example field of the reference summary (default summary, else reference)"})


class SummaryEval:
    """Completes fixed held-out prompts and measures the summaries (module docstring)."""

    def __init__(self, examples: list[dict], prompt_tokens: list[list[int]], *, source_field: str, reference_field: str,
                 world: Any = None, nli: Any = None, max_new_tokens: int = 64, temperature: float = 0.0,
                 baseline_path: Path | None = None, seed: int | None = None) -> None:
        self.examples, self.prompt_tokens = examples, prompt_tokens
        self.source_field, self.reference_field = source_field, reference_field
        self.world, self.nli = world, nli
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.baseline_path, self.seed = baseline_path, seed
        self.last_texts: list[str] = []  # the summaries of the latest evaluation
        self.baseline = (json.loads(baseline_path.read_text())
                         if baseline_path is not None and baseline_path.is_file() else None)

    def __call__(self, policy) -> dict[str, float]:
        from seedrl.models.lm.sampler import SamplingParams
        from seedrl.report.summarization import summarization_metrics

        params = SamplingParams(temperature=self.temperature, max_new_tokens=self.max_new_tokens, seed=self.seed)
        comps = policy.generate(self.prompt_tokens, params, max_batch=min(64, len(self.prompt_tokens)))
        texts = self.last_texts = [c.text for c in comps]
        docs = [str(ex[self.source_field]) for ex in self.examples]
        refs = [str(ex[self.reference_field]).strip() for ex in self.examples]
        probs = None
        if self.nli is not None:
            probs = np.exp(np.asarray(self.nli(["" for _ in texts], texts, self.examples), np.float64))
            probs = np.clip(probs, 0.0, 1.0)
        world = self.world
        out = summarization_metrics(
            texts, docs, refs, nli_probs=probs, checker=getattr(world, "entails", None),
            hallucinates=getattr(world, "hallucinates", None), num_tokens=[len(c.tokens) for c in comps],
            baseline=self.baseline)
        if self.baseline is None:  # the first evaluation is the baseline of the later ones
            self.baseline = {"length_words": out["length_words"], "density": out.get("density")}
            if self.baseline_path is not None:
                self.baseline_path.write_text(json.dumps(self.baseline))
        return {f"eval_{k}": v for k, v in out.items()}


def make_summary_eval(cfg, tokenizer, run_dir: Path | None = None) -> SummaryEval | None:
    """The run's evaluation (``cfg``: an :class:`~seedrl.runtime.lm_config.LMRunConfig`), or None
    when ``eval.prompts`` is 0 or the task is not a summarization task."""
    from seedrl.envs.text import TextTask, load_examples
    from seedrl.lm.toy_setup import make_world

    e, t = cfg.eval, cfg.task
    if e.prompts == 0:
        return None
    world = None
    if t.world is not None:
        world = make_world(t.world, t.world_options)
        examples = world.examples(e.prompts, seed=t.seed + 1)
    else:
        examples = [dict(ex) for ex in list(load_examples(str(t.data_path)))[: e.prompts]]
    if not examples or t.nli_source_field not in examples[0]:
        return None
    reference_field = e.reference_field or ("summary" if "summary" in examples[0] else "reference")
    if reference_field not in examples[0]:
        return None
    task = TextTask(examples, t.template, tokenizer=tokenizer, shuffle=False)
    tokens = [task.prompt(i).tokens for i in range(len(examples))]
    nli = None
    nli_path = e.nli_model or t.nli_model
    if nli_path is not None:
        from seedrl.rewards import NLIReward

        nli = NLIReward.from_pretrained(nli_path, source_field=t.nli_source_field, output="log_prob")
    return SummaryEval(examples, tokens, source_field=t.nli_source_field, reference_field=reference_field,
                       world=world, nli=nli, max_new_tokens=e.max_new_tokens or cfg.sampling.max_new_tokens,
                       temperature=e.temperature,
                       baseline_path=None if run_dir is None else Path(run_dir) / BASELINE_FILE)
