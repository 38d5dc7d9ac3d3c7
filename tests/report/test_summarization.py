"""Summarization metrics against hand-computed values and properties."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seedrl.envs.text import FactsWorld
from seedrl.report.summarization import extractiveness, fragments, novel_ngram_fraction, rouge_f, summarization_metrics


def test_rouge_by_hand():
    # hyp "the cat sat", ref "the cat ran away": unigrams 2 of 3 / 2 of 4 -> F = 2*(2/3)(1/2)/(2/3+1/2) = 4/7;
    # bigrams: "the cat" 1 of 2 / 1 of 3 -> F = 2*(1/2)(1/3)/(5/6) = 2/5; LCS "the cat" = 2 -> 4/7
    r = rouge_f(["the cat sat"], ["the cat ran away"])
    assert r["rouge1"][0] == pytest.approx(4 / 7) and r["rouge2"][0] == pytest.approx(2 / 5)
    assert r["rougeL"][0] == pytest.approx(4 / 7)
    # LCS skips: hyp "a x b y c", ref "a b c": LCS 3 -> P 3/5, R 1 -> F 2*(3/5)/(8/5) = 3/4; no shared bigram
    r = rouge_f(["a x b y c"], ["a b c"])
    assert (r["rougeL"][0], r["rouge2"][0]) == (pytest.approx(3 / 4), 0.0)


def test_fragments_coverage_density_by_hand():
    doc, summ = "a b c d e f", "a b x d e f a"
    assert fragments(doc.split(), summ.split()) == [("a", "b"), ("d", "e", "f"), ("a",)]
    e = extractiveness(summ, doc)
    assert e["coverage"] == pytest.approx(6 / 7)  # x is the only word outside a fragment
    assert e["density"] == pytest.approx((4 + 9 + 1) / 7)
    assert e["compression"] == pytest.approx(6 / 7) and e["doc_copied"] == 1.0
    # novel n-grams: 1-grams {x} of 7; 2-grams (a b)(b x)(x d)(d e)(e f)(f a): 3 novel of 6; 3-grams: 4 of 5 novel
    assert (e["novel_1"], e["novel_2"], e["novel_3"]) == (pytest.approx(1 / 7), 0.5, pytest.approx(4 / 5))
    # the longest fragment wins over the first match: "b c" at 1 beats "b" at 4
    assert fragments("b z z b c".split(), "b c".split()) == [("b", "c")]


def test_empty_summary_is_nan_not_zero():
    e = extractiveness("", "a b")
    assert all(math.isnan(e[k]) for k in ("coverage", "density", "novel_1"))
    assert math.isnan(novel_ngram_fraction(["a"], ["a"], 2))


words_st = st.lists(st.sampled_from(list("abcdef")), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(words_st, words_st)
def test_coverage_in_unit_interval_and_density_bounds(doc, summ):
    e = extractiveness(" ".join(summ), " ".join(doc))
    assert 0.0 <= e["coverage"] <= 1.0
    assert e["coverage"] <= e["density"] <= len(summ) * e["coverage"] + 1e-12
    assert sum(len(f) for f in fragments(doc, summ)) <= len(summ)


@settings(max_examples=60, deadline=None)
@given(words_st, st.integers(0, 11), st.integers(1, 12))
def test_copying_the_document_has_no_novel_ngrams_and_full_coverage(doc, a, k):
    span = doc[min(a, len(doc) - 1):][:k]
    for summ in (doc, span):
        e = extractiveness(" ".join(summ), " ".join(doc))
        assert e["coverage"] == 1.0 and e["novel_1"] == 0.0
        assert all(e[f"novel_{n}"] == 0.0 or math.isnan(e[f"novel_{n}"]) for n in (2, 3))


def test_copying_whole_document_gives_density_len():
    doc = "q w e r t y"
    e = extractiveness(doc, doc)
    assert (e["coverage"], e["density"], e["doc_copied"]) == (1.0, 6.0, 1.0)


def test_summarization_metrics_facts_world():
    w = FactsWorld()
    docs = ["the red fox lives in the forest. the sky was clear. the blue bird eats seeds."] * 4
    refs = ["the red fox lives in the forest. the blue bird eats seeds."] * 4
    summ = [refs[0], "the red fox lives in the river.", "the blue bird eats seeds.", ""]
    m = summarization_metrics(summ, docs, refs, nli_probs=[0.9, 0.2, 0.6, 0.5], checker=w.entails,
                              hallucinates=w.hallucinates, num_tokens=[10, 6, 5, 1])
    assert m["entail_nli"] == 0.75 and m["nli_prob"] == pytest.approx(0.55)
    assert m["entail_exact"] == 0.5 and m["hallucination_rate"] == 0.25
    assert m["rouge1"] == pytest.approx((1 + rouge_f([summ[1]], [refs[0]])["rouge1"][0] + 10 / 17 + 0) / 4)  # P 1, R 5/12
    assert m["length_words"] == pytest.approx((12 + 7 + 5 + 0) / 4) and m["length_tokens"] == 5.5
    assert m["length_ratio"] == pytest.approx(0.5)
    assert m["shrinking"] == 1.0 and m["copying"] == 0.0
    # baseline given explicitly; copying the whole document flags copying
    m2 = summarization_metrics(docs[:1], docs[:1], refs[:1], baseline={"length_words": 12, "density": 5.5})
    assert m2["novel_1"] == 0.0 and m2["coverage"] == 1.0 and m2["density_ratio"] == pytest.approx(16 / 5.5)  # the whole 16-word document is one fragment
    assert m2["copying"] == 1.0 and m2["shrinking"] == 0.0
    with pytest.raises(ValueError, match="nli_probs"):
        summarization_metrics(summ, docs, nli_probs=[1.5, 0, 0, 0])
    with pytest.raises(ValueError, match="same length"):
        summarization_metrics(summ, docs[:2])
