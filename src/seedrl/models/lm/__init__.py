"""Language models as policies: scoring, KV-cached continuous-batching sampling, serving.

* :class:`LMPolicy` (``policy.py``): a Hugging Face causal LM or encoder-decoder (T5)
  loaded with ``LMPolicy.from_pretrained(path_or_hub_id, dtype=..., device=..., lora=...)``;
  ``score(prompts, completions)`` gives differentiable per-token log-probs, entropies and
  optionally logits of completions (prompt and padding masked, EOS kept);
  ``load_state_dict_from`` copies weights in place (learner -> inference).
* :class:`Sampler` (``sampler.py``): continuous batching over a preallocated per-row KV
  cache (``decoders.py``), temperature / top-k / top-p, stop strings and token ids, ``n``
  samples per prompt, per-request seeds; each :class:`Completion` has ``logprobs`` (raw
  model, what ``score`` recomputes) and ``sampling_logprobs`` (actual sampling
  distribution).
* :class:`GenerationServer` (``server.py``): several named models served from one thread to
  many actor threads (futures), weights updated in place between decode steps with a
  version counter on every completion.
* ``check_served_logprobs`` / ``check_logprobs`` (``logprob_check.py``): the sampled tokens'
  reported log-probs against the learner's recomputation (max / mean ``|Δ|``, fails above a
  tolerance), for any backend.
* ``VLLMGenerationServer`` (``vllm_server.py``, optional, GPU): the same server interface
  with the policy sampled by a vLLM engine; import it from its module (it needs the
  ``vllm`` extra only when an engine is made).

Example::

    policy = LMPolicy.from_pretrained("path/to/model", pad_token="eos")
    prompts = policy.tokenize_prompts(["2 + 3 ="], max_prompt_tokens=64)
    out = policy.generate(prompts, SamplingParams(temperature=0.7, max_new_tokens=32, n=4, seed=0))
    scores = policy.score([prompts[c.prompt_index] for c in out], [c.tokens for c in out])
"""

from seedrl.models.lm.logprob_check import LogprobAgreement, LogprobMismatchError, check_logprobs, check_served_logprobs
from seedrl.models.lm.policy import LMPolicy, LoraSettings, ModelNotFoundError, PromptTooLongError, Scores
from seedrl.models.lm.sampler import Completion, GenerationHandle, Request, Sampler, SamplingParams
from seedrl.models.lm.server import GenerationServer

__all__ = [
    "Completion",
    "GenerationHandle",
    "GenerationServer",
    "LogprobAgreement",
    "LogprobMismatchError",
    "LMPolicy",
    "LoraSettings",
    "ModelNotFoundError",
    "PromptTooLongError",
    "Request",
    "Sampler",
    "SamplingParams",
    "Scores",
    "check_logprobs",
    "check_served_logprobs",
]
