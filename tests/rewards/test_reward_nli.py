import itertools
import math

import numpy as np
import pytest
import torch
from tiny_classifiers import overlap_log_prob
from transformers import BertConfig, BertForSequenceClassification

from seedrl.rewards import NLIReward, RewardError, chunk_windows, find_entailment_label

NEEDLE = "the red fox lives in the forest"


def filler(n):
    return " ".join(["filler", "word"] * (n // 2) + ["filler"] * (n % 2))


# ---------------------------------------------------------------- label lookup
def test_find_entailment_label():
    assert find_entailment_label({0: "CONTRADICTION", 1: "ENTAILMENT", 2: "NEUTRAL"}) == 1
    assert find_entailment_label({"0": "entailment", "1": "neutral", "2": "contradiction"}) == 0
    assert find_entailment_label({0: "not_entailment", 1: "Entailment"}) == 1
    assert find_entailment_label({0: "non-entailment", 1: "entails"}) == 1
    assert find_entailment_label({0: "yes", 1: "no"}, "NO") == 1
    assert find_entailment_label({0: "yes", 1: "no"}, 0) == 0
    with pytest.raises(ValueError, match=r"no label matches 'entail'.*0: 'LABEL_0', 1: 'LABEL_1'.*entailment_label="):
        find_entailment_label({0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(ValueError, match="several labels"):
        find_entailment_label({0: "entailment", 1: "strong_entailment"})
    with pytest.raises(ValueError, match="not a class index"):
        find_entailment_label({0: "entailment"}, 5)
    with pytest.raises(ValueError, match="no such label"):
        find_entailment_label({0: "entailment"}, "maybe")


# ------------------------------------------------------------------- windows
def test_chunk_windows_brute_force():
    for n, c in itertools.product(range(30), range(1, 12)):
        for stride in (1, max(1, c // 2), c, c + 3):
            w = chunk_windows(n, c, stride)
            if n <= c:
                assert w == [(0, n)]
                continue
            assert w[0][0] == 0 and w[-1][1] == n
            assert all(b - a == c for a, b in w)
            assert all(w[i][0] < w[i + 1][0] for i in range(len(w) - 1))  # no duplicates
            covered = set().union(*(range(a, b) for a, b in w))
            assert covered == set(range(n))  # every token seen, even when stride > c
            # any span of c - min(stride, c) + 1 tokens lies wholly in one window
            span = c - min(stride, c) + 1
            for s in range(n - span + 1):
                assert any(a <= s and s + span <= b for a, b in w), (n, c, stride, s)


# ------------------------------------------------------ overlap model (known)
@pytest.fixture(scope="module")
def nli(overlap_nli_path):
    return NLIReward.from_pretrained(overlap_nli_path, source_field="document", batch_size=4)


def test_labels_and_short_premise_closed_form(nli):
    assert nli.entailment_index == 1  # "ENTAILMENT" in (CONTRADICTION, ENTAILMENT, NEUTRAL)
    assert nli.max_length == 32 and nli.num_special == 3
    docs = [NEEDLE, NEEDLE, "the blue bird eats seeds", ""]
    hyps = ["the red fox", "the red cat", "the bird eats fish fish", "a fox"]
    r = nli(["p"] * 4, hyps, [{"document": d} for d in docs])
    expected = [overlap_log_prob(d, h, scale=2.0) for d, h in zip(docs, hyps)]
    np.testing.assert_allclose(r, expected, rtol=0, atol=1e-6)
    assert expected[0] == pytest.approx(-math.log(3)) and expected[2] < expected[1] < expected[0]
    assert nli.last_num_chunks.tolist() == [1, 1, 1, 1]


def test_long_premise_takes_max_over_chunks(nli):
    # 60 premise tokens, far over the 32-token budget; the needle only in the middle.
    premise = " ".join([filler(30), NEEDLE, filler(23)])
    assert len(premise.split()) == 60
    hyp = "red fox forest"
    r = nli(["p"], [hyp], [{"document": premise}])
    assert r[0] == pytest.approx(-math.log(3), abs=1e-6)  # some window holds all 3 words
    # brute force: the same windows, scored with the closed form, maximised
    c = 32 - 3 - 3
    windows = chunk_windows(60, c, c // 2)
    words = premise.split()
    assert nli.last_num_chunks.tolist() == [len(windows)] and len(windows) > 2
    per_window = [overlap_log_prob(" ".join(words[a:b]), hyp, 2.0) for a, b in windows]
    assert max(per_window) == pytest.approx(r[0], abs=1e-6)
    assert min(per_window) < max(per_window)  # windows without the needle score lower
    # the first window alone (plain truncation) would miss the needle entirely
    assert overlap_log_prob(" ".join(words[:c]), hyp, 2.0) == pytest.approx(-6 - math.log(math.exp(-6) + 2))


def test_words_in_different_chunks_are_not_combined(nli):
    # "red" only at the start and "fox" only at the end: no single window holds both
    premise = " ".join(["red", filler(50), "fox"])
    r = nli(["p"], ["red fox"], [{"document": premise}])
    assert r[0] == pytest.approx(overlap_log_prob("red", "red fox", 2.0), abs=1e-6)  # m = 1 at best
    assert r[0] < -math.log(3) - 1


def test_max_premise_tokens_and_stride(overlap_nli_path):
    premise = " ".join([filler(20), NEEDLE, filler(20)])
    hyp = "red fox"
    for max_prem, stride in [(4, None), (4, 1), (6, 6), (10, 3)]:
        nli = NLIReward.from_pretrained(overlap_nli_path, max_premise_tokens=max_prem, chunk_stride=stride)
        r = nli(["p"], [hyp], [{"document": premise}])
        windows = chunk_windows(len(premise.split()), max_prem, stride or max_prem // 2)
        words = premise.split()
        expected = max(overlap_log_prob(" ".join(words[a:b]), hyp, 2.0) for a, b in windows)
        assert nli.last_num_chunks.tolist() == [len(windows)]
        assert r[0] == pytest.approx(expected, abs=1e-6), (max_prem, stride)


def test_prob_output_and_batching_invariance(overlap_nli_path):
    rng = np.random.default_rng(0)
    vocab = NEEDLE.split() + ["bird", "eats", "seeds", "filler", "word", "cat"]
    docs = [" ".join(rng.choice(vocab, size=rng.integers(0, 70))) for _ in range(9)]
    hyps = [" ".join(rng.choice(vocab, size=rng.integers(1, 6))) for _ in range(9)]
    ex = [{"document": d} for d in docs]
    lp = NLIReward.from_pretrained(overlap_nli_path, output="log_prob", batch_size=1)(["p"] * 9, hyps, ex)
    for bs in (3, 64):
        again = NLIReward.from_pretrained(overlap_nli_path, output="log_prob", batch_size=bs)(["p"] * 9, hyps, ex)
        np.testing.assert_array_equal(lp, again)
    prob = NLIReward.from_pretrained(overlap_nli_path, output="prob")(["p"] * 9, hyps, ex)
    np.testing.assert_allclose(prob, np.exp(lp), rtol=1e-6)
    assert np.all((prob > 0) & (prob <= 1 / 3 + 1e-6))
    with pytest.raises(ValueError, match="output='logit'"):
        NLIReward.from_pretrained(overlap_nli_path, output="logit")


def test_missing_field_and_long_hypothesis(nli):
    with pytest.raises(RewardError, match=r"example 1 has no field 'document'.*\['source'\]"):
        nli(["p", "p"], ["a", "b"], [{"document": "a"}, {"source": "b"}])
    with pytest.raises(RewardError, match="field 'document' is a int"):
        nli(["p"], ["a"], [{"document": 3}])
    long_hyp = " ".join(["red"] * 20)  # > max_hypothesis_tokens = (32 - 3) // 2 = 14
    with pytest.warns(UserWarning, match="1 hypotheses longer than 14 tokens"):
        r = nli(["p"], [long_hyp], [{"document": "red"}])
    assert r[0] == pytest.approx(-math.log(3), abs=1e-6)


def test_missing_path_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model at path"):
        NLIReward.from_pretrained(str(tmp_path / "nope"))


# ---------------------------------------------- a real BERT classifier, 3 labels
def test_real_bert_with_known_head(tmp_path, nli_tokenizer):
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(nli_tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32, num_labels=3,
        id2label={0: "contradiction", 1: "neutral", 2: "Entailment"},
        label2id={"contradiction": 0, "neutral": 1, "Entailment": 2},
    )
    model = BertForSequenceClassification(cfg)
    bias = torch.tensor([0.5, -1.0, 2.0])
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(bias)
    model.save_pretrained(tmp_path)
    nli_tokenizer.save_pretrained(tmp_path)
    reward = NLIReward.from_pretrained(tmp_path, source_field="doc", max_premise_tokens=5)
    assert reward.entailment_index == 2
    docs = [{"doc": filler(n)} for n in (0, 3, 40)]
    r = reward(["p"] * 3, ["the fox", "a", "red bird eats"], docs)
    expected = torch.log_softmax(bias, 0)[2].item()
    np.testing.assert_allclose(r, [expected] * 3, atol=1e-6)
    assert reward.last_num_chunks.tolist() == [1, 1, len(chunk_windows(40, 5, 2))]
    # the random encoder matters once the head does: logits of a pair match a direct forward
    with torch.no_grad():
        model.classifier.weight.normal_()
    direct = NLIReward(model, nli_tokenizer, source_field="doc")
    got = direct(["p"], ["red fox"], [{"doc": "the red fox lives"}])
    enc = nli_tokenizer("the red fox lives", "red fox", return_tensors="pt")
    assert "token_type_ids" in enc
    with torch.no_grad():
        want = torch.log_softmax(model(**enc).logits[0], 0)[2].item()
    assert got[0] == pytest.approx(want, abs=1e-5)


# ---------------------------------------------------------------- byte-level BPE: re-encoded windows may grow
def _byte_bpe_tokenizer():
    """A tiny byte-level BPE (trained here, no download) whose merges mostly exist with a
    leading space ("Ġword"): a window cut at a word's first character re-encodes longer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    words = [f"{a}{b}{c}" for a, b, c in itertools.product("bdklmprst", "aeiou", "gnxz")]
    corpus = [" " + " ".join(words[i:i + 9]) for i in range(0, len(words), 3)] * 4
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["[PAD]", "[CLS]", "[SEP]"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.Sequence([  # offsets without the leading space, as RoBERTa's
        processors.ByteLevel(trim_offsets=True),
        processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                   model_max_length=512)
    return fast, words


def test_bpe_windows_fit_and_cover_every_word():
    tokenizer, vocab = _byte_bpe_tokenizer()
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16, max_position_embeddings=64, num_labels=3,
                     id2label={0: "contradiction", 1: "entailment", 2: "neutral"})
    torch.manual_seed(0)
    nli = NLIReward(BertForSequenceClassification(cfg), tokenizer, max_length=24, batch_size=64)
    rng = np.random.default_rng(0)
    hypothesis = " ".join(vocab[:3])
    for size in range(20, 60):  # distinct words; the sizes vary where the last window starts
        document = " ".join(rng.permutation(vocab)[:size].tolist())
        windows, hyps, _ = nli.pairs([document], [hypothesis])
        lengths = [len(tokenizer(w, h)["input_ids"]) for w, h in zip(windows, hyps)]
        assert max(lengths) <= 24, (size, lengths)  # nothing is cut by truncation="only_first"
        scored = set(itertools.chain.from_iterable(w.split() for w in windows))
        assert set(document.split()) <= scored, (size, sorted(set(document.split()) - scored))
    assert nli(["p"], [hypothesis], [{"document": document}]).shape == (1,)
