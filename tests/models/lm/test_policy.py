"""LMPolicy: loading, clear errors, score() against an unbatched brute force, LoRA, weight copies."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tiny
from seedrl.models.lm import LMPolicy, LoraSettings, ModelNotFoundError, PromptTooLongError

PROMPTS = ["the quick brown fox", "a", "question: what is two plus three? answer:"]


def brute_force(policy, prompt, completion, temperature=1.0):
    """Per-token log-probs and entropies of one row, unbatched and unpadded."""
    m = policy.model
    if policy.is_encoder_decoder:
        start = policy.config.decoder_start_token_id
        logits = m(input_ids=torch.tensor([prompt]),
                   decoder_input_ids=torch.tensor([[start, *completion[:-1]]])).logits[0]
    else:
        logits = m(input_ids=torch.tensor([prompt + completion])).logits[0, len(prompt) - 1: -1]
    logp = F.log_softmax(logits.float() / temperature, -1)
    tok = logp.gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)
    return tok, -(logp.exp() * logp).sum(-1)


def rows(policy, seed=0):
    g = torch.Generator().manual_seed(seed)
    prompts = policy.tokenize_prompts(PROMPTS)
    lengths = [5, 0, 9]
    comps = [torch.randint(0, policy.vocab_size, (n,), generator=g).tolist() for n in lengths]
    comps[0][-1] = tiny.EOS  # EOS is an ordinary label
    return prompts, comps


@pytest.mark.parametrize("kind", ["gpt2", "llama", "t5"])
def test_loads_family_from_saved_dir(policies, kind):
    p = policies[kind]
    assert p.is_encoder_decoder == (kind == "t5")
    assert p.pad_token_id == tiny.PAD and tiny.EOS in p.eos_token_ids
    assert p.context_length == (None if kind == "t5" else 64)
    assert not p.model.training


def test_missing_path_and_hub_id_errors(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ModelNotFoundError, match="nope"):
        LMPolicy.from_pretrained(missing)
    with pytest.raises(ModelNotFoundError, match="no hub access"):
        LMPolicy.from_pretrained("seedrl-test/definitely-not-cached", local_files_only=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="config.json"):
        LMPolicy.from_pretrained(tmp_path / "empty")


def test_tokenizer_without_pad_token(tmp_path):
    path = tiny.build_model("gpt2", tmp_path / "nopad", with_pad=False)
    with pytest.raises(ValueError, match="no pad token"):
        LMPolicy.from_pretrained(path)
    p = LMPolicy.from_pretrained(path, pad_token="eos")
    assert p.pad_token_id == tiny.EOS
    # masks come from lengths: EOS (== pad here) inside and at the end of a completion is scored
    prompts, comps = rows(p)
    comps[2][3] = tiny.EOS
    s = p.score(prompts, comps)
    assert s.mask.sum(1).tolist() == [len(c) for c in comps]
    for b in (0, 2):
        tok, _ = brute_force(p, prompts[b], comps[b])
        torch.testing.assert_close(s.token_logprobs[b, : len(comps[b])], tok, atol=1e-5, rtol=0)


def test_tokenize_prompts_limits(policies):
    p = policies["gpt2"]
    long = "one two three four five six seven eight nine ten " * 20
    with pytest.raises(PromptTooLongError, match="prompt 1 has"):
        p.tokenize_prompts(["a", long])
    with pytest.raises(PromptTooLongError, match="prompt 0"):
        p.tokenize_prompts(["the quick brown fox"], max_prompt_tokens=2)
    full = p.tokenizer(long)["input_ids"]
    (cut,) = p.tokenize_prompts([long], truncation="left")
    assert cut == full[-(p.context_length - 1):]
    (cut,) = p.tokenize_prompts([long], max_prompt_tokens=7, truncation="left")
    assert cut == full[-7:]


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen2", "t5"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_score_matches_unbatched_brute_force(policies, kind, temperature):
    p = policies[kind]
    prompts, comps = rows(p)
    with torch.no_grad():
        s = p.score(prompts, comps, return_logits=True, temperature=temperature)
        L = max(len(c) for c in comps)
        assert s.token_logprobs.shape == s.mask.shape == s.entropies.shape == (3, L)
        assert s.logits.shape == (3, L, p.vocab_size) and s.token_logprobs.dtype == torch.float32
        assert s.mask.tolist() == [[n < len(c) for n in range(L)] for c in comps]
        for b, (x, y) in enumerate(zip(prompts, comps)):
            if not y:
                assert s.sequence_logprobs[b] == 0 and not s.mask[b].any()
                continue
            tok, ent = brute_force(p, x, y, temperature)
            torch.testing.assert_close(s.token_logprobs[b, : len(y)], tok, atol=2e-5, rtol=0)
            torch.testing.assert_close(s.entropies[b, : len(y)], ent, atol=2e-5, rtol=0)
            torch.testing.assert_close(s.sequence_logprobs[b], tok.sum(), atol=1e-4, rtol=0)
            assert (s.token_logprobs[b, len(y):] == 0).all()


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
def test_score_is_differentiable_and_gradients_match(load, kind):
    p = load(kind)
    prompts, comps = rows(p)
    p.model.zero_grad()
    p.score(prompts, comps).sequence_logprobs.sum().backward()
    batched = {n: q.grad.clone() for n, q in p.model.named_parameters() if q.grad is not None}
    p.model.zero_grad()
    sum(brute_force(p, x, y)[0].sum() for x, y in zip(prompts, comps) if y).backward()
    assert batched
    for n, q in p.model.named_parameters():
        torch.testing.assert_close(batched[n], q.grad, atol=1e-4, rtol=1e-3, msg=n)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "t5"])
def test_hidden_states_are_those_of_each_completion_position(policies, kind):
    """``score(return_hidden=True)``: row n holds the last hidden state that predicts token n
    (the unbatched forward's), beside unchanged log-probs."""
    p = policies[kind]
    prompts, comps = rows(p)
    with torch.no_grad():
        s = p.score(prompts, comps, return_hidden=True)
        plain = p.score(prompts, comps)
        torch.testing.assert_close(s.token_logprobs, plain.token_logprobs)
        for b, (x, y) in enumerate(zip(prompts, comps)):
            if not y:
                continue
            if p.is_encoder_decoder:
                start = p.config.decoder_start_token_id
                out = p.model(input_ids=torch.tensor([x]), decoder_input_ids=torch.tensor([[start, *y[:-1]]]),
                              output_hidden_states=True)
                want = out.decoder_hidden_states[-1][0]
            else:
                out = p.model(input_ids=torch.tensor([x + y]), output_hidden_states=True)
                want = out.hidden_states[-1][0, len(x) - 1: -1]
            torch.testing.assert_close(s.hidden[b, : len(y)], want, atol=2e-5, rtol=0)


def test_score_rejects_bad_rows(policies):
    p = policies["gpt2"]
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        p.score([[5], []], [[1], [2]])
    with pytest.raises(PromptTooLongError, match="row 0"):
        p.score([[5] * 60], [[1] * 10])
    with pytest.raises(ValueError, match="temperature"):
        p.score([[5]], [[1]], temperature=0)


def test_lora_adapters(load):
    base = load("gpt2")
    p = load("gpt2", lora=LoraSettings(r=4, alpha=8, target_modules=("c_attn",)))
    trainable = [n for n, q in p.model.named_parameters() if q.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    prompts, comps = rows(p)
    with torch.no_grad():  # B = 0 at init: same function as the base model
        torch.testing.assert_close(p.score(prompts, comps).token_logprobs, base.score(prompts, comps).token_logprobs)
        for n, q in p.model.named_parameters():
            if "lora_B" in n:
                q.normal_(0, 0.5)
        assert not torch.allclose(p.score(prompts, comps).token_logprobs, base.score(prompts, comps).token_logprobs)
    loss = -p.score(prompts, comps).sequence_logprobs.sum()
    loss.backward()
    assert all(q.grad is not None for q in p.model.parameters() if q.requires_grad)


def test_load_state_dict_from_copies_in_place(tmp_path, load):
    other_dir = tiny.build_model("gpt2", tmp_path / "other", seed=7)
    a, b = load("gpt2"), LMPolicy.from_pretrained(other_dir)
    prompts, comps = rows(a)
    with torch.no_grad():
        before = {n: q.data_ptr() for n, q in a.model.named_parameters()}
        assert not torch.allclose(a.score(prompts, comps).token_logprobs, b.score(prompts, comps).token_logprobs)
        assert a.load_state_dict_from(b) is a and a.version == 1
        assert {n: q.data_ptr() for n, q in a.model.named_parameters()} == before
        torch.testing.assert_close(a.score(prompts, comps).token_logprobs, b.score(prompts, comps).token_logprobs)
        a.load_state_dict_from({k: v * 0 for k, v in b.state_dict().items()})
        assert a.version == 2 and all((q == 0).all() for q in a.model.parameters())
    with pytest.raises(KeyError, match="missing"):
        a.load_state_dict_from({"nope": torch.zeros(1)})
    sd = dict(b.state_dict())
    key = next(iter(sd))
    sd[key] = torch.zeros(3)
    with pytest.raises(ValueError, match=key):
        a.load_state_dict_from(sd)
