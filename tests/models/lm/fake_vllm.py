"""A CPU stand-in for ``vllm.LLM`` with the shapes of vLLM 0.22.1's offline API, for the adapter tests.

It is NOT vLLM: it samples with seedrl's own :class:`~seedrl.models.lm.sampler.Sampler` over an
``LMPolicy`` loaded from the same folder, and answers in vLLM's structures
(``RequestOutput.outputs[i]``: ``index``, ``token_ids``, ``text``, ``logprobs`` as one
``{token_id: Logprob}`` per token, ``finish_reason`` ``"stop"``/``"length"``, ``stop_reason``
``None`` for EOS). Weight updates go the real way: ``collective_rpc(name, args)`` calls the
method on a worker that has seedrl's :class:`~seedrl.models.lm.vllm_worker.WeightLoader` mixed in,
and that worker's ``model_runner.model.load_weights`` takes Hugging Face names (as vLLM's do).
What it can check: seedrl's parameter mapping, output conversion, versions and weight routing;
what it cannot: vLLM's kernels and its own weight loaders (the GPU tests do).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import torch

from seedrl.models.lm import LMPolicy, SamplingParams
from seedrl.models.lm.vllm_worker import WeightLoader


@dataclass
class FakeSamplingParams:
    """The subset of ``vllm.SamplingParams`` fields the adapter sets (same names)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int | None = 16
    seed: int | None = None
    stop: list[str] | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    logprobs: int | None = None


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None


class _Model:
    """Stands in for the vLLM model module: ``load_weights`` by Hugging Face name, returns the names taken."""

    def __init__(self, policy: LMPolicy):
        self.policy = policy
        self.loaded_batches: list[int] = []

    def load_weights(self, weights):
        params = dict(self.policy.model.named_parameters())
        taken = set()
        for name, tensor in weights:
            if name not in params:
                raise KeyError(f"no parameter {name!r}")
            with torch.no_grad():  # not .data: the built-in sampler's packed weights notice the version bump
                params[name].copy_(tensor)
            taken.add(name)
        self.loaded_batches.append(len(taken))
        return taken

    def named_parameters(self):
        return self.policy.model.named_parameters()


class _Worker(WeightLoader):
    def __init__(self, policy: LMPolicy):
        self.model_runner = SimpleNamespace(model=_Model(policy))


@dataclass
class FakeLLM:
    policy: LMPolicy
    calls: list[int] = field(default_factory=list)  # prompts per generate call

    def __post_init__(self):
        self.worker = _Worker(self.policy)

    def generate(self, prompts, sampling_params, use_tqdm=True):
        assert isinstance(sampling_params, list) and len(sampling_params) == len(prompts)
        self.calls.append(len(prompts))
        outs = []
        for prompt, sp in zip(prompts, sampling_params):
            assert sp.logprobs is not None and sp.logprobs >= 0, "the adapter must request log-probs"
            ids = prompt["prompt_token_ids"]
            params = SamplingParams(temperature=sp.temperature, top_k=sp.top_k, top_p=sp.top_p, max_new_tokens=sp.max_tokens,
                                    stop_strings=tuple(sp.stop or ()), stop_token_ids=tuple(sp.stop_token_ids or ()),
                                    seed=sp.seed, n=sp.n, include_stop_str_in_output=sp.include_stop_str_in_output,
                                    ignore_eos=sp.ignore_eos)
            comps = self.policy.generate([ids], params, max_batch=8)
            outputs = []
            for i, c in enumerate(comps):
                stop_reason = None
                if c.finish_reason == "stop":
                    last = self.policy.decode(c.tokens)
                    stop_reason = c.tokens[-1] if c.tokens and c.tokens[-1] in params.stop_token_ids else \
                        next((s for s in params.stop_strings if s in last), "stop")
                outputs.append(SimpleNamespace(
                    index=i, token_ids=tuple(c.tokens), text=c.text,
                    logprobs=[{t: Logprob(lp, 1)} for t, lp in zip(c.tokens, c.logprobs)],
                    finish_reason="length" if c.finish_reason == "length" else "stop", stop_reason=stop_reason))
            outs.append(SimpleNamespace(prompt_token_ids=list(ids), outputs=outputs[::-1]))  # any order: sorted by index
        return outs

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        return [getattr(self.worker, method)(*args, **(kwargs or {}))]


def fake_engine(folder) -> FakeLLM:
    with torch.no_grad():
        return FakeLLM(LMPolicy.from_pretrained(folder).eval())
