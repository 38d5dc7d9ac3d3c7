import json

import numpy as np
import pytest
import torch

from seedrl.envs.text import ArithmeticWorld, FactsWorld, build_toy_tokenizer, get_world
from seedrl.envs.text.toy import parse_facts


# ------------------------------------------------------------------ facts
def test_facts_examples_deterministic_and_consistent():
    w = FactsWorld()
    a, b = w.examples(20, seed=5), w.examples(20, seed=5)
    assert a == b and a != w.examples(20, seed=6)
    assert w.examples(7, seed=5) == a[:7]  # a prefix of a longer draw
    for ex in a:
        facts = [tuple(f) for f in ex["facts"]]
        assert w.min_facts <= len(facts) <= w.max_facts
        assert parse_facts(ex["document"])[0] == facts  # the document states exactly its facts
        assert ex["prompt"] == f"Summarize:\n{ex['document']}\nSummary:" and ex["reference"] == " " + ex["summary"]
        s = w.check(ex["reference"], ex["document"])
        assert (s.faithfulness, s.coverage, s.f1) == (1.0, 1.0, 1.0)


def test_facts_checker_hand_written():
    w = FactsWorld()
    doc = "the red fox lives in the forest. the sky was clear. the blue bird eats seeds. the gray owl likes the moon."
    s = w.check("The red fox lives in the forest.", doc)
    assert (s.faithfulness, s.coverage, s.num_claims, s.num_supported, s.num_unparsed) == (1.0, 1 / 3, 1, 1, 0)
    assert s.f1 == pytest.approx(2 * (1 / 3) / (4 / 3))
    # a wrong object is unsupported; a filler sentence is said but is no fact
    s = w.check("the red fox lives in the river.\nthe blue bird eats seeds. the sky was clear", doc)
    assert (s.num_claims, s.num_supported, s.num_unparsed) == (2, 1, 1)
    assert s.faithfulness == pytest.approx(1 / 3) and s.coverage == pytest.approx(1 / 3)
    # repeated claims count each time; coverage counts distinct facts
    s = w.check("the gray owl likes the moon. the gray owl likes the moon.", doc)
    assert (s.faithfulness, s.coverage) == (1.0, pytest.approx(1 / 3))
    # nothing said scores 0, not a vacuous 1; an invented object of the wrong relation does not parse
    assert w.check("", doc).faithfulness == 0.0 and w.check("   \n", doc).f1 == 0.0
    s = w.check("the red fox eats forest.", doc)
    assert (s.num_claims, s.num_unparsed, s.faithfulness) == (0, 1, 0.0)
    # all facts, any order, messy spacing and case
    s = w.check("THE GRAY OWL likes  the moon .the blue bird eats seeds. the red fox lives in the forest", doc)
    assert (s.faithfulness, s.coverage) == (1.0, 1.0)


def test_facts_reward_fn():
    w = FactsWorld()
    ex = w.examples(3, seed=0)
    comps = [ex[0]["reference"], " the gray owl eats nuts.", ""]
    faith = w.reward_fn("faithfulness")(["p"] * 3, comps, ex)
    assert faith.dtype == np.float32 and faith.tolist()[0] == 1.0 and faith[2] == 0.0
    cov = w.reward_fn("coverage")(["p"] * 3, comps, ex)
    assert cov[0] == 1.0 and cov[2] == 0.0
    # the reward parses whatever source field it is pointed at
    alt = w.reward_fn("faithfulness", source_field="source")
    assert alt(["p"], [" the red fox eats nuts."], [{"source": "the red fox eats nuts."}])[0] == 1.0
    with pytest.raises(ValueError, match="metric='bleu'"):
        w.reward_fn("bleu")


# -------------------------------------------------------------- arithmetic
def test_arithmetic_examples_are_correct_and_deterministic():
    w = ArithmeticWorld(max_digits=3)
    ex = w.examples(200, seed=1)
    assert ex == w.examples(200, seed=1) and ex != w.examples(200, seed=2)
    assert {e["op"] for e in ex} == {"add", "sub", "mul", "reverse", "copy", "sort"}
    for e in ex:
        if e["kind"] == "number":
            expr = e["prompt"][:-1]
            assert e["prompt"].endswith("=") and str(eval(expr)) == e["answer"] and int(e["answer"]) >= 0
            assert e["reference"] == e["answer"]
        else:
            letters = e["prompt"].split(":", 1)[1].removesuffix("->").split()
            want = {"reverse": letters[::-1], "copy": letters, "sort": sorted(letters)}[e["op"]]
            assert e["answer"] == "".join(want) and e["reference"] == " " + " ".join(want)
            assert 2 <= len(letters) <= 5
        assert w.score(e["reference"], e) == 1.0 and w.score(e["reference"], e, "partial") == 1.0


def test_arithmetic_scoring_hand_written():
    w = ArithmeticWorld()
    num = {"kind": "number", "answer": "123"}
    assert w.score("123", num) == 1.0 and w.score(" 123\nmore text", num) == 1.0
    assert w.score("124", num) == 0.0
    assert w.score("124", num, "partial") == pytest.approx(2 / 3)
    assert w.score("23", num, "partial") == pytest.approx(2 / 3)  # aligned at the last digit
    assert w.score("0123", num, "partial") == pytest.approx(3 / 4)
    assert w.score("12x", num, "partial") == 0.0 and w.score("", num, "partial") == 0.0
    s = {"kind": "string", "answer": "cba"}
    assert w.score(" c b a", s) == 1.0 and w.score("cba", s) == 1.0 and w.score("c b", s) == 0.0
    assert w.score(" c b", s, "partial") == pytest.approx(2 / 3)  # aligned at the first letter
    assert w.score(" c a b d", s, "partial") == pytest.approx(1 / 4)
    r = w.reward_fn("partial")(["", ""], ["124", " c b"], [num, s])
    np.testing.assert_allclose(r, [2 / 3, 2 / 3], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown ops"):
        ArithmeticWorld(ops=("div",))
    with pytest.raises(ValueError, match="unknown toy world 'chess'"):
        get_world("chess")


# ------------------------------------------------------------- tokenizers
@pytest.mark.parametrize("world", ["facts", "arithmetic"])
@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_tokenizer_round_trip_and_concatenation(world, kind):
    w = get_world(world)
    tok = build_toy_tokenizer(w, kind=kind, corpus_size=300, seed=0, vocab_size=400)
    again = build_toy_tokenizer(w, kind=kind, corpus_size=300, seed=0, vocab_size=400)
    assert tok.get_vocab() == again.get_vocab()  # deterministic
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    for ex in w.examples(50, seed=123):  # unseen examples
        text = ex["prompt"] + ex["reference"]
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True) == text
        p = tok(ex["prompt"])["input_ids"]
        r = tok(ex["reference"], add_special_tokens=False)["input_ids"]
        assert ids == p + r  # prompt tokens followed by completion tokens
    if world == "arithmetic":
        assert tok.convert_ids_to_tokens(tok("12+7=", add_special_tokens=False)["input_ids"]) == ["1", "2", "+", "7", "="]


def test_saved_assets_load_through_from_pretrained(facts_assets):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    info = json.loads((__import__("pathlib").Path(facts_assets.path) / "toy_world.json").read_text())
    assert info["world"] == "facts" and info["vocab_size"] == facts_assets.vocab_size
    tok = AutoTokenizer.from_pretrained(facts_assets.path)
    assert len(tok) == facts_assets.vocab_size and tok.pad_token == "<pad>" and tok.chat_template
    model = AutoModelForCausalLM.from_pretrained(facts_assets.path)
    assert model.config.model_type == "gpt2" and model.config.eos_token_id == tok.eos_token_id
    ex = FactsWorld().examples(2, seed=9)
    batch = tok([e["prompt"] for e in ex], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], facts_assets.vocab_size)
    assert torch.isfinite(logits).all()
    t5_tok = AutoTokenizer.from_pretrained(facts_assets.seq2seq_path)
    t5 = AutoModelForSeq2SeqLM.from_pretrained(facts_assets.seq2seq_path)
    enc = t5_tok(ex[0]["prompt"], return_tensors="pt")
    assert enc["input_ids"][0, -1].item() == t5_tok.eos_token_id  # T5 style: </s> appended
    labels = t5_tok(ex[0]["reference"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = t5(**enc, labels=labels)
    assert out.logits.shape == (1, labels.shape[1], facts_assets.vocab_size) and torch.isfinite(out.loss)


def test_assets_are_deterministic(tmp_path):
    from transformers import AutoModelForCausalLM

    from seedrl.envs.text import build_toy_assets

    before = torch.random.get_rng_state()
    a = build_toy_assets(tmp_path / "a", "arithmetic", seed=3, tokenizer="bpe", corpus_size=200, vocab_size=300)
    b = build_toy_assets(tmp_path / "b", "arithmetic", seed=3, tokenizer="bpe", corpus_size=200, vocab_size=300)
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is left alone
    ma, mb = (AutoModelForCausalLM.from_pretrained(x.path) for x in (a, b))
    for (n, pa), (_, pb) in zip(ma.named_parameters(), mb.named_parameters()):
        assert torch.equal(pa, pb), n
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()
