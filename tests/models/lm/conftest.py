"""Fixtures for the LM tests: tiny models saved to a session tmp dir (no hub access)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

pytest.importorskip("transformers")

import tiny  # noqa: E402

KINDS = ("gpt2", "llama", "qwen2", "t5")


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lm_models")
    return {kind: tiny.build_model(kind, root / kind) for kind in KINDS}


@pytest.fixture(scope="session")
def load(model_dirs):
    """``load(kind, **kw)``: a fresh ``LMPolicy`` of a tiny model (callers may change it)."""
    from seedrl.models.lm import LMPolicy

    def _load(kind: str, **kw):
        return LMPolicy.from_pretrained(model_dirs[kind], **kw)

    return _load


@pytest.fixture(scope="session")
def policies(load):
    """Shared read-only policies, one per kind (do not modify their weights)."""
    return {kind: load(kind) for kind in KINDS}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models: one intra-op thread is fastest (and immune to a busy shared machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
