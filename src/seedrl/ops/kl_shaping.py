"""Per-token rewards of a sequence reward regularised by the KL to an anchor policy.

A completion ``y = (y_0..y_{L−1})`` of a prompt ``x`` is an episode of ``L`` token
actions in the states ``s_t = (x, y_<t)``. Its sequence reward ``R`` (an entailment
score, say) is paid at the last token, and every token pays its share of the KL to a
fixed anchor ``π_a`` (the initial policy), weighted by ``α``:

    r_t = (1 − α)·R·[t = L − 1] − α·(log π(y_t|s_t) − log π_a(y_t|s_t)).

Summed over the episode (``γ = 1``), ``Σ_t r_t = (1 − α)·R − α·log π(y)/π_a(y)``, whose
expectation under ``π`` is ``(1 − α)·E[R] − α·KL(π ‖ π_a)``, maximised by

    π*(y) ∝ π_a(y)·exp(((1 − α)/α)·R(y)).

The log π term carries no gradient (a reward): its score-function part is what the policy
gradient of the shaped return supplies, and the pathwise part has zero expectation
(``E_π[∇log π] = 0``).
"""

from __future__ import annotations

import torch

from seedrl.ops._checks import check_shape, float_tensor

__all__ = ["kl_shaped_rewards"]


def kl_shaped_rewards(
    *,
    rewards: torch.Tensor,
    logprobs: torch.Tensor,
    anchor_logprobs: torch.Tensor,
    mask: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """``r_t`` of the module docstring for padded token sequences.

    Args:
      rewards: ``[*B]`` sequence rewards ``R``.
      logprobs: ``[T, *B]`` ``log π(y_t|s_t)`` of the policy being trained.
      anchor_logprobs: ``[T, *B]`` ``log π_a(y_t|s_t)``.
      mask: ``[T, *B]`` valid tokens, a non-empty prefix of each column.
      alpha: the KL weight ``α`` in ``[0, 1]``.

    Returns:
      ``[T, *B]`` per-token rewards, 0 at padding; detached, in the promoted float dtype.

    Raises:
      ValueError: a shape or ``alpha`` is wrong, or a column has no valid token.
      TypeError: a reward or log-prob input is not a floating-point tensor.
    """
    for name, x in (("rewards", rewards), ("logprobs", logprobs), ("anchor_logprobs", anchor_logprobs)):
        float_tensor(name, x)
    if logprobs.ndim < 1:
        raise ValueError(f"logprobs must have shape [T, *B] with a leading time axis, got {tuple(logprobs.shape)}")
    check_shape("anchor_logprobs", anchor_logprobs, logprobs.shape, "[T, *B] (logprobs.shape)")
    check_shape("rewards", rewards, logprobs.shape[1:], "[*B] (logprobs.shape[1:])")
    if not isinstance(mask, torch.Tensor) or mask.shape != logprobs.shape:
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a tensor of the logprobs' shape {tuple(logprobs.shape)}, got {got}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    valid = mask.detach().to(device=logprobs.device, dtype=torch.bool)
    lengths = valid.sum(0)
    if (lengths == 0).any():
        raise ValueError("mask: every sequence needs at least one valid token (its last one is paid the reward)")
    dtype = torch.promote_types(torch.promote_types(rewards.dtype, logprobs.dtype), anchor_logprobs.dtype)
    with torch.no_grad():
        kl = logprobs.detach().to(dtype) - anchor_logprobs.detach().to(device=logprobs.device, dtype=dtype)
        shaped = torch.where(valid, -alpha * kl, 0)
        last = torch.arange(valid.shape[0], device=valid.device).view(-1, *[1] * (valid.ndim - 1)) == lengths - 1
        final = (1.0 - alpha) * rewards.detach().to(device=logprobs.device, dtype=dtype)
        return shaped + torch.where(last, final.expand_as(shaped), 0)
