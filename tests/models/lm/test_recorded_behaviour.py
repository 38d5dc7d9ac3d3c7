"""RLDS completions store the log-probs of the distribution actually sampled from
(temperature, top-k and top-p applied), checked against a brute-force filtered distribution;
and the learners refuse sampling settings they cannot correct for."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from seedrl.config import ConfigError, load_config
from seedrl.data import open_dataset
from seedrl.models.lm import Sampler, SamplingParams
from seedrl.runtime.lm_loop import CompletionRecorder, LMPGConfig

T, K = 0.6, 4


def brute_force_logq(logits: torch.Tensor, tok: int) -> float:
    """log q(tok) for q = softmax over the K largest of logits / T, renormalised."""
    z = logits.double() / T
    kept = z.topk(K).indices.tolist()
    assert tok in kept
    return torch.log_softmax(z[kept], -1)[kept.index(tok)].item()


def test_recorded_behaviour_logprobs_are_the_sampling_distribution(policies, tmp_path):
    p = policies["gpt2"]
    prompts = p.tokenize_prompts(["the quick brown fox", "one two"])
    outs = Sampler(p, max_batch=4).generate(prompts, SamplingParams(temperature=T, top_k=K, max_new_tokens=5, n=2, seed=1))
    recorder = CompletionRecorder(tmp_path / "episodes", rate=1.0, seed=0)
    for i, tokens in enumerate(prompts):
        mine = [c for c in outs if c.prompt_index == i]
        recorder.record(SimpleNamespace(text=f"p{i}", tokens=tokens, index=i), mine, np.zeros(len(mine)))
    recorder.close()
    with torch.no_grad():
        logits = p.score([prompts[c.prompt_index] for c in outs], [c.tokens for c in outs], return_logits=True).logits
    want = {tuple(c.tokens): [brute_force_logq(logits[i, n], t) for n, t in enumerate(c.tokens)] for i, c in enumerate(outs)}
    ds = open_dataset(tmp_path / "episodes")
    assert len(ds) == len(outs)
    for e in range(len(ds)):
        step = ds[e][0]
        stored = np.asarray(step["behaviour_logprobs"], np.float64)
        expected = want[tuple(int(t) for t in step["action"]["completion_tokens"])]
        np.testing.assert_allclose(stored, expected, atol=1e-4)
        # and not the temperature-1 log-probs the learner rescores
        assert np.abs(stored - np.asarray([c.logprobs for c in outs if tuple(c.tokens) == tuple(
            int(t) for t in step["action"]["completion_tokens"])][0])).max() > 1e-2


@pytest.mark.parametrize("field,value", [("temperature", 0.7), ("temperature", 0.0), ("top_k", 5), ("top_p", 0.9)])
def test_training_refuses_sampling_it_cannot_correct(field, value):
    with pytest.raises(ConfigError, match=f"sampling.{field}: {value!r}"):
        load_config(LMPGConfig, {"policy": "x", "task": {"world": "arithmetic"}, "sampling": {field: value}})
