"""Fixtures for text-environment tests: toy-world assets built once per session."""

import pytest

from seedrl.envs.text import build_toy_assets


@pytest.fixture(scope="session")
def facts_assets(tmp_path_factory):
    """Word-level tokenizer + tiny GPT-2 + tiny T5 for the facts world."""
    return build_toy_assets(tmp_path_factory.mktemp("facts_assets"), "facts", seed=0, t5=True, corpus_size=500)


@pytest.fixture(scope="session")
def facts_tokenizer(facts_assets):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(facts_assets.path)
