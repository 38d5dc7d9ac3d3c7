"""Categorical policy helpers on unnormalised logits ``[..., A]``.

All three work through ``log_softmax``, so they are exact for logits of any
magnitude (no ``exp`` overflow) and accept ``-inf`` logits for actions that are
masked out: those are never sampled, have ``log_prob == -inf``, and contribute
zero (with zero gradient) to the entropy.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["entropy", "log_probs", "sample_actions"]


def sample_actions(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one action per row of ``logits [..., A]``; returns ``int64 [...]``.

    Gumbel-max: ``argmax(logits + G)`` with ``G = -log(-log U)``, which samples
    ``softmax(logits)`` exactly, in one vectorised pass. ``generator`` (on the
    logits' device) makes draws reproducible.
    """
    with torch.no_grad():
        dtype = logits.dtype if logits.is_floating_point() else torch.get_default_dtype()
        u = torch.rand(logits.shape, generator=generator, dtype=dtype, device=logits.device)
        u = u.clamp_(min=torch.finfo(dtype).tiny)  # keeps G finite, so -inf logits stay -inf
        return torch.argmax(logits.detach().to(dtype) - torch.log(-torch.log(u)), dim=-1)


def log_probs(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[..., action]`` for ``logits [..., A]`` and integer ``actions [...]``."""
    if actions.shape != logits.shape[:-1]:
        raise ValueError(
            f"log_probs: actions shape {tuple(actions.shape)} must equal logits shape without the last "
            f"dimension {tuple(logits.shape[:-1])}"
        )
    logp = F.log_softmax(logits, dim=-1)
    return logp.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """``-sum_a p_a log p_a`` over the last dimension of ``logits [..., A]``; returns ``[...]``."""
    logp = F.log_softmax(logits, dim=-1)
    # p * log p -> 0 as p -> 0; replacing -inf first keeps the gradient finite as well.
    logp = torch.where(torch.isfinite(logp), logp, torch.zeros((), dtype=logp.dtype, device=logp.device))
    return -(F.softmax(logits, dim=-1) * logp).sum(-1)
