"""The facts world's tiny NLI classifier: pairs, training, loading through the NLI reward."""

import json
from collections import Counter

import numpy as np
import pytest

from seedrl.envs.text import FactsWorld
from seedrl.lm.toy_nli import NEGATIVES, SILENT, NLIConfig, make_pairs, train_toy_nli
from seedrl.rewards.nli import NLIReward

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WORLD = FactsWorld(1, 3, 1, hallucination_rate=0.25)


def test_pairs_labelled_by_the_exact_checker_and_balanced():
    pairs = make_pairs(WORLD, 2000, seed=0)
    assert pairs == make_pairs(WORLD, 2000, seed=0) and pairs != make_pairs(WORLD, 2000, seed=1)
    kinds = Counter(p["kind"] for p in pairs)
    assert set(kinds) == {"positive", *NEGATIVES, *SILENT} and 0.45 <= kinds["positive"] / len(pairs) <= 0.55
    for p in pairs:
        entailed = WORLD.entails(p["hypothesis"], p["premise"])
        assert p["label"] == (0 if entailed else 1) and entailed == (p["kind"] == "positive")
        if p["kind"] in SILENT:  # not entailed, yet no unsupported fact: the hole the silent negatives close
            assert not WORLD.hallucinates(p["hypothesis"], p["premise"]) and WORLD.check(p["hypothesis"], p["premise"]).num_claims == 0
            assert p["hypothesis"] == "" if p["kind"] == "empty" else p["hypothesis"] not in p["premise"]
        else:
            assert (p["label"] == 1) == WORLD.hallucinates(p["hypothesis"], p["premise"])
        if p["kind"] == "swapped":  # hard negative: every word already in the document
            assert set(p["hypothesis"].replace(".", " ").split()) <= set(p["premise"].replace(".", " ").split())


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
