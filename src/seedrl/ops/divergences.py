"""Token-level divergences between a teacher and a student language model (GKD, arXiv 2306.13649).

At every completion position ``n`` the teacher gives a next-token distribution
``P = p_T(·|x, y_<n)`` and the student ``Q = p_S(·|x, y_<n)``, both tempered,
``softmax(z / τ)``. Three divergences, all computed in log space:

* forward KL  ``KL(P‖Q) = Σ_v P_v (log P_v − log Q_v)``  (mean-seeking, spreads mass);
* reverse KL  ``KL(Q‖P) = Σ_v Q_v (log Q_v − log P_v)``  (mode-seeking);
* generalized JSD ``JSD(β)(P‖Q) = β·KL(P‖M) + (1−β)·KL(Q‖M)`` with the mixture
  taken in *probability* space, ``M = βP + (1−β)Q``, so
  ``log M = logaddexp(log β + log P, log(1−β) + log Q)``; ``0 < β < 1``.
  ``JSD(β)/β → KL(P‖Q)`` as β → 0 and ``JSD(β)/(1−β) → KL(Q‖P)`` as β → 1 (the raw
  value goes to 0 at both ends, hence the two KLs are offered as their own kinds);
  ``JSD(0.5)`` is symmetric and at most ``log 2``.

Terms with zero teacher probability contribute ``0·log 0 = 0`` (their gradient too).

**Top-k teacher** (:class:`TopKTeacher`): the teacher's log-probs of ``k`` token
indices and the log of the rest of its mass, ``log(1 − Σ_top-k P)``. Both
distributions are then compared over ``k + 1`` buckets: the ``k`` tokens and one
*tail* bucket holding the rest (for the student ``log Q_tail`` is the logsumexp of
its log-probs outside the ``k`` indices). By the data-processing inequality the
bucketed value is never above the full-vocabulary one, and the two are equal when
``k`` = vocabulary (no tail bucket then) or when the two tails are proportional;
the gap is the divergence *inside* the tail, which is small when the teacher's
tail mass is. The teacher's tail log-mass is floored at ``TAIL_FLOOR`` (e^-30) so
that reverse KL stays finite. Top-k teachers are already tempered (the server
applies the temperature before taking the top k); ``temperature`` then applies to
the student only.

**Reductions** over ``[B, L]`` positions with a mask (prompt and padding off,
EOS on: it is a label like any other): ``"none"`` per token ``[B, L]`` (0 where
masked), ``"sequence"`` ``[B]``: the paper's ``(1/L_b) Σ_n D_n``, ``"token"``:
a scalar ``Σ D·mask / Σ mask``.

**Memory**: positions are processed in chunks of ``chunk_tokens`` rows; each
chunk's tensors are ``[chunk, V]``, and under autograd each chunk saves only views of
its inputs and is recomputed in backward (a full-vocabulary teacher without gradient:
one closed-form gradient per chunk, ``∂D/∂z = Q ⊙ (g − ⟨Q, g⟩)/τ`` with ``g = ∂D/∂Q``,
see :func:`_student_grad`; otherwise activation checkpointing of the chunk), so beyond the logits themselves at most about one
``[chunk_tokens, V]`` working set lives at a time (a few of them inside one chunk),
never ``[tokens, V]`` copies per intermediate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

__all__ = ["KINDS", "REDUCTIONS", "TAIL_FLOOR", "TopKTeacher", "bucket_divergence", "token_divergence"]

KINDS = ("forward_kl", "reverse_kl", "jsd")
REDUCTIONS = ("none", "sequence", "token")
TAIL_FLOOR = -30.0


@dataclass
class TopKTeacher:
    """A teacher's top-k next-token distribution at each position ``[..., k]``.

    ``logprobs``: log P of ``indices`` (long); ``rest_logprob`` ``[...]``: log of the
    mass outside them (``-inf`` when they hold all of it)."""

    logprobs: torch.Tensor
    indices: torch.Tensor
    rest_logprob: torch.Tensor

    @property
    def k(self) -> int:
        return int(self.indices.shape[-1])

    def to(self, device) -> TopKTeacher:
        return TopKTeacher(self.logprobs.to(device), self.indices.to(device), self.rest_logprob.to(device))


def _p_times(lp: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
    """``P·diff`` with ``P = exp(lp)`` and ``0·anything = 0`` where ``P = 0`` (gradient-safe)."""
    zero = lp == float("-inf")
    return torch.where(zero, torch.zeros((), dtype=diff.dtype, device=diff.device),
                       lp.exp() * torch.where(zero, torch.zeros_like(diff), diff))


def bucket_divergence(lp: torch.Tensor, lq: torch.Tensor, kind: str, beta: float = 0.5) -> torch.Tensor:
    """``D(P‖Q)`` over the last axis from log-probs ``lp`` (teacher P) and ``lq`` (student Q)."""
    if kind == "forward_kl":
        return _p_times(lp, lp - lq).sum(-1)
    if kind == "reverse_kl":
        return _p_times(lq, lq - lp).sum(-1)
    if kind == "jsd":
        lm = torch.logaddexp(lp + math.log(beta), lq + math.log1p(-beta))
        return beta * _p_times(lp, lp - lm).sum(-1) + (1 - beta) * _p_times(lq, lq - lm).sum(-1)
    raise ValueError(f"kind={kind!r} is not one of {KINDS}")


def _wide(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (half-precision logits are widened chunk by chunk)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _chunk_full(student: torch.Tensor, teacher: torch.Tensor, kind: str, beta: float, temperature: float) -> torch.Tensor:
    lq = F.log_softmax(_wide(student) / temperature, dim=-1)
    lp = F.log_softmax(teacher.to(lq.dtype) / temperature, dim=-1)
    return bucket_divergence(lp, lq, kind, beta)


def _student_grad(lp: torch.Tensor, lq: torch.Tensor, d: torch.Tensor, kind: str, beta: float) -> torch.Tensor:
    """``∂D/∂z`` for student log-probs ``lq = log_softmax(z)`` (before the ``1/τ`` of tempering).

    With ``g = ∂D/∂Q`` the softmax Jacobian gives ``∂D/∂z = Q ⊙ (g − ⟨Q, g⟩)``; for the
    three kinds this is forward KL: ``Q − P``; reverse KL: ``Q ⊙ (log Q − log P − D)``;
    JSD(β): ``g = (1−β)(log Q − log M)`` (the ``∂M/∂Q`` terms cancel)."""
    q = lq.exp()
    if kind == "forward_kl":
        return q - lp.exp()
    if kind == "reverse_kl":
        return q * (lq - lp - d[:, None])
    g = (1 - beta) * (lq - torch.logaddexp(lp + math.log(beta), lq + math.log1p(-beta)))
    return q * (g - (q * g).sum(-1, keepdim=True))


class _FullChunk(torch.autograd.Function):
    """:func:`_chunk_full` with its gradient in closed form (:func:`_student_grad`): the
    backward recomputes the two log-softmaxes from the saved input views and applies one
    formula, instead of replaying a checkpointed graph of ~15 ops (and the ``where`` guards
    of :func:`_p_times`) through autograd. The teacher gets no gradient."""

    @staticmethod
    def forward(ctx, student, teacher, kind: str, beta: float, temperature: float):
        ctx.save_for_backward(student, teacher)
        ctx.args = (kind, beta, temperature)
        return _chunk_full(student, teacher, kind, beta, temperature)

    @staticmethod
    def backward(ctx, grad_out):
        student, teacher = ctx.saved_tensors
        kind, beta, temperature = ctx.args
        lq = F.log_softmax(_wide(student) / temperature, dim=-1)
        lp = F.log_softmax(teacher.to(lq.dtype) / temperature, dim=-1)
        d = bucket_divergence(lp, lq, kind, beta) if kind == "reverse_kl" else None
        grad = _student_grad(lp, lq, d, kind, beta) * (grad_out[:, None] / temperature)
        return grad.to(student.dtype), None, None, None, None


def _chunk_topk(student, t_lp, t_idx, t_rest, kind: str, beta: float, temperature: float) -> torch.Tensor:
    z = _wide(student) / temperature
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    lq = z.gather(-1, t_idx) - lse
    lp = t_lp.to(lq.dtype)
    if t_idx.shape[-1] < z.shape[-1]:  # one tail bucket for the rest of the vocabulary
        q_rest = torch.logsumexp(z.scatter(-1, t_idx, float("-inf")), dim=-1, keepdim=True) - lse
        lq = torch.cat([lq, q_rest], -1)
        lp = torch.cat([lp, t_rest.to(lq.dtype).clamp(min=TAIL_FLOOR)[..., None]], -1)
    return bucket_divergence(lp, lq, kind, beta)


def token_divergence(
    student_logits: torch.Tensor,
    teacher: torch.Tensor | TopKTeacher,
    *,
    kind: str = "jsd",
    beta: float = 0.5,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    reduction: str = "token",
    chunk_tokens: int = 256,
) -> torch.Tensor:
    """``D(teacher ‖ student)`` at every position ``[B, L]`` of ``student_logits`` ``[B, L, V]``, reduced.

    ``teacher``: logits or log-probs ``[B, L, V]`` (tempered here like the student's)
    or a :class:`TopKTeacher` (already tempered). ``mask`` ``[B, L]``: positions that
    count (completion tokens incl. EOS); default all. See the module docstring for
    ``kind``, ``beta``, ``reduction`` and memory.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {KINDS}")
    if kind == "jsd" and not 0.0 < beta < 1.0:
        raise ValueError(f"beta={beta!r} must lie in (0, 1) for jsd (use forward_kl / reverse_kl at the ends)")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not one of {REDUCTIONS}")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r} must be > 0")
    if student_logits.dim() != 3:
        raise ValueError(f"student_logits must be [B, L, V], got shape {tuple(student_logits.shape)}")
    B, L, V = student_logits.shape
    topk = isinstance(teacher, TopKTeacher)
    want = (B, L, teacher.k) if topk else (B, L, V)
    got = tuple(teacher.logprobs.shape if topk else teacher.shape)
    if got != want:
        raise ValueError(f"teacher must have shape {want} to match student_logits {(B, L, V)}, got {got}")
    if mask is None:
        mask = torch.ones((B, L), dtype=torch.bool, device=student_logits.device)
    if tuple(mask.shape) != (B, L):
        raise ValueError(f"mask must have shape {(B, L)}, got {tuple(mask.shape)}")
    mask = mask.to(student_logits.device).bool()
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    s = student_logits.reshape(B * L, V)
    if topk:
        ins = (teacher.logprobs.reshape(B * L, -1), teacher.indices.reshape(B * L, -1).long(), teacher.rest_logprob.reshape(B * L))
        fn = _chunk_topk
    else:
        ins, fn = (teacher.reshape(B * L, V),), _chunk_full
    ins = tuple(t.to(s.device) for t in ins)
    grad = torch.is_grad_enabled() and student_logits.requires_grad
    closed_form = grad and not topk and not ins[0].requires_grad  # the usual case: a teacher without gradient
    parts = []
    for a in range(0, B * L, max(1, chunk_tokens)):
        chunk = (s[a:a + chunk_tokens], *(t[a:a + chunk_tokens] for t in ins), kind, beta, temperature)
        if closed_form:
            parts.append(_FullChunk.apply(*chunk))
        else:
            parts.append(checkpoint(fn, *chunk, use_reentrant=False) if grad else fn(*chunk))
    per_token = (torch.cat(parts) if parts else s.new_zeros(0, dtype=dtype)).reshape(B, L)
    per_token = torch.where(mask, per_token, torch.zeros((), dtype=dtype, device=per_token.device))
    if reduction == "none":
        return per_token
    m = mask.to(dtype)
    if reduction == "sequence":
        return per_token.sum(-1) / m.sum(-1).clamp(min=1)
    return per_token.sum() / m.sum().clamp(min=1)
