"""VLLMGenerationServer: on CPU against a stand-in engine (fake_vllm.py); on a CUDA GPU with vLLM itself.

The tests that take the ``engine`` fixture run twice: ``fake`` (always; seedrl's adapter: parameter
mapping, output conversion, versions, weights through the worker extension) and ``vllm`` (marked
``gpu``; skipped with the reason where CUDA or vLLM is absent): a tiny Llama built from a config and
saved, loaded by vLLM from that folder, sampled, its log-probs checked against the learner's, changed
weights published in place, and the next samples' log-probs checked against the new weights.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from types import SimpleNamespace

import pytest
import torch

import tiny
from fake_vllm import FakeSamplingParams, fake_engine
from seedrl.models.lm import LMPolicy, SamplingParams
from seedrl.models.lm.logprob_check import LogprobMismatchError, check_served_logprobs
from seedrl.models.lm.vllm_server import VLLMGenerationServer, _completion, named_weights, vllm_sampling_params

TEXTS = ["the quick brown fox", "a", "question: what is two plus three? answer:", "one two", "the sun rises"]
PARAMS = SamplingParams(max_new_tokens=8, n=2, seed=0)


def _gpu_skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (torch.cuda.is_available() is False)"
    if importlib.util.find_spec("vllm") is None:
        return "needs vLLM: pip install 'seedrl[vllm]'"
    return None


GPU = pytest.mark.skipif(_gpu_skip_reason() is not None, reason=_gpu_skip_reason() or "")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """A tiny Llama whose head size (64) every vLLM attention backend takes."""
    return tiny.build_model("llama", tmp_path_factory.mktemp("vllm_llama"), seed=1, hidden_size=128,
                            intermediate_size=256, num_attention_heads=2, num_key_value_heads=2)


@pytest.fixture(scope="module", params=["fake", pytest.param("vllm", marks=[pytest.mark.gpu, GPU])])
def engine_kind(request):
    return request.param


@pytest.fixture(scope="module")
def engine(engine_kind, llama_dir):
    """(engine, sampling_params_factory, log-prob tolerance): one engine per module (vLLM starts slowly)."""
    if engine_kind == "fake":
        # fp32 on both sides, but other GEMM kernels for few decode rows than for the learner's batched
        # forward: up to ~1.3e-4 apart after the test's large weight update (the stale weights still fail below)
        yield fake_engine(llama_dir), FakeSamplingParams, 2e-4
        return
    from seedrl.models.lm.vllm_server import make_vllm_engine

    llm = make_vllm_engine(llama_dir, dtype="float32", gpu_memory_utilization=0.3, max_num_seqs=16, seed=0)
    yield llm, None, 2e-3  # fp32 engine, other kernels: ~1e-5 expected
    del llm


def _server(engine, learner, **kw):
    llm, factory, _ = engine
    return VLLMGenerationServer({"policy": llm}, kw.pop("models", None), context_lengths={"policy": learner.context_length},
                                sampling_params_factory=factory, **kw)


def test_samples_follow_the_learner_and_published_weights(engine, llama_dir):
    """Sample, check log-probs against the learner; publish changed weights; the next samples
    follow the new weights (and no longer the old ones)."""
    _, _, tol = engine
    learner = LMPolicy.from_pretrained(llama_dir).eval()
    prompts = learner.tokenize_prompts(TEXTS)
    with _server(engine, learner) as server:
        comps = server.generate("policy", prompts, PARAMS, timeout=300)
        assert len(comps) == 2 * len(TEXTS)
        for c in comps:
            assert len(c.tokens) == len(c.logprobs) == len(c.sampling_logprobs) >= 1
            assert c.sampling_logprobs == c.logprobs  # temperature 1, no filter: the raw model is the sampler
            assert c.finish_reason in ("eos", "stop", "length") and c.weights_version == c.weights_version_start == 0
            assert len(c.tokens) == 8 or c.finish_reason == "eos" and c.tokens[-1] in learner.eos_token_ids
        a = check_served_logprobs(server, "policy", learner, prompts, PARAMS, tolerance=tol)
        assert 0 < a.tokens and a.max_abs <= tol

        old = LMPolicy.from_pretrained(llama_dir).eval()
        torch.manual_seed(0)
        with torch.no_grad():
            for p in learner.parameters():
                p.add_(0.5 * p.std() * torch.randn_like(p))  # a large update: log-probs move by far more than tol
        assert server.update_weights("policy", learner) == 1 and server.version("policy") == 1
        after = server.generate("policy", prompts, PARAMS, timeout=300)
        assert all(c.weights_version == c.weights_version_start == 1 for c in after)
        b = check_served_logprobs(server, "policy", learner, prompts, PARAMS, tolerance=tol)
        assert b.max_abs <= tol
        with pytest.raises(LogprobMismatchError):
            check_served_logprobs(server, "policy", old, prompts, PARAMS, tolerance=tol)
        assert server.stats["policy"]["weight_updates"] == 1 and server.stats["policy"]["requests"] >= 4 * len(TEXTS)


def test_many_threads_and_stop_strings(engine, llama_dir):
    learner = LMPolicy.from_pretrained(llama_dir).eval()
    prompts = learner.tokenize_prompts(TEXTS)
    results: dict[int, list] = {}
    jobs = [(i % len(TEXTS), SamplingParams(max_new_tokens=3 + i % 4, n=1 + i % 2, seed=i, ignore_eos=True))
            for i in range(24)]
    with _server(engine, learner) as server:
        server.update_weights("policy", learner)  # the module's engine: back to the folder's weights

        def client(t):
            for j in range(t, len(jobs), 4):
                i, params = jobs[j]
                results[j] = server.submit("policy", prompts[i], params).result(300)

        threads = [threading.Thread(target=client, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        greedy = server.generate("policy", prompts[:2], SamplingParams(temperature=0, max_new_tokens=6), timeout=300)
    for j, (i, params) in enumerate(jobs):
        assert [c.sample_index for c in results[j]] == list(range(params.n))
        assert all(len(c.tokens) == params.max_new_tokens and c.finish_reason == "length" for c in results[j])
    assert all(c.sampling_logprobs == [0.0] * len(c.tokens) for c in greedy)
    # greedy: every token is the learner's argmax (up to the engine's tolerance: near-ties may flip)
    with torch.no_grad():
        logp = torch.log_softmax(learner.completion_logits(prompts[:2], [c.tokens for c in greedy]).float(), -1)
    chosen = logp.gather(-1, torch.tensor([c.tokens for c in greedy])[..., None]).squeeze(-1)
    assert float((logp.max(-1).values - chosen).max()) <= engine[2]


# ----------------------------------------------------------------------------- CPU only: the adapter itself
def test_sampling_params_are_mapped_field_by_field():
    p = SamplingParams(temperature=0.7, top_k=5, top_p=0.9, max_new_tokens=9, stop_strings=("x y",), stop_token_ids=(4,),
                       seed=3, n=2, include_stop_str_in_output=True, ignore_eos=True)
    v = vllm_sampling_params(p, 7, FakeSamplingParams)
    assert v == FakeSamplingParams(n=2, temperature=0.7, top_p=0.9, top_k=5, max_tokens=7, seed=3, stop=["x y"],
                                   stop_token_ids=[4], include_stop_str_in_output=True, ignore_eos=True, logprobs=1)
    assert vllm_sampling_params(SamplingParams(), 64, FakeSamplingParams).stop is None


def test_outputs_are_converted_with_finish_reasons_and_sampling_logprobs():
    def out(reason, stop_reason, toks=(5, 6, 1)):
        return SimpleNamespace(index=1, token_ids=toks, text="t", finish_reason=reason, stop_reason=stop_reason,
                               logprobs=[{t: SimpleNamespace(logprob=-0.5 * (k + 1)), 99: SimpleNamespace(logprob=-0.1)}
                                         for k, t in enumerate(toks)])

    c = _completion(out("stop", None), SamplingParams(), 4, 0)
    assert (c.tokens, c.logprobs, c.finish_reason, c.sample_index) == ([5, 6, 1], [-0.5, -1.0, -1.5], "eos", 1)
    assert c.sampling_logprobs == c.logprobs and c.weights_version == c.weights_version_start == 4
    assert _completion(out("stop", 6), SamplingParams(), 0, 0).finish_reason == "stop"
    assert _completion(out("stop", "x"), SamplingParams(), 0, 0).finish_reason == "stop"
    assert _completion(out("length", None), SamplingParams(), 0, 0).finish_reason == "length"
    assert _completion(out("length", None), SamplingParams(temperature=0), 0, 0).sampling_logprobs == [0.0] * 3
    assert all(math.isnan(x) for x in _completion(out("length", None), SamplingParams(top_p=0.5), 0, 0).sampling_logprobs)
    with pytest.raises(RuntimeError, match="finish_reason='abort'"):
        _completion(out("abort", None), SamplingParams(), 0, 0)
    bad = out("length", None)
    bad.logprobs = None
    with pytest.raises(RuntimeError, match="log-prob entries"):
        _completion(bad, SamplingParams(), 0, 0)


def test_routing_context_limit_errors_and_stop(tmp_path, load, llama_dir):
    """Scores, distributions and other models go to the built-in server; a full context and an
    engine error fail only their requests; stop() fails what is still queued."""
    learner = LMPolicy.from_pretrained(llama_dir).eval()
    llm = fake_engine(llama_dir)
    ref = load("gpt2")
    server = VLLMGenerationServer({"policy": llm}, {"reference": ref}, context_lengths={"policy": 64},
                                  sampling_params_factory=FakeSamplingParams)
    x = learner.tokenize_prompts(TEXTS[:2])
    with pytest.raises(RuntimeError, match="not running"):
        server.submit("policy", x[0])
    with server:
        assert set(server.models) == {"policy", "reference"}
        s = server.score("reference", [x[0]], [[5, 6]]).result(60)
        assert s.token_logprobs.shape == (1, 2)
        with pytest.raises(KeyError, match="sampled by vLLM"):
            server.score("policy", [x[0]], [[5]])
        with pytest.raises(KeyError, match="sampled by vLLM"):
            server.distributions("policy", [x[0]], [[5]])
        assert server.update_weights("reference", ref) == 1 and server.version("reference") == 1
        assert server.version("policy") == 0
        with pytest.raises(KeyError, match="not served"):
            server.submit("teacher", x[0])
        # 60 prompt tokens in a context of 64: at most 4 new ones
        long = server.submit("policy", [5] * 60, SamplingParams(max_new_tokens=16, ignore_eos=True)).result(60)
        assert len(long[0].tokens) == 4 and long[0].finish_reason == "length"
        with pytest.raises(ValueError, match="no room left"):
            server.submit("policy", [5] * 64, PARAMS).result(60)
        calls = len(llm.calls)
        original = llm.generate
        llm.generate = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("engine fell over"))
        with pytest.raises(RuntimeError, match="engine fell over"):
            server.submit("policy", x[0], PARAMS).result(60)
        llm.generate = original
        assert len(server.submit("policy", x[0], PARAMS).result(60)) == 2  # still serving
        assert len(llm.calls) == calls + 1
    with pytest.raises(RuntimeError, match="not running"):
        server.submit("policy", x[0])


def test_weights_are_loaded_in_place_by_name_and_lora_is_refused(llama_dir, load):
    llm = fake_engine(llama_dir)
    learner = LMPolicy.from_pretrained(llama_dir).eval()
    ptrs = [p.data_ptr() for p in llm.policy.parameters()]
    with torch.no_grad():
        for p in learner.parameters():
            p.mul_(1.5)
    with VLLMGenerationServer({"policy": llm}, sampling_params_factory=FakeSamplingParams) as server:
        assert server.update_weights("policy", learner) == 1
        assert server.update_weights("policy", {k: v * 2 for k, v in learner.state_dict().items()}) == 2
    assert [p.data_ptr() for p in llm.policy.parameters()] == ptrs
    assert llm.worker.model_runner.model.loaded_batches == [len(list(learner.parameters())), len(learner.state_dict())]
    with torch.no_grad():
        assert all(torch.equal(a, 2 * b) for a, b in zip(llm.policy.parameters(), learner.parameters()))
    from seedrl.models.lm import LoraSettings

    with pytest.raises(ValueError, match="LoRA"):
        named_weights(load("llama", lora=LoraSettings(r=2)))
    with pytest.raises(TypeError, match="LMPolicy or a state dict"):
        named_weights(object())


def test_stop_fails_what_is_queued_and_finishes_what_runs(llama_dir):
    llm = fake_engine(llama_dir)
    entered, release, original = threading.Event(), threading.Event(), llm.generate

    def gated(*a, **k):
        entered.set()
        release.wait(60)
        return original(*a, **k)

    llm.generate = gated
    server = VLLMGenerationServer({"policy": llm}, sampling_params_factory=FakeSamplingParams).start()
    running = server.submit("policy", [5, 6], PARAMS)
    assert entered.wait(60)
    queued = server.submit("policy", [7, 8], PARAMS)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    while server._inbox.qsize() < 2:  # the queued request, then stop's sentinel
        threading.Event().wait(0.01)
    release.set()
    stopper.join(60)
    assert len(running.result(60)) == 2
    with pytest.raises(RuntimeError, match="VLLMGenerationServer stopped"):
        queued.result(60)
    assert llm.calls == [1]
