"""The LM run's central inference: which generation server (``generation.backend``) and its start check.

* ``builtin``: one :class:`~seedrl.models.lm.server.GenerationServer` serves every model
  (policy, reference, BOND's anchor, GKD's teacher) with seedrl's own sampler;
* ``vllm``: a vLLM engine loaded from the policy's folder samples the policy
  (:class:`~seedrl.models.lm.vllm_server.VLLMGenerationServer`; the learner's weights are
  loaded into it in place after each update), the other models stay on the built-in server.

``generation.check_logprobs: N`` samples N prompts (the task's first N examples, so the prompt
order of the run is untouched) from the served policy before training and recomputes the
sampled tokens' log-probs with the learner's model
(:func:`~seedrl.models.lm.logprob_check.check_served_logprobs`); above
``generation.logprob_tolerance`` the run stops before its first update.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["check_served_policy", "make_lm_server"]


def make_lm_server(cfg, policy_path: str, served, others: dict[str, Any], learner_policy):
    """The run's generation server (not started). ``served``: the built-in policy copy (``None``
    with the vllm backend, which loads ``policy_path`` itself); ``others``: the other models."""
    from seedrl.models.lm.server import GenerationServer

    max_batch = cfg.sampling.max_batch
    if cfg.generation.backend != "vllm":
        return GenerationServer({"policy": served, **others}, max_batch=max_batch, threads=cfg.generation.threads)
    from seedrl.models.lm.vllm_server import VLLMGenerationServer, make_vllm_engine

    v = cfg.generation.vllm
    engine = make_vllm_engine(policy_path, dtype=v.dtype, gpu_memory_utilization=v.gpu_memory_utilization,
                              enforce_eager=v.enforce_eager, max_model_len=v.max_model_len, max_num_seqs=max_batch,
                              seed=cfg.seed)
    context = v.max_model_len or learner_policy.context_length
    return VLLMGenerationServer({"policy": engine}, others, context_lengths={"policy": context}, max_batch=max_batch)


def check_served_policy(cfg, server, learner_policy, task, params) -> dict[str, float]:
    """The start check (see the module docstring): its metrics row, ``{}`` when off."""
    from seedrl.models.lm.logprob_check import check_served_logprobs

    n = cfg.generation.check_logprobs
    if not n:
        return {}
    prompts = [task.prompt(i % len(task)).tokens for i in range(n)]
    agreement = check_served_logprobs(server, "policy", learner_policy, prompts, replace(params, n=1, seed=cfg.seed),
                                      tolerance=cfg.generation.logprob_tolerance)
    log.info("generation.check_logprobs: %s backend agrees with the learner: max |Δ| = %.3g, mean |Δ| = %.3g over %d "
             "tokens", cfg.generation.backend, agreement.max_abs, agreement.mean_abs, agreement.tokens)
    return agreement.as_row()
