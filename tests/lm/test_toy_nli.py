"""The facts world's tiny NLI classifier: pairs, training, loading through the NLI reward."""

import json
from collections import Counter

import numpy as np
import pytest

from seedrl.envs.text import FactsWorld
from seedrl.envs.text.toy import parse_facts, split_sentences
from seedrl.lm.toy_nli import GARBLED, NEGATIVES, SILENT, NLIConfig, garble_sentence, make_pairs, train_toy_nli
from seedrl.rewards.nli import NLIReward

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WORLD = FactsWorld(1, 3, 1, hallucination_rate=0.25)


def test_pairs_labelled_by_the_exact_checker_and_balanced():
    pairs = make_pairs(WORLD, 2000, seed=0)
    assert pairs == make_pairs(WORLD, 2000, seed=0) and pairs != make_pairs(WORLD, 2000, seed=1)
    kinds = Counter(p["kind"] for p in pairs)
    assert set(kinds) == {"positive", *NEGATIVES, *SILENT, *GARBLED} and 0.45 <= kinds["positive"] / len(pairs) <= 0.55
    for p in pairs:
        entailed = WORLD.entails(p["hypothesis"], p["premise"])
        assert p["label"] == (0 if entailed else 1) and entailed == (p["kind"] == "positive")
        if p["kind"] in GARBLED:  # not entailed, no unsupported fact: checked in detail below
            assert not WORLD.hallucinates(p["hypothesis"], p["premise"])
        elif p["kind"] in SILENT:  # not entailed, yet no unsupported fact: the hole the silent negatives close
            assert not WORLD.hallucinates(p["hypothesis"], p["premise"]) and WORLD.check(p["hypothesis"], p["premise"]).num_claims == 0
            assert p["hypothesis"] == "" if p["kind"] == "empty" else p["hypothesis"] not in p["premise"]
        else:
            assert (p["label"] == 1) == WORLD.hallucinates(p["hypothesis"], p["premise"])
        if p["kind"] == "swapped":  # hard negative: every word already in the document
            assert set(p["hypothesis"].replace(".", " ").split()) <= set(p["premise"].replace(".", " ").split())


def _longest_run(words: list[str]) -> int:
    """Most times one span of 1-3 words repeats back to back in ``words``."""
    best = 1
    for n in (1, 2, 3):
        for i in range(len(words)):
            k = 1
            while words[i:i + n] == words[i + k * n:i + (k + 1) * n] and len(words[i:i + n]) == n:
                k += 1
            best = max(best, k)
    return best


def test_garbled_negatives_repeat_or_break_a_sentence_of_the_document_words():
    """Each GARBLED kind is generated (about 4 % of pairs each), labelled not entailed, and is what it
    says: a positive's facts (all supported) plus exactly one sentence that is neither a fact nor a
    document sentence, made only of the document's words; ``repeated`` has a span repeated 2-5 times
    in a row, ``broken`` none; some end without a full stop (cut off)."""
    pairs = make_pairs(WORLD, 4000, seed=3)
    kinds = Counter(p["kind"] for p in pairs)
    for kind in GARBLED:
        assert 0.03 <= kinds[kind] / len(pairs) <= 0.05, kinds
    unfinished = Counter()
    for p in (p for p in pairs if p["kind"] in GARBLED):
        doc, hyp = p["premise"], p["hypothesis"]
        assert p["label"] == 1 and not WORLD.entails(hyp, doc) and not WORLD.hallucinates(hyp, doc)
        claims, unparsed = parse_facts(hyp)
        assert set(claims) <= set(parse_facts(doc)[0])  # the rest of the summary (if any) is faithful
        assert len(unparsed) == 1 and unparsed[0] not in split_sentences(doc)
        bad = unparsed[0].split()
        assert set(bad) <= set(doc.replace(".", " ").split())
        if p["kind"] == "repeated":
            assert 2 <= _longest_run(bad) <= 5, hyp
        unfinished[p["kind"]] += not hyp.endswith(".")
    assert all(unfinished[k] > 0 for k in GARBLED), unfinished
    # the hack RL found, seen whole: "the gray mouse likes the likes the likes likes" is a repeated-kind text
    assert any(p["kind"] == "repeated" and _longest_run(parse_facts(p["hypothesis"])[1][0].split()) >= 3 for p in pairs)


def test_garble_sentence_kinds_and_bad_kind():
    rng = np.random.default_rng(0)
    sentence = "the gray mouse likes the rain"
    broken = {garble_sentence("broken", sentence, rng) for _ in range(200)}
    assert "the gray mouse likes" in broken and "gray mouse likes the rain" in broken  # truncated, word dropped
    assert any(sorted(b.split()) == sorted(sentence.split()) and b != sentence for b in broken)  # shuffled
    repeated = {garble_sentence("repeated", sentence, rng) for _ in range(200)}
    assert "the gray mouse likes likes the rain" in repeated and "the gray mouse likes the likes the" in repeated
    with pytest.raises(ValueError, match="kind='copied'"):
        garble_sentence("copied", sentence, rng)
    with pytest.raises(ValueError, match="garbled_rate=0.9"):
        make_pairs(WORLD, 10, seed=0, garbled_rate=0.9)


@pytest.fixture(scope="module")
def tiny_nli(tmp_path_factory):
    out = tmp_path_factory.mktemp("nli") / "nli"
    cfg = NLIConfig(hidden=32, layers=2, heads=2, steps=250, batch_size=32, lr=2e-3, warmup=20,
                    train_documents=3000, eval_documents=400)
    return out, train_toy_nli(WORLD, out, seed=0, config=cfg)


def test_tiny_nli_beats_chance_and_reports_accuracy(tiny_nli):
    out, metrics = tiny_nli
    assert metrics["accuracy"] >= 0.65, metrics  # balanced labels: chance is 0.5
    assert json.loads((out.parent / "nli_eval.json").read_text())["accuracy"] == metrics["accuracy"]


def test_saved_nli_loads_through_the_reward(tiny_nli):
    out, metrics = tiny_nli
    reward = NLIReward.from_pretrained(out, output="prob")
    assert reward.model.config.id2label[reward.entailment_index] == "entailment"
    held = make_pairs(WORLD, 400, seed=1)
    probs = reward([""] * len(held), [p["hypothesis"] for p in held], [{"document": p["premise"]} for p in held])
    assert reward.last_num_chunks.max() == 1  # documents fit whole: no chunking
    accuracy = np.mean((probs >= 0.5) == np.array([p["label"] == 0 for p in held]))
    assert accuracy == pytest.approx(metrics["accuracy"], abs=1e-9)  # same model, same pairs, same decisions


def test_deberta_arch_saves_and_loads_through_the_reward(tmp_path):
    """The relative-position classifier (``arch: deberta``) round-trips like the BERT one."""
    out = tmp_path / "nli"
    cfg = NLIConfig(arch="deberta", hidden=16, layers=1, heads=2, steps=5, batch_size=8, train_documents=50,
                    eval_documents=40)
    metrics = train_toy_nli(WORLD, out, seed=0, config=cfg)
    reward = NLIReward.from_pretrained(out, output="prob")
    assert type(reward.model).__name__ == "DebertaV2ForSequenceClassification"
    assert reward.model.config.id2label[reward.entailment_index] == "entailment"
    held = make_pairs(WORLD, 40, seed=1)
    probs = reward([""] * len(held), [p["hypothesis"] for p in held], [{"document": p["premise"]} for p in held])
    accuracy = np.mean((probs >= 0.5) == np.array([p["label"] == 0 for p in held]))
    assert accuracy == pytest.approx(metrics["accuracy"], abs=1e-9)


def test_unknown_arch_is_refused():
    with pytest.raises(ValueError, match="arch='gpt'"):
        NLIConfig(arch="gpt")
