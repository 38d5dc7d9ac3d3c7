"""Hallucinating references of the facts world and the checker's hallucination flag."""

import numpy as np
import pytest

from seedrl.envs.text import FactsWorld
from seedrl.envs.text.toy import FAME_ORDER, WELL_KNOWN, fact_sentence, parse_facts, well_known_fact


def test_rate_zero_keeps_clean_references_and_documents_do_not_depend_on_rate():
    clean, noisy = FactsWorld(1, 3, 1), FactsWorld(1, 3, 1, hallucination_rate=0.25)
    a, b = clean.examples(300, seed=3), noisy.examples(300, seed=3)
    assert all(ex["reference"] == " " + ex["summary"] and not ex["hallucinated_reference"] for ex in a)
    for x, y in zip(a, b):  # same documents, same clean summaries whatever the rate
        assert (x["document"], x["summary"], x["facts"]) == (y["document"], y["summary"], y["facts"])
    assert noisy.examples(300, seed=3) == b  # deterministic by seed


def test_hallucinated_references_carry_exactly_one_well_known_unsupported_fact():
    w = FactsWorld(1, 3, 1, hallucination_rate=0.25)
    assert w.famous == set(FAME_ORDER[:3])
    exs = w.examples(3000, seed=0)
    flags = np.array([ex["hallucinated_reference"] for ex in exs])
    assert 0.20 <= flags.mean() <= 0.27  # 3 famous animals of 12, less docs already stating the fact
    for ex in exs:
        facts = [tuple(f) for f in ex["facts"]]
        s = w.check(ex["reference"], ex["document"])
        assert s.hallucinated == ex["hallucinated_reference"] and s.coverage == 1.0
        if ex["hallucinated_reference"]:
            extra = well_known_fact(*facts[0][:2])
            assert facts[0][1] in w.famous and extra not in facts and s.num_unsupported == 1
            claims = parse_facts(ex["reference"])[0]
            assert claims == [facts[0], extra, *facts[1:]]  # right after the first fact
        else:
            assert ex["reference"] == " " + ex["summary"]
            assert facts[0][1] not in w.famous or well_known_fact(*facts[0][:2]) in facts


def test_rate_extremes_and_bad_rate():
    assert FactsWorld(hallucination_rate=1.0).famous == set(WELL_KNOWN)
    assert FactsWorld(hallucination_rate=0.04).famous == set()  # rounds to a multiple of 1/12
    with pytest.raises(ValueError, match="hallucination_rate=1.5"):
        FactsWorld(hallucination_rate=1.5)


def test_hallucinates_and_entails_by_hand():
    w = FactsWorld()
    doc = "the red fox lives in the forest. the sky was clear. the blue bird eats seeds."
    assert w.entails("the blue bird eats seeds. the red fox lives in the forest.", doc)  # reordered subset
    assert w.entails("the sky was clear. the blue bird eats seeds", doc)  # a copied filler is entailed
    assert not w.entails("", doc) and not w.hallucinates("", doc)  # nothing said: no hallucination, no entailment
    assert w.hallucinates("the red fox lives in the river.", doc) and not w.entails("the red fox lives in the river.", doc)
    assert not w.hallucinates("it was a quiet day.", doc) and not w.entails("it was a quiet day.", doc)  # no fact, not in doc
    s = w.check("the red fox lives in the forest. " + fact_sentence(well_known_fact("red", "fox")), doc)
    assert (s.num_unsupported, s.hallucinated) == (1, True)
