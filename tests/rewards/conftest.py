"""Fixtures for reward tests: tiny classifiers saved for from_pretrained (see tiny_classifiers.py)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny_classifiers import BagOfWords, BagOfWordsConfig, make_nli_tokenizer


@pytest.fixture(scope="session")
def nli_tokenizer():
    return make_nli_tokenizer()


@pytest.fixture(scope="session")
def overlap_nli_path(tmp_path_factory, nli_tokenizer):
    """Saved overlap NLI model; labels ordered (contradiction, entailment, neutral), scale 2."""
    path = tmp_path_factory.mktemp("overlap_nli")
    # label_order[j] = role of class j (0 entailment, 1 neutral, 2 contradiction)
    cfg = BagOfWordsConfig(
        vocab_size=len(nli_tokenizer), mode="overlap", label_order=[2, 0, 1], num_labels=3,
        id2label={0: "CONTRADICTION", 1: "ENTAILMENT", 2: "NEUTRAL"},
        label2id={"CONTRADICTION": 0, "ENTAILMENT": 1, "NEUTRAL": 2}, max_position_embeddings=32,
    )
    model = BagOfWords(cfg)
    with torch.no_grad():
        model.scale.fill_(2.0)
    model.save_pretrained(path)
    nli_tokenizer.save_pretrained(path)
    return path
