"""GenerationServer: many client threads, several models, in-place weight updates with versions."""

from __future__ import annotations

import threading

import pytest
import torch

import tiny
from seedrl.models.lm import GenerationServer, LMPolicy, Sampler, SamplingParams, decoders

TEXTS = ["the quick brown fox", "a", "question: what is two plus three? answer:", "one two", "the sun"]


def test_many_threads_several_models(load, policies):
    models = {"policy": load("gpt2"), "reference": load("llama"), "teacher": load("t5")}
    prompts = {k: m.tokenize_prompts(TEXTS) for k, m in models.items()}
    jobs = [(name, i, SamplingParams(max_new_tokens=3 + i % 5, seed=10 * t + i, n=1 + (t + i) % 2, ignore_eos=True))
            for t in range(6) for i, name in enumerate(["policy", "reference", "teacher", "policy"])]
    results: dict[int, list] = {}
    with GenerationServer(models, max_batch=3) as server:
        def client(t):
            futs = [(j, server.submit(name, prompts[name][i], params))
                    for j, (name, i, params) in enumerate(jobs) if j % 6 == t]
            for j, f in futs:
                results[j] = f.result(timeout=60)

        threads = [threading.Thread(target=client, args=(t,)) for t in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        stats = {k: dict(v) for k, v in server.stats.items()}
    assert len(results) == len(jobs)
    for j, (name, i, params) in enumerate(jobs):  # identical to running each request alone
        solo = Sampler(models[name], max_batch=1).generate([prompts[name][i]], params)
        assert [c.tokens for c in results[j]] == [c.tokens for c in solo]
        assert all(c.weights_version == c.weights_version_start == 0 for c in results[j])
    assert all(stats[k]["requests"] > 0 and stats[k]["steps"] > 0 for k in models)


@pytest.mark.parametrize("all_onednn", [False, True], ids=["default-routing", "all-onednn-packed"])
def test_update_weights_in_place_between_steps(tmp_path, load, monkeypatch, all_onednn):
    if all_onednn:  # every projection through oneDNN with packed copies: the copies must follow the update
        monkeypatch.setattr(decoders, "ONEDNN_MIN_MACS", 0)
    policy, learner = load("gpt2"), LMPolicy.from_pretrained(tiny.build_model("gpt2", tmp_path / "l", seed=3))
    x = policy.tokenize_prompts(TEXTS)
    ptrs = [q.data_ptr() for q in policy.model.parameters()]
    # the stop-string check decodes once per step in the serving thread: hold it at step 3
    reached, go, calls, decode = threading.Event(), threading.Event(), [0], policy.decode

    def gated_decode(ids, **kw):
        calls[0] += 1
        if calls[0] == 3:
            reached.set()
            go.wait(30)
        return decode(ids, **kw)

    policy.decode = gated_decode
    long = SamplingParams(max_new_tokens=20, seed=1, ignore_eos=True, stop_strings=["never-there"])
    with GenerationServer({"policy": policy}, max_batch=4) as server:
        fut = server.submit("policy", x[1], long)
        assert reached.wait(30)  # the request is mid-flight (3 tokens sampled)
        update = server.update_weights("policy", learner, wait=False)
        go.set()
        assert update.result(30) == 1
        (mixed,) = fut.result(timeout=60)
        assert len(mixed.tokens) == 20
        assert mixed.weights_version_start == 0 and mixed.weights_version == 1
        fresh = server.generate("policy", x, SamplingParams(max_new_tokens=6, seed=2), timeout=60)
        assert server.update_weights("policy", {k: v.clone() for k, v in learner.state_dict().items()}) == 2
    assert [q.data_ptr() for q in policy.model.parameters()] == ptrs  # copied in place, no new tensors
    assert all(c.weights_version_start == c.weights_version == 1 for c in fresh)
    with torch.no_grad():  # completions after the update are scored by the new weights
        s = learner.score([x[c.prompt_index] for c in fresh], [c.tokens for c in fresh])
    for i, c in enumerate(fresh):
        assert (s.token_logprobs[i, : len(c.tokens)] - torch.tensor(c.logprobs)).abs().max() < 1e-4


def test_batched_scoring_from_threads(load):
    models = {"policy": load("gpt2"), "reference": load("t5")}
    g = torch.Generator().manual_seed(0)
    work = []
    for t in range(8):
        name = "policy" if t % 2 else "reference"
        m = models[name]
        ps = [torch.randint(4, m.vocab_size, (2 + t + r,), generator=g).tolist() for r in range(1 + t % 3)]
        cs = [torch.randint(0, m.vocab_size, (1 + (t * r) % 5,), generator=g).tolist() for r in range(1 + t % 3)]
        work.append((name, ps, cs, 1.0 if t % 3 else 0.5))
    out = {}
    with GenerationServer(models) as server:
        threads = [threading.Thread(target=lambda t=t: out.__setitem__(t, server.score(*work[t]).result(60)))
                   for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    for t, (name, ps, cs, temp) in enumerate(work):
        with torch.no_grad():
            ref = models[name].score(ps, cs, temperature=temp)
        torch.testing.assert_close(out[t].token_logprobs, ref.token_logprobs, atol=1e-5, rtol=0)
        assert torch.equal(out[t].mask, ref.mask)
        torch.testing.assert_close(out[t].sequence_logprobs, ref.sequence_logprobs, atol=1e-4, rtol=0)


def test_errors_are_clear(policies):
    server = GenerationServer({"policy": policies["gpt2"]})
    with pytest.raises(RuntimeError, match="not running"):
        server.submit("policy", [5])
    with server:
        with pytest.raises(KeyError, match="'nope'"):
            server.submit("nope", [5])
        with pytest.raises(ValueError, match="empty"):
            server.submit("policy", []).result(10)
        with pytest.raises(ValueError, match="empty"):
            server.score("policy", [[]], [[1]]).result(10)
        with pytest.raises(KeyError, match="missing"):
            server.update_weights("policy", {"x": torch.zeros(1)})
        ok = server.submit("policy", [5, 6], SamplingParams(max_new_tokens=2))  # still serving after errors
        assert len(ok.result(10)[0].tokens) <= 2
    with pytest.raises(RuntimeError, match="not running"):
        server.submit("policy", [5])


def test_stop_fails_pending_requests(policies):
    server = GenerationServer({"policy": policies["gpt2"]}, max_batch=1).start()
    futs = [server.submit("policy", [5, 6, 7], SamplingParams(max_new_tokens=60, ignore_eos=True)) for _ in range(20)]
    server.stop()
    assert all(f.done() for f in futs)
    assert any(isinstance(f.exception(), RuntimeError) for f in futs)


def test_a_dead_serving_thread_fails_every_future(policies, monkeypatch):
    """A failure of the serving loop itself (not of one request) must not leave clients waiting forever."""
    server = GenerationServer({"policy": policies["gpt2"]})

    def broken(name):
        raise OSError("disk gone")

    monkeypatch.setattr(server, "_run_scores", broken)
    with server:
        gen = server.submit("policy", [5, 6, 7], SamplingParams(max_new_tokens=50, ignore_eos=True))
        score = server.score("policy", [[5, 6]], [[7]])
        for fut in (gen, score):
            with pytest.raises(RuntimeError, match="serving thread died: OSError"):
                fut.result(10)
        with pytest.raises(RuntimeError, match="serving thread died"):
            server.submit("policy", [5])


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen2", "t5"])
def test_teacher_distributions_through_the_cached_path_equal_the_policy_forward(policies, kind):
    """The server computes a teacher's distributions with its sampler's fast kernels (oneDNN
    projections, fused GELU; T5: the model's own forward): the same log-probs, full and top-k,
    as ``LMPolicy.next_token_distributions`` on the model's own forward, for rows of mixed
    lengths (right padding, one empty completion)."""
    pol = policies[kind]
    gen = torch.Generator().manual_seed(3)
    V = pol.vocab_size
    prompts = [torch.randint(4, V, (n,), generator=gen).tolist() for n in (1, 7, 3, 12)]
    comps = [torch.randint(4, V, (n,), generator=gen).tolist() for n in (5, 1, 0, 9)]
    with GenerationServer({"teacher": pol}, max_batch=4) as server:
        full = server.distributions("teacher", prompts, comps, temperature=0.8).result(60)
        top = server.distributions("teacher", prompts, comps, temperature=0.8, top_k=6).result(60)
    with torch.no_grad():
        ref_full = pol.next_token_distributions(prompts, comps, temperature=0.8)
        ref_top = pol.next_token_distributions(prompts, comps, temperature=0.8, top_k=6)
    assert torch.equal(full.mask, ref_full.mask) and full.mask.sum() == 15
    m = full.mask
    torch.testing.assert_close(full.logprobs[m], ref_full.logprobs[m], rtol=0, atol=2e-5)
    torch.testing.assert_close(top.topk.logprobs[m], ref_top.topk.logprobs[m], rtol=0, atol=2e-5)
    torch.testing.assert_close(top.topk.rest_logprob[m], ref_top.topk.rest_logprob[m], rtol=0, atol=2e-5)
    assert (top.topk.indices[m] == ref_top.topk.indices[m]).float().mean() > 0.95  # ties may swap
