"""V-trace off-policy corrected value targets (Espeholt et al., 2018, IMPALA).

All sequence tensors are time-major, ``[T, *B]`` (usually ``[T, B]``), and
describe one unroll of transitions ``(x_t, a_t, r_t, x_{t+1})``, ``t < T``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from seedrl.ops._checks import check_same_shape, check_shape, float_tensor

__all__ = ["VTraceReturns", "vtrace"]


class VTraceReturns(NamedTuple):
    """Outputs of :func:`vtrace`; both ``[T, *B]`` and carry no gradient."""

    #: V-trace value targets ``v_s``.
    vs: torch.Tensor
    #: Importance-weighted policy-gradient advantages.
    pg_advantages: torch.Tensor


def _check_threshold(name: str, value: float | None) -> None:
    if value is not None and not value > 0.0:  # also rejects NaN
        raise ValueError(f"{name} must be > 0 or None (no clipping), got {value!r}")


def vtrace(
    *,
    target_log_probs: torch.Tensor,
    behaviour_log_probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    clip_rho_threshold: float | None = 1.0,
    clip_c_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
    lambda_: float = 1.0,
    truncated: torch.Tensor | None = None,
    truncation_bootstrap_values: torch.Tensor | None = None,
) -> VTraceReturns:
    """V-trace targets and policy-gradient advantages for one time-major unroll.

    With ``rho_t = exp(log pi(a_t|x_t) - log mu(a_t|x_t))``:

    .. math::

        \\tilde\\rho_t = \\min(\\bar\\rho, \\rho_t), \\qquad
        c_t = \\lambda \\min(\\bar c, \\rho_t),

        \\delta_t = \\tilde\\rho_t \\bigl(r_t + \\gamma_t V(x_{t+1}) - V(x_t)\\bigr),
        \\qquad V(x_T) = \\text{bootstrap\\_value},

        v_s - V(x_s) = \\delta_s + \\gamma_s c_s \\bigl(v_{s+1} - V(x_{s+1})\\bigr),
        \\qquad v_T - V(x_T) = 0,

    i.e. :math:`v_s = V(x_s) + \\sum_{t \\ge s} (\\prod_{i=s}^{t-1} \\gamma_i c_i)\\,\\delta_t`,
    computed by a backward recursion, and

    .. math::

        A^{pg}_s = \\min(\\bar\\rho_{pg}, \\rho_s)\\bigl(r_s + \\gamma_s v_{s+1} - V(x_s)\\bigr),
        \\qquad v_T = \\text{bootstrap\\_value}.

    ``None`` for a clip threshold means no clipping. Outputs are computed
    under ``torch.no_grad()`` from detached inputs: they are targets, never
    differentiated through, even when the inputs require grad.

    **lambda < 1 (peer difference).** The policy-gradient target bootstraps
    from ``v_{s+1}`` as in SEED RL / IMPALA (``vtrace.from_importance_weights``).
    rlax's ``vtrace_td_error_and_advantage`` instead uses
    ``lambda * v_{s+1} + (1 - lambda) * V(x_{s+1})``; the two agree for
    ``lambda = 1``. ``lambda`` only scales the traces ``c_t`` (as in both).

    **Episode boundaries.** An unroll may cross episodes. At a *terminal* step
    (the environment ended the episode after ``a_t``) pass ``discounts[t] = 0``:
    nothing after ``t`` is bootstrapped and the trace stops there. A
    *time-limit truncation* is not a terminal: the episode's true last
    observation ``x_final`` still has a value. Mark such steps with
    ``truncated[t] = True`` (``discounts[t]`` keeps its ordinary non-terminal
    value ``gamma``) and put ``V(x_final)`` in
    ``truncation_bootstrap_values[t]``. At a truncated step ``t``:

    * ``delta_t`` uses ``r_t + gamma_t * truncation_bootstrap_values[t]``
      instead of ``V(x_{t+1})`` (``x_{t+1}`` is the *next* episode's first
      observation);
    * the trace is cut: ``v_t - V(x_t) = delta_t`` (no ``gamma_t c_t (...)``
      continuation across the boundary);
    * the policy-gradient target uses ``truncation_bootstrap_values[t]`` in
      place of ``v_{t+1}``.

    This equals running V-trace separately on each episode segment, with a
    truncated segment's ``bootstrap_value`` = ``V(x_final)``. It also applies
    at ``t = T - 1``, where ``bootstrap_value`` is then unused. Entries of
    ``truncation_bootstrap_values`` where ``truncated`` is False are ignored
    (they may be anything, NaN included). ``truncated`` and ``terminal`` must
    not both hold at a step: a step with ``discounts[t] = 0`` is a terminal
    whatever ``truncated`` says.

    Args:
      target_log_probs: ``[T, *B]`` log pi(a_t|x_t) under the learner policy.
      behaviour_log_probs: ``[T, *B]`` log mu(a_t|x_t) under the actor policy.
      rewards: ``[T, *B]`` r_t.
      discounts: ``[T, *B]`` gamma_t = gamma * (1 - terminal_t).
      values: ``[T, *B]`` V(x_t) from the learner.
      bootstrap_value: ``[*B]`` V(x_T).
      clip_rho_threshold: rho-bar for ``delta_t``; default 1.
      clip_c_threshold: c-bar for the traces; default 1.
      clip_pg_rho_threshold: rho-bar_pg for the advantages; default 1.
      lambda_: trace mixing, in ``[0, 1]``; default 1.
      truncated: optional ``[T, *B]`` bool (other dtypes are read as ``!= 0``).
      truncation_bootstrap_values: ``[T, *B]`` V(x_final); required with
        ``truncated`` and only allowed with it.

    Returns:
      :class:`VTraceReturns` ``(vs, pg_advantages)``, both ``[T, *B]`` in the
      promoted floating dtype of the inputs, with ``requires_grad=False``.

    Raises:
      ValueError: a shape or hyper-parameter is wrong (the message names it).
      TypeError: an input is not a floating-point tensor.
    """
    floats = {
        "target_log_probs": target_log_probs,
        "behaviour_log_probs": behaviour_log_probs,
        "rewards": rewards,
        "discounts": discounts,
        "values": values,
        "bootstrap_value": bootstrap_value,
    }
    for name, x in floats.items():
        float_tensor(name, x)
    if values.ndim < 1:
        raise ValueError(f"values must have shape [T, *B] with a leading time axis, got {tuple(values.shape)}")
    seq_shape = values.shape
    for name in ("target_log_probs", "behaviour_log_probs", "rewards", "discounts"):
        check_same_shape(name, floats[name], "values", values)
    check_shape("bootstrap_value", bootstrap_value, seq_shape[1:], "[*B] (values.shape[1:])")
    if (truncated is None) != (truncation_bootstrap_values is None):
        given, missing = (
            ("truncated", "truncation_bootstrap_values")
            if truncation_bootstrap_values is None
            else ("truncation_bootstrap_values", "truncated")
        )
        raise ValueError(
            f"truncated and truncation_bootstrap_values must be given together: got {given} but {missing}=None"
        )
    if truncated is not None:
        if not isinstance(truncated, torch.Tensor):
            raise TypeError(f"truncated must be a torch.Tensor, got {type(truncated).__name__}")
        check_same_shape("truncated", truncated, "values", values)
        floats["truncation_bootstrap_values"] = float_tensor(
            "truncation_bootstrap_values", truncation_bootstrap_values
        )
        check_same_shape("truncation_bootstrap_values", truncation_bootstrap_values, "values", values)
    _check_threshold("clip_rho_threshold", clip_rho_threshold)
    _check_threshold("clip_c_threshold", clip_c_threshold)
    _check_threshold("clip_pg_rho_threshold", clip_pg_rho_threshold)
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"lambda_ must be in [0, 1], got {lambda_!r}")

    dtype = functools.reduce(torch.promote_types, (x.dtype for x in floats.values()))
    with torch.no_grad():
        f = {name: x.detach().to(dtype) for name, x in floats.items()}
        values_ = f["values"]
        bootstrap = f["bootstrap_value"]
        disc = f["discounts"]
        rew = f["rewards"]

        rhos = torch.exp(f["target_log_probs"] - f["behaviour_log_probs"])
        clipped_rhos = rhos if clip_rho_threshold is None else rhos.clamp(max=clip_rho_threshold)
        cs = rhos if clip_c_threshold is None else rhos.clamp(max=clip_c_threshold)
        continuation = disc * (lambda_ * cs)

        values_tp1 = torch.cat([values_[1:], bootstrap.unsqueeze(0)], dim=0)
        if truncated is not None:
            cut = truncated.detach().to(device=values_.device, dtype=torch.bool)
            final_values = f["truncation_bootstrap_values"]
            values_tp1 = torch.where(cut, final_values, values_tp1)
            continuation = torch.where(cut, torch.zeros_like(continuation), continuation)

        deltas = clipped_rhos * (rew + disc * values_tp1 - values_)

        vs_minus_v = torch.empty_like(values_)
        acc = torch.zeros_like(bootstrap)
        for t in range(seq_shape[0] - 1, -1, -1):
            acc = deltas[t] + continuation[t] * acc
            vs_minus_v[t] = acc
        vs = vs_minus_v + values_

        vs_tp1 = torch.cat([vs[1:], bootstrap.unsqueeze(0)], dim=0)
        if truncated is not None:
            vs_tp1 = torch.where(cut, final_values, vs_tp1)
        pg_rhos = rhos if clip_pg_rho_threshold is None else rhos.clamp(max=clip_pg_rho_threshold)
        pg_advantages = pg_rhos * (rew + disc * vs_tp1 - values_)

    return VTraceReturns(vs=vs, pg_advantages=pg_advantages)
