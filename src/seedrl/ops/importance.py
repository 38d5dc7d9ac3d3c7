"""Truncated importance weights for sequence-level policy gradients.

Samples ``y ~ μ`` (the behaviour policy: the actor's possibly stale weights) are
used to estimate ``E_{y~π}[f(y) ∇log π(y)]`` for the learner's policy ``π``. With

    ρ(y) = π(y) / μ(y) = exp(log π(y) − log μ(y)),    ρ̄(y) = min(c, ρ(y)),

``E_μ[ρ(y)·f(y)·∇log π(y)] = E_π[f(y)·∇log π(y)]`` exactly (``c = None``: no
truncation; needs ``μ(y) > 0`` wherever ``π(y) > 0``). Truncating at ``c`` (as
V-trace's ρ̄; Espeholt et al. 2018) bounds the variance at the price of a bias
that vanishes where ``π/μ ≤ c``: on-policy (``μ = π``) every weight is 1 and
nothing changes. The weights carry no gradient.
"""

from __future__ import annotations

import torch

from seedrl.ops._checks import check_shape, float_tensor

__all__ = ["truncated_importance_weights"]


def truncated_importance_weights(
    target_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor, clip: float | None = 1.0
) -> torch.Tensor:
    """``min(clip, exp(target − behaviour))``, detached, in the promoted float dtype.

    Args:
        target_logprobs: ``[*S]`` log π(y) of the samples under the learner policy.
        behaviour_logprobs: ``[*S]`` log μ(y) under the distribution they were sampled from.
        clip: ``c > 0``, or None for the untruncated ratio.
    """
    float_tensor("target_logprobs", target_logprobs)
    float_tensor("behaviour_logprobs", behaviour_logprobs)
    check_shape("behaviour_logprobs", behaviour_logprobs, target_logprobs.shape, "target_logprobs.shape")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be > 0 or None (no truncation), got {clip!r}")
    with torch.no_grad():
        rho = torch.exp(target_logprobs.detach() - behaviour_logprobs.detach().to(target_logprobs.device))
        return rho if clip is None else rho.clamp(max=clip)
