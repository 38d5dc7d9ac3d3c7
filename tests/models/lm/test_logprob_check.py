"""The log-prob agreement check, run against the built-in generation server (CPU)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

import tiny
from seedrl.models.lm import GenerationServer, LMPolicy, SamplingParams
from seedrl.models.lm.logprob_check import (
    LogprobMismatchError, check_logprobs, check_served_logprobs, compare_logprobs,
)

TEXTS = ["the quick brown fox", "a", "question: what is two plus three? answer:", "one two"]
PARAMS = SamplingParams(max_new_tokens=8, n=2, seed=0, ignore_eos=True)


def _sample(policy, prompts, params=PARAMS):
    with GenerationServer({"policy": policy}, max_batch=4) as server:
        comps = server.generate("policy", prompts, params, timeout=60)
    return [prompts[c.prompt_index] for c in comps], comps


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_builtin_server_agrees_with_the_learner(kind, load):
    served, learner = load(kind), load(kind)
    prompts = learner.tokenize_prompts(TEXTS)
    with GenerationServer({"policy": served}, max_batch=3) as server:
        a = check_served_logprobs(server, "policy", learner, prompts, PARAMS, tolerance=1e-4)
    assert a.sequences == len(TEXTS) * 2 and a.tokens == a.sequences * 8
    assert a.max_abs < 1e-4 and a.mean_abs <= a.max_abs


def test_perturbed_logprobs_fail_with_the_size_and_place(load):
    learner = load("gpt2")
    rows, comps = _sample(load("gpt2"), learner.tokenize_prompts(TEXTS))
    base = compare_logprobs(learner, rows, comps)
    bad = [replace(c, logprobs=list(c.logprobs)) for c in comps]
    bad[3].logprobs[5] += 0.05
    a = compare_logprobs(learner, rows, bad)
    assert a.max_abs == pytest.approx(0.05, abs=1e-4) and a.worst == (3, 5)
    assert a.mean_abs == pytest.approx(base.mean_abs + 0.05 / a.tokens, abs=1e-5)  # one token of a.tokens moved
    with pytest.raises(LogprobMismatchError, match=r"max \|Δ\| = 0\.05 > tolerance 0\.01.*completion 3, token 5"):
        check_logprobs(learner, rows, bad, tolerance=0.01)
    check_logprobs(learner, rows, comps, tolerance=0.01)  # the unperturbed ones pass


def test_nan_and_wrong_lengths_fail(load):
    learner = load("gpt2")
    rows, comps = _sample(load("gpt2"), learner.tokenize_prompts(TEXTS[:2]))
    nan = [replace(c, logprobs=list(c.logprobs)) for c in comps]
    nan[0].logprobs[2] = math.nan
    with pytest.raises(LogprobMismatchError, match="max"):
        check_logprobs(learner, rows, nan, tolerance=1.0)
    with pytest.raises(ValueError, match="log-probs for"):
        compare_logprobs(learner, rows, [replace(comps[0], logprobs=comps[0].logprobs[:-1])] + comps[1:])
    with pytest.raises(ValueError, match="tolerance"):
        check_logprobs(learner, rows, comps, tolerance=0.0)


def test_tempered_sampling_logprobs_are_not_the_models(load):
    """What the check compares is the raw model's log-prob: the tempered distribution's is caught."""
    learner = load("gpt2")
    rows, comps = _sample(load("gpt2"), learner.tokenize_prompts(TEXTS), replace(PARAMS, temperature=0.6))
    check_logprobs(learner, rows, comps, tolerance=1e-4)
    tempered = [replace(c, logprobs=c.sampling_logprobs) for c in comps]
    with pytest.raises(LogprobMismatchError):
        check_logprobs(learner, rows, tempered, tolerance=1e-2)


def test_stale_weights_are_caught_and_a_publish_fixes_them(tmp_path, load):
    served = load("gpt2")
    learner = LMPolicy.from_pretrained(tiny.build_model("gpt2", tmp_path / "other", seed=3))
    prompts = learner.tokenize_prompts(TEXTS)
    with GenerationServer({"policy": served}, max_batch=4) as server:
        with pytest.raises(LogprobMismatchError, match="generation server's 'policy'"):
            check_served_logprobs(server, "policy", learner, prompts, PARAMS, tolerance=1e-3)
        assert server.update_weights("policy", learner) == 1
        a = check_served_logprobs(server, "policy", learner, prompts, PARAMS, tolerance=1e-4)
    assert a.max_abs < 1e-4
    with torch.no_grad():
        assert all(torch.equal(p, q) for p, q in zip(served.parameters(), learner.parameters()))
