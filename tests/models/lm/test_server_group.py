"""ServerGroup: a serving thread per model, behind one server's client API."""

from __future__ import annotations

import threading

import pytest
import torch

from seedrl.models.lm import GenerationServer, Sampler, SamplingParams
from seedrl.models.lm.server_group import ServerGroup, serve_models

TEXTS = ["the quick brown fox", "a", "one two"]


def test_each_model_runs_on_its_own_thread_with_the_same_results(load):
    models = {"policy": load("gpt2"), "teacher": load("llama")}
    prompts = {k: m.tokenize_prompts(TEXTS) for k, m in models.items()}
    params = SamplingParams(max_new_tokens=4, seed=7, ignore_eos=True)
    group = serve_models(models, per_model=True, max_batch=4)
    assert isinstance(group, ServerGroup) and len(group.servers) == 2
    threads: dict[str, set] = {k: set() for k in models}
    for server in group.servers:  # record which thread runs each model's decode steps
        for name, sampler in server.samplers.items():
            def step(step=sampler.step, name=name):
                threads[name].add(threading.get_ident())
                return step()
            sampler.step = step
    with group:
        assert sorted(group.models) == ["policy", "teacher"]
        got = {k: group.generate(k, prompts[k], params, timeout=60) for k in models}
        comps = [c.tokens for c in got["policy"]]
        dist = group.distributions("teacher", prompts["teacher"], [c.tokens for c in got["teacher"]]).result(60)
        scores = group.score("policy", prompts["policy"], comps).result(60)
        stats = group.stats
    for k, m in models.items():  # what one sampler alone makes
        assert [c.tokens for c in got[k]] == [c.tokens for c in Sampler(m, max_batch=1).generate(prompts[k], params)]
    assert dist.logprobs.shape[0] == len(TEXTS)
    torch.testing.assert_close(scores.token_logprobs[scores.mask],
                               torch.tensor([lp for c in got["policy"] for lp in c.logprobs]), atol=1e-4, rtol=0)
    assert stats["policy"]["requests"] == stats["teacher"]["requests"] == len(TEXTS)
    assert len(threads["policy"]) == len(threads["teacher"]) == 1 and not threads["policy"] & threads["teacher"]


def test_weights_go_to_the_model_named(load, tmp_path):
    models = {"policy": load("gpt2"), "reference": load("gpt2")}
    before = {k: [p.clone() for p in m.model.parameters()] for k, m in models.items()}
    new = {k: v + 1.0 for k, v in models["policy"].state_dict().items()}
    with serve_models(models, per_model=True) as group:
        assert group.update_weights("policy", new) == 1
        assert group.version("policy") == 1 and group.version("reference") == 0
    assert all(torch.equal(p, q + 1.0) for p, q in zip(models["policy"].model.parameters(), before["policy"]))
    assert all(torch.equal(p, q) for p, q in zip(models["reference"].model.parameters(), before["reference"]))


def test_one_thread_unless_asked_and_clear_errors(load):
    models = {"policy": load("gpt2"), "teacher": load("gpt2")}
    assert isinstance(serve_models(models, per_model=False), GenerationServer)
    assert isinstance(serve_models({"policy": models["policy"]}, per_model=True), GenerationServer)
    with pytest.raises(ValueError, match="'policy' is served by two servers"):
        ServerGroup([GenerationServer({"policy": models["policy"]}), GenerationServer({"policy": models["teacher"]})])
    with serve_models(models, per_model=True) as group:
        with pytest.raises(KeyError, match=r"model='anchor' is not served \(have \['policy', 'teacher'\]\)"):
            group.submit("anchor", [1, 2])
