"""Do the sampler's log-probs agree with the learner's? (any generation backend)

The learners (REINFORCE-LOO's importance ratios, BOND's and RLEF's KL estimates, the
recorded behaviour log-probs) assume that the log-prob a generation backend reports for a
sampled token is the one the learner's own model gives it. A second engine (vLLM: other
kernels, another dtype, weights loaded by its own code) can break that silently: a weight
that did not load, a transposed matrix or a stale cache only shows as log-probs that differ.

For every sampled completion ``y`` of a prompt ``x`` the check recomputes, with the
learner's model at temperature 1,

    ``ℓ_n = log softmax(z(x, y_<n))[y_n]``  (:meth:`LMPolicy.score`)

and compares it with the reported ``ℓ̂_n`` (``Completion.logprobs``, the raw model's
log-prob of the sampled token):

    ``Δ_n = ℓ̂_n − ℓ_n``,  ``max |Δ|`` and ``mean |Δ|`` over every completion token.

The same fp32 model on the built-in sampler agrees to float rounding (``max |Δ| ~ 1e-6``);
an fp32 vLLM engine to ~1e-5; bf16 / fp16 engines to ~1e-2 .. 1e-1 (set the tolerance by
the engine's dtype). :func:`check_logprobs` fails above ``tolerance`` on ``max |Δ|``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from seedrl.errors import UserError
from seedrl.models.lm.sampler import Completion, SamplingParams

__all__ = ["LogprobAgreement", "LogprobMismatchError", "check_logprobs", "check_served_logprobs", "compare_logprobs"]


class LogprobMismatchError(UserError):
    """The generation backend's sampled log-probs differ from the learner's beyond the tolerance."""


@dataclass(frozen=True)
class LogprobAgreement:
    """``max |Δ|``, ``mean |Δ|`` over ``tokens`` completion tokens of ``sequences`` completions;
    ``worst``: (completion, position) of the largest ``|Δ|`` (``None`` without tokens)."""

    max_abs: float
    mean_abs: float
    tokens: int
    sequences: int
    worst: tuple[int, int] | None

    def as_row(self, prefix: str = "logprob_check") -> dict[str, float]:
        return {f"{prefix}_max_abs": self.max_abs, f"{prefix}_mean_abs": self.mean_abs,
                f"{prefix}_tokens": float(self.tokens)}


def compare_logprobs(policy, prompt_ids: Sequence[Sequence[int]], completions: Sequence[Completion]) -> LogprobAgreement:
    """``|Δ|`` statistics of ``completions[i]`` (sampled from ``prompt_ids[i]``) against ``policy``
    (an :class:`~seedrl.models.lm.policy.LMPolicy`, scored without gradient)."""
    if len(prompt_ids) != len(completions):
        raise ValueError(f"prompt_ids has {len(prompt_ids)} rows, completions {len(completions)}")
    for i, c in enumerate(completions):
        if len(c.logprobs) != len(c.tokens):
            raise ValueError(f"completion {i}: {len(c.logprobs)} log-probs for {len(c.tokens)} tokens")
    if not completions:
        return LogprobAgreement(0.0, 0.0, 0, 0, None)
    with torch.inference_mode():
        s = policy.score([list(p) for p in prompt_ids], [list(c.tokens) for c in completions])
    L = s.token_logprobs.shape[1]
    reported = torch.zeros_like(s.token_logprobs, dtype=torch.float64)
    for b, c in enumerate(completions):
        if c.logprobs:
            reported[b, : len(c.logprobs)] = torch.as_tensor(c.logprobs, dtype=torch.float64)
    delta = (reported - s.token_logprobs.double()).abs()
    delta = torch.where(s.mask, delta, torch.zeros_like(delta))  # NaN reported log-probs stay NaN: they fail
    tokens = int(s.mask.sum())
    if tokens == 0:
        return LogprobAgreement(0.0, 0.0, 0, len(completions), None)
    nan = torch.isnan(delta)
    flat = torch.where(nan, torch.full_like(delta, float("inf")), delta).flatten()
    worst = int(flat.argmax())
    return LogprobAgreement(float(flat.max()), float(delta.sum() / tokens), tokens, len(completions),
                            (worst // max(L, 1), worst % max(L, 1)))


def check_logprobs(policy, prompt_ids: Sequence[Sequence[int]], completions: Sequence[Completion], *,
                   tolerance: float, what: str = "sampled log-probs") -> LogprobAgreement:
    """:func:`compare_logprobs`, raising :class:`LogprobMismatchError` when ``max |Δ| > tolerance``."""
    if not tolerance > 0:
        raise ValueError(f"tolerance={tolerance!r} must be > 0")
    a = compare_logprobs(policy, prompt_ids, completions)
    if not a.max_abs <= tolerance:  # NaN or inf fail too
        b, n = a.worst
        c = completions[b]
        raise LogprobMismatchError(
            f"{what} disagree with the learner's: max |Δ| = {a.max_abs:.3g} > tolerance {tolerance:g} "
            f"(mean |Δ| = {a.mean_abs:.3g} over {a.tokens} tokens of {a.sequences} completions; worst: completion "
            f"{b}, token {n}: reported {c.logprobs[n]:.6g}). The generation engine's weights or kernels differ from "
            "the learner's model (a weight that did not load, another dtype: raise generation.logprob_tolerance "
            "for bf16/fp16 engines)")
    return a


def check_served_logprobs(server, model: str, policy, prompt_ids: Sequence[Sequence[int]], params: SamplingParams,
                          *, tolerance: float, timeout: float | None = 600.0) -> LogprobAgreement:
    """Sample ``params.n`` completions of each prompt from ``server``'s ``model`` (any object with
    the :class:`~seedrl.models.lm.server.GenerationServer` interface) and :func:`check_logprobs`
    them against ``policy``, which must hold the weights the server samples with."""
    prompts = [list(p) for p in prompt_ids]
    futures = [server.submit(model, p, params) for p in prompts]
    rows, comps = [], []
    for p, f in zip(prompts, futures):
        for c in f.result(timeout):
            rows.append(p)
            comps.append(c)
    return check_logprobs(policy, rows, comps, tolerance=tolerance,
                          what=f"log-probs sampled by the generation server's {model!r}")
