"""The decode fast path's sampled tokens, pinned: ``data/sampled_reference.json`` holds what
the sampler drew on the tiny models (seed 7, 2 samples per prompt, 4 rows refilled as rows
finish) before the decode step was rewritten (preallocated cache written by ``index_copy_``,
batched-matmul attention). A change of the decode arithmetic that moves a token shows here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seedrl.models.lm import Sampler, SamplingParams

REFERENCE = json.loads((Path(__file__).parent / "data" / "sampled_reference.json").read_text())
TEXTS = ["the quick brown fox", "a", "question: what is two plus three? answer:", "one two",
         "alice gave bob an apple; bob gave", "the sun", "STOP here. Then"]
SETTINGS = {"t1": dict(temperature=1.0), "t07_topk_topp": dict(temperature=0.7, top_k=20, top_p=0.9)}


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_sampled_tokens_equal_the_recorded_sampler(policies, kind, setting):
    p = policies[kind]
    s = Sampler(p, max_batch=4)
    outs = s.generate(p.tokenize_prompts(TEXTS),
                      SamplingParams(max_new_tokens=12, ignore_eos=True, seed=7, n=2, **SETTINGS[setting]))
    assert [c.tokens for c in outs] == REFERENCE[f"{kind}/{setting}"]
