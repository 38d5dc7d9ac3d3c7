"""Sampler: log-probs equal LMPolicy.score, greedy equals HF generate, stops, continuous batching."""

from __future__ import annotations

import pytest
import torch

from seedrl.models.lm import Request, Sampler, SamplingParams, decoders
from seedrl.models.lm.decoders import CausalBackend, T5Backend, UncachedBackend
from seedrl.models.lm.sampler import counter_uniform

TEXTS = ["the quick brown fox", "a", "question: what is two plus three? answer:", "one two",
         "alice gave bob an apple; bob gave", "the sun", "STOP here. Then"]
KINDS = ["gpt2", "llama", "qwen2", "t5"]


def prompts_of(policy):
    return policy.tokenize_prompts(TEXTS)


def check_logprobs(policy, prompts, outs, temperature=None, atol=1e-4):
    """Sampler log-probs == LMPolicy.score on the sampled completions; returns the max error."""
    with torch.no_grad():
        s = policy.score([prompts[c.prompt_index] for c in outs], [c.tokens for c in outs])
        st = None if temperature is None else policy.score([prompts[c.prompt_index] for c in outs],
                                                           [c.tokens for c in outs], temperature=temperature)
    err = 0.0
    for i, c in enumerate(outs):
        L = len(c.tokens)
        assert s.mask[i].sum() == L == len(c.logprobs) == len(c.sampling_logprobs)
        err = max(err, (s.token_logprobs[i, :L] - torch.tensor(c.logprobs)).abs().max().item())
        if st is not None:
            err = max(err, (st.token_logprobs[i, :L] - torch.tensor(c.sampling_logprobs)).abs().max().item())
    assert err < atol, err
    return err


def test_fast_backends_are_used(policies):
    assert isinstance(Sampler(policies["gpt2"]).backend, CausalBackend)
    assert isinstance(Sampler(policies["llama"]).backend, CausalBackend)
    assert isinstance(Sampler(policies["qwen2"]).backend, CausalBackend)
    assert isinstance(Sampler(policies["t5"]).backend, T5Backend)
    assert isinstance(Sampler(policies["gpt2"], fast=False).backend, UncachedBackend)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("interrupt", ["none", "copy_rows", "second_prefill"])
def test_deferred_prefill_equals_full_forward(policies, kind, interrupt):
    """The causal path runs a prefill inside the next decode's forward; a row copy or another
    prefill in between runs it on its own first. Either way the logits of each prompt's last
    token equal a full forward of the model, and the sibling row gets its prompt's cache."""
    p = policies[kind]
    prompts = [x for x in prompts_of(p) if len(x) > 2][:3]
    backend = Sampler(p, max_batch=8).backend
    backend.reserve(max(len(x) for x in prompts) + 2)
    k = len(prompts)
    backend.prefill(0, prompts, (torch.tensor([k]), torch.tensor([1])))  # row k: a second sample of prompt 1
    if interrupt == "copy_rows":
        backend.copy_rows(torch.tensor([k + 1]), torch.tensor([0]))  # needs row 0's cache written first
    elif interrupt == "second_prefill":
        backend.prefill(k + 1, [prompts[0]])
    rows = [*prompts, prompts[1]] + ([prompts[0]] if interrupt != "none" else [])
    with torch.inference_mode():
        logits = backend.decode(len(rows), torch.tensor([x[-1] for x in rows]), torch.tensor([len(x) - 1 for x in rows]))
        for r, x in enumerate(rows):
            full = p.base_model(torch.tensor([x])).logits[0, -1].float()
            assert torch.allclose(logits[r], full, atol=1e-4), (r, (logits[r] - full).abs().max())


@pytest.mark.parametrize("kind", KINDS)
def test_logprobs_equal_score_with_requests_joining_mid_flight(policies, kind):
    p = policies[kind]
    prompts = prompts_of(p)
    sampler = Sampler(p, max_batch=3)
    handles = [sampler.submit(x, SamplingParams(temperature=0.9, max_new_tokens=4 + 3 * (i % 4), seed=i, n=1 + i % 2))
               for i, x in enumerate(prompts)]
    occupancy = []
    while sampler.has_work:
        sampler.step()
        occupancy.append(len(sampler.rows))
    assert max(occupancy) == 3  # 11 sequences through 3 slots: slots were freed and refilled
    outs = []
    for i, h in enumerate(handles):
        assert h.done and len(h.result()) == 1 + i % 2
        for c in h.result():
            c.prompt_index = i
            outs.append(c)
    check_logprobs(p, prompts, outs, temperature=0.9)


def test_small_projections_skip_onednn_large_ones_take_it():
    gemm = decoders._Gemm(True)
    if not gemm.enabled:
        pytest.skip("this torch build has no oneDNN linear")
    small, large = torch.nn.Linear(64, 192), torch.nn.Linear(1024, 256)  # 12,288 and 262,144 weight elements
    assert gemm.routed_weight(small, 8) is None and gemm.routed_weight(small, 128) is small.weight  # 98k, 1.6M MACs
    assert gemm.routed_weight(large, 4) is large.weight
    x = torch.randn(8, 1024)
    torch.testing.assert_close(gemm(large, x, add=torch.ones(8, 256)), large(x) + 1, atol=1e-5, rtol=0)
    torch.testing.assert_close(gemm(small, x[:, :64], act=torch.tanh), torch.tanh(small(x[:, :64])), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_logprobs_equal_score_with_every_projection_through_onednn(policies, kind, monkeypatch):
    """The test models' projections are below ``ONEDNN_MIN_MACS`` (module forward); force
    oneDNN with its fused GELU / residual add and packed copies, as large models get."""
    monkeypatch.setattr(decoders, "ONEDNN_MIN_MACS", 0)
    p = policies[kind]
    prompts = prompts_of(p)
    sampler = Sampler(p, max_batch=3)
    outs = sampler.generate(prompts, SamplingParams(temperature=0.9, max_new_tokens=6, seed=5, n=2))
    gemm = sampler.backend.gemm
    assert gemm._packed and all(entry[4] is not None for entry in gemm._packed.values()) or not gemm.enabled
    check_logprobs(p, prompts, outs, temperature=0.9)


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
def test_sampling_logprobs_under_top_k_top_p(policies, kind):
    p = policies[kind]
    prompts = prompts_of(p)
    outs = Sampler(p, max_batch=4).generate(prompts, SamplingParams(temperature=0.7, top_k=20, top_p=0.8,
                                                                   max_new_tokens=6, seed=3))
    check_logprobs(p, prompts, outs)
    with torch.no_grad():  # sampling log-prob = log of the renormalised filtered tempered distribution
        logits = p.score([prompts[c.prompt_index] for c in outs], [c.tokens for c in outs],
                         return_logits=True).logits
    for i, c in enumerate(outs):
        for n, tok in enumerate(c.tokens):
            z = logits[i, n] / 0.7
            vals, order = z.sort(descending=True)
            probs = torch.softmax(vals[:20], -1)  # top-k, renormalised
            kept = order[:20][(torch.cumsum(probs, 0) - probs) < 0.8]  # smallest prefix with mass >= top_p
            assert tok in kept.tolist()
            ref = torch.log_softmax(z[kept], -1)[kept.tolist().index(tok)].item()
            assert abs(c.sampling_logprobs[n] - ref) < 1e-4


def test_sampled_frequencies_match_filtered_distribution(policies):
    p = policies["gpt2"]
    prompt = prompts_of(p)[0]
    params = SamplingParams(temperature=1.5, top_k=6, top_p=0.9, max_new_tokens=1, n=3000, seed=11)
    outs = Sampler(p, max_batch=512).generate([prompt], params)
    with torch.no_grad():
        logits = p.score([prompt], [[0]], return_logits=True).logits[0, 0]
    order = logits.argsort(descending=True)
    probs = torch.softmax(logits[order[:6]] / 1.5, -1)  # top-k renormalised, then top-p
    keep = int(((torch.cumsum(probs, 0) - probs) < 0.9).sum())
    expected = probs[:keep] / probs[:keep].sum()
    counts = torch.bincount(torch.tensor([c.tokens[0] for c in outs]), minlength=p.vocab_size)
    assert counts.sum() == 3000 and counts[order[keep:]].sum() == 0
    chi2 = (((counts[order[:keep]] - 3000 * expected) ** 2) / (3000 * expected)).sum().item()
    assert chi2 < 25.0, (chi2, keep)  # df <= 5: p-value ~1e-4


def test_plain_sampling_frequencies_match_softmax(policies):
    """Temperature 1, no filter (the path whose CDF is the unnormalised exp(z - max z))."""
    p = policies["gpt2"]
    prompt = prompts_of(p)[0]
    outs = Sampler(p, max_batch=512).generate([prompt], SamplingParams(max_new_tokens=1, n=4000, seed=12))
    with torch.no_grad():
        expected = 4000 * torch.softmax(p.score([prompt], [[0]], return_logits=True).logits[0, 0].double(), -1)
    counts = torch.bincount(torch.tensor([c.tokens[0] for c in outs]), minlength=p.vocab_size).double()
    big = expected >= 5  # chi-square over the tokens expected 5+ times, the rest pooled in one bin
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    df = int(big.sum())
    chi2 = (((obs - exp) ** 2) / exp.clamp_min(1e-9)).sum().item()
    assert df >= 10 and chi2 < df + 6 * (2 * df) ** 0.5, (chi2, df)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "t5"])
def test_top_k_1_equals_greedy_equals_hf_generate(policies, kind):
    p = policies[kind]
    prompts = prompts_of(p)[:4]
    s = Sampler(p, max_batch=4)
    top1 = s.generate(prompts, SamplingParams(top_k=1, max_new_tokens=10, ignore_eos=True, seed=5))
    greedy = s.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=10, ignore_eos=True))
    cold = s.generate(prompts, SamplingParams(temperature=1e-4, max_new_tokens=10, ignore_eos=True, seed=1))
    for i, x in enumerate(prompts):
        with torch.no_grad():
            hf = p.model.generate(torch.tensor([x]), attention_mask=torch.ones(1, len(x), dtype=torch.long),
                                  do_sample=False, max_new_tokens=10, min_new_tokens=10, pad_token_id=p.pad_token_id)
        ref = hf[0, 1:].tolist() if p.is_encoder_decoder else hf[0, len(x):].tolist()
        assert top1[i].tokens == greedy[i].tokens == cold[i].tokens == ref
        assert greedy[i].sampling_logprobs == [0.0] * 10
        assert max(abs(v) for v in cold[i].sampling_logprobs) < 1e-3  # temperature -> 0: q -> point mass
        assert top1[i].finish_reason == "length"
    check_logprobs(p, prompts, greedy)


def test_stop_token_ids_and_eos(load):
    p = load("gpt2")
    x = prompts_of(p)[0]
    s = Sampler(p)
    (g,) = s.generate([x], SamplingParams(temperature=0, max_new_tokens=12, ignore_eos=True))
    j = 4
    stop = g.tokens[j]
    first = g.tokens.index(stop)
    (c,) = s.generate([x], SamplingParams(temperature=0, max_new_tokens=12, stop_token_ids=[stop]))
    assert c.tokens == g.tokens[: first + 1] and c.finish_reason == "stop"  # stop token kept
    p.eos_token_ids = frozenset({stop})
    s = Sampler(p)
    (c,) = s.generate([x], SamplingParams(temperature=0, max_new_tokens=12))
    assert c.tokens == g.tokens[: first + 1] and c.finish_reason == "eos"  # EOS kept as last token
    (c,) = s.generate([x], SamplingParams(temperature=0, max_new_tokens=12, ignore_eos=True))
    assert c.tokens == g.tokens and c.finish_reason == "length"
    # admitted together: each row keeps its own setting
    h_ignore = s.submit(Request(x, SamplingParams(temperature=0, max_new_tokens=12, ignore_eos=True)))
    h_stop = s.submit(Request(x, SamplingParams(temperature=0, max_new_tokens=12)))
    s.run_until_idle()
    (a,), (b,) = h_ignore.result(), h_stop.result()
    assert a.tokens == g.tokens and a.finish_reason == "length"
    assert b.tokens == g.tokens[: first + 1] and b.finish_reason == "eos"


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
def test_stop_strings(policies, kind):
    p = policies[kind]
    x = prompts_of(p)[2]
    s = Sampler(p)
    params = dict(temperature=1.0, max_new_tokens=16, seed=4, ignore_eos=True)
    (g,) = s.generate([x], SamplingParams(**params))
    full = g.text
    # a printable ASCII token (decodes the same in context) whose text did not occur before it
    i, stop = next((i, t) for i in range(2, len(g.tokens)) if (t := p.decode([g.tokens[i]])).isascii()
                   and t.strip() and t.isprintable() and t not in p.decode(g.tokens[:i]))
    cut = full.index(stop)
    (c,) = s.generate([x], SamplingParams(**params, stop_strings=[stop, "never-there"]))
    assert c.finish_reason == "stop" and c.text == full[:cut]
    assert c.tokens == g.tokens[: i + 1]  # tokens up to the one completing the stop string
    (c2,) = s.generate([x], SamplingParams(**params, stop_strings=[stop], include_stop_str_in_output=True))
    assert c2.text == full[: cut + len(stop)] and c2.tokens == c.tokens
    check_logprobs(p, [x], [c])


def test_max_new_tokens_and_context_limit(policies):
    p = policies["gpt2"]
    outs = Sampler(p).generate(prompts_of(p), SamplingParams(max_new_tokens=7, ignore_eos=True, seed=0))
    assert all(len(c.tokens) == 7 and c.finish_reason == "length" for c in outs)
    long = list(range(4, 4 + 60))  # context 64: room for 4 more tokens
    (c,) = Sampler(p).generate([long], SamplingParams(max_new_tokens=50, ignore_eos=True, seed=0))
    assert len(c.tokens) == 4 and c.finish_reason == "length"
    check_logprobs(p, [long], [c])


def test_n_samples_seeds_and_batch_independence(policies):
    p = policies["llama"]
    prompts = prompts_of(p)
    params = SamplingParams(max_new_tokens=8, n=3, seed=42, ignore_eos=True)
    alone = Sampler(p, max_batch=1).generate([prompts[2]], params)
    assert [c.sample_index for c in alone] == [0, 1, 2]
    assert len({tuple(c.tokens) for c in alone}) == 3  # different samples
    crowd = Sampler(p, max_batch=5).generate(prompts, params)
    assert [c.tokens for c in crowd if c.prompt_index == 2] == [c.tokens for c in alone]
    other = Sampler(p).generate([prompts[2]], SamplingParams(max_new_tokens=8, n=3, seed=43, ignore_eos=True))
    assert [c.tokens for c in other] != [c.tokens for c in alone]


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
def test_slots_refilled_give_same_completions_as_alone(policies, kind):
    """Compaction and refills do not disturb other rows: each completion equals its solo run."""
    p = policies[kind]
    prompts = prompts_of(p)
    params = [SamplingParams(max_new_tokens=2 + 5 * (i % 3), seed=100 + i, ignore_eos=True) for i in range(7)]
    s = Sampler(p, max_batch=2)
    handles = [s.submit(Request(x, q)) for x, q in zip(prompts, params)]
    s.run_until_idle()
    assert not s.rows and not s.waiting
    for x, q, h in zip(prompts, params, handles):
        (solo,) = Sampler(p, max_batch=1).generate([x], q)
        (c,) = h.result()
        assert c.tokens == solo.tokens
        assert max(abs(a - b) for a, b in zip(c.logprobs, solo.logprobs)) < 1e-4


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
def test_uncached_fallback_agrees(policies, kind):
    p = policies[kind]
    prompts = prompts_of(p)[:4]
    params = SamplingParams(max_new_tokens=6, seed=9, n=2, ignore_eos=True)
    fast = Sampler(p, max_batch=3).generate(prompts, params)
    slow = Sampler(p, max_batch=3, fast=False).generate(prompts, params)
    assert [c.tokens for c in fast] == [c.tokens for c in slow]
    check_logprobs(p, prompts, slow)


def test_handle_callback_and_validation(policies):
    p = policies["gpt2"]
    s = Sampler(p, max_batch=2)
    seen = []
    h = s.submit(Request([5, 6], SamplingParams(max_new_tokens=2, n=2), callback=seen.append))
    with pytest.raises(RuntimeError, match="not finished"):
        h.result()
    s.run_until_idle()
    assert seen == [h] and len(h.result()) == 2
    with pytest.raises(ValueError, match="empty"):
        s.submit([])
    with pytest.raises(ValueError, match=r"\[0, "):
        s.submit([p.vocab_size])
    with pytest.raises(ValueError, match="no room"):
        s.submit(list(range(5, 69)))
    for bad in [dict(temperature=-1), dict(top_p=0.0), dict(top_k=-2), dict(max_new_tokens=0), dict(n=0),
                dict(stop_strings=[""])]:
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplingParams(**bad)


def test_counter_uniform_is_uniform_and_deterministic():
    keys = torch.arange(2000, dtype=torch.long) * 7919
    u = counter_uniform(keys[:, None], torch.arange(50)[None, :]).flatten()
    assert ((u >= 0) & (u < 1)).all()
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002
    hist = torch.histc(u.float(), bins=10, min=0, max=1)
    assert (hist / u.numel() - 0.1).abs().max() < 0.005
    assert torch.equal(u, counter_uniform(keys[:, None], torch.arange(50)[None, :]).flatten())


def test_lora_policy_samples_with_adapters(load):
    from seedrl.models.lm import LoraSettings

    p = load("llama", lora=LoraSettings(r=4, alpha=8, target_modules=("q_proj", "v_proj", "down_proj")))
    with torch.no_grad():
        for n, q in p.model.named_parameters():
            if "lora_B" in n:
                q.normal_(0, 0.5)
    prompts = prompts_of(p)
    outs = Sampler(p, max_batch=3).generate(prompts, SamplingParams(max_new_tokens=5, seed=0))
    check_logprobs(p, prompts, outs)


def test_bfloat16_policy_runs(load):
    p = load("gpt2", dtype="bfloat16")
    assert next(p.model.parameters()).dtype == torch.bfloat16
    prompts = prompts_of(p)
    outs = Sampler(p, max_batch=4).generate(prompts, SamplingParams(max_new_tokens=5, seed=0, ignore_eos=True))
    check_logprobs(p, prompts, outs, atol=0.1)  # bf16 rounding differs between the two code paths
