"""n-step returns, R2D2's double-Q n-step targets, and GAE(λ) of padded episodes
(sequence priorities: :mod:`seedrl.ops.priorities`).

All sequence tensors are time-major, ``[T, *B]`` (usually ``[T, B]``), and
describe transitions ``(x_t, a_t, r_t, x_{t+1})``, ``t < T``, with
``discounts[t] = gamma * (1 - terminal_t)``: a zero discount cuts every sum and
bootstrap that would reach past it.
"""

from __future__ import annotations

import functools

import torch

from seedrl.ops._checks import check_same_shape, check_shape, float_tensor
from seedrl.ops.priorities import sequence_priority  # noqa: F401  (re-exported; it lives in ops/priorities.py)
from seedrl.ops.value_rescaling import DEFAULT_EPS, inverse_value_rescaling, value_rescaling

__all__ = ["n_step_returns", "double_q_n_step_targets", "masked_gae", "sequence_priority"]


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    return n


def _n_step(rewards: torch.Tensor, discounts: torch.Tensor, values_ext: torch.Tensor, n: int) -> torch.Tensor:
    """Core of :func:`n_step_returns`; ``values_ext`` is ``[T + 1, *B]``."""
    T = rewards.shape[0]
    returns = torch.zeros_like(rewards)
    scale = torch.ones_like(rewards)  # prod_{j<k} gamma_{t+j}
    for k in range(min(n, T)):
        # Steps past the end of the unroll contribute r = 0 and gamma = 1.
        returns[: T - k] += scale[: T - k] * rewards[k:]
        scale[: T - k] *= discounts[k:]
    boot = values_ext[torch.clamp(torch.arange(T, device=rewards.device) + n, max=T)]
    return returns + scale * boot


def n_step_returns(
    *,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    values: torch.Tensor,
    bootstrap_value: torch.Tensor,
    n: int,
) -> torch.Tensor:
    """Bootstrapped n-step returns, truncated at the end of the unroll.

    With ``m_t = min(n, T - t)`` and ``V(x_T) = bootstrap_value``:

    .. math::

        G_t = \\sum_{k=0}^{m_t - 1} \\Bigl(\\prod_{j=0}^{k-1} \\gamma_{t+j}\\Bigr) r_{t+k}
              + \\Bigl(\\prod_{j=0}^{m_t - 1} \\gamma_{t+j}\\Bigr) V(x_{t+m_t}).

    So the last ``n - 1`` steps fall back to shorter returns that bootstrap
    from ``bootstrap_value``; ``n >= T`` gives the Monte-Carlo return of the
    unroll bootstrapped at its end. A zero discount (terminal) cuts the sum
    and the bootstrap. ``values[t]`` is only read for ``t >= n``.

    Args:
      rewards: ``[T, *B]`` r_t.
      discounts: ``[T, *B]`` gamma_t.
      values: ``[T, *B]`` V(x_t).
      bootstrap_value: ``[*B]`` V(x_T).
      n: number of reward steps, ``>= 1``.

    Returns:
      ``[T, *B]`` returns in the promoted dtype of the inputs; detached
      (``requires_grad=False``): they are targets.

    Raises:
      ValueError: a shape or ``n`` is wrong (the message names it).
      TypeError: an input is not a floating-point tensor.
    """
    floats = {"rewards": rewards, "discounts": discounts, "values": values, "bootstrap_value": bootstrap_value}
    for name, x in floats.items():
        float_tensor(name, x)
    if rewards.ndim < 1:
        raise ValueError(f"rewards must have shape [T, *B] with a leading time axis, got {tuple(rewards.shape)}")
    for name in ("discounts", "values"):
        check_same_shape(name, floats[name], "rewards", rewards)
    check_shape("bootstrap_value", bootstrap_value, rewards.shape[1:], "[*B] (rewards.shape[1:])")
    n = _check_n(n)
    dtype = functools.reduce(torch.promote_types, (x.dtype for x in floats.values()))
    with torch.no_grad():
        f = {name: x.detach().to(dtype) for name, x in floats.items()}
        values_ext = torch.cat([f["values"], f["bootstrap_value"].unsqueeze(0)], dim=0)
        return _n_step(f["rewards"], f["discounts"], values_ext, n)


def double_q_n_step_targets(
    *,
    q_online: torch.Tensor,
    q_target: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    n: int,
    rescale: bool = True,
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """R2D2's double-Q n-step targets with invertible value rescaling.

    ``q_online[t]`` and ``q_target[t]`` are ``Q(s_t, .)`` for the ``T + 1``
    states of the unroll (``s_T`` is the state after the last transition).
    With ``m_t = min(n, T - t)`` (the last ``n - 1`` steps use shorter returns
    bootstrapped from ``s_T``):

    .. math::

        a^*_t = \\arg\\max_a Q_{online}(s_{t+m_t}, a),

        y_t = h\\Bigl(\\sum_{k=0}^{m_t-1} \\Bigl(\\prod_{j<k} \\gamma_{t+j}\\Bigr) r_{t+k}
              + \\Bigl(\\prod_{j<m_t} \\gamma_{t+j}\\Bigr)
                h^{-1}\\bigl(Q_{target}(s_{t+m_t}, a^*_t)\\bigr)\\Bigr),

    where ``h`` is :func:`~seedrl.ops.value_rescaling.value_rescaling`
    (``rescale=False`` makes ``h`` the identity). With constant discounts the
    products are ``gamma^k`` and ``gamma^n``; a zero discount (terminal) cuts
    the sum and the bootstrap. Ties in the argmax go to the first maximal
    action (``torch.argmax``).

    Args:
      q_online: ``[T + 1, *B, A]`` online-network Q-values (selects ``a*``).
      q_target: ``[T + 1, *B, A]`` target-network Q-values (evaluates ``a*``).
      rewards: ``[T, *B]`` r_t.
      discounts: ``[T, *B]`` gamma_t = gamma * (1 - terminal_t).
      n: number of reward steps, ``>= 1``.
      rescale: apply ``h`` / ``h^{-1}`` (R2D2 does); default True.
      eps: ``h``'s epsilon; default ``1e-3``.

    Returns:
      ``[T, *B]`` targets in the promoted dtype of the inputs; detached
      (``requires_grad=False``).

    Raises:
      ValueError: a shape, ``n`` or ``eps`` is wrong (the message names it).
      TypeError: an input is not a floating-point tensor.
    """
    floats = {"q_online": q_online, "q_target": q_target, "rewards": rewards, "discounts": discounts}
    for name, x in floats.items():
        float_tensor(name, x)
    if rewards.ndim < 1:
        raise ValueError(f"rewards must have shape [T, *B] with a leading time axis, got {tuple(rewards.shape)}")
    check_same_shape("discounts", discounts, "rewards", rewards)
    if q_online.ndim != rewards.ndim + 1 or q_online.shape[-1] < 1:
        raise ValueError(
            f"q_online must have shape [T + 1, *B, A] with rewards [T, *B] = {tuple(rewards.shape)}, "
            f"got {tuple(q_online.shape)}"
        )
    q_shape = (rewards.shape[0] + 1, *rewards.shape[1:], q_online.shape[-1])
    check_shape("q_online", q_online, q_shape, "[T + 1, *B, A]")
    check_shape("q_target", q_target, q_shape, "[T + 1, *B, A] (same as q_online)")
    n = _check_n(n)
    if not eps >= 0.0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    dtype = functools.reduce(torch.promote_types, (x.dtype for x in floats.values()))
    with torch.no_grad():
        f = {name: x.detach().to(dtype) for name, x in floats.items()}
        best = f["q_online"].argmax(dim=-1, keepdim=True)
        boot = f["q_target"].gather(-1, best).squeeze(-1)  # [T + 1, *B]
        if rescale:
            boot = inverse_value_rescaling(boot, eps)
        returns = _n_step(f["rewards"], f["discounts"], boot, n)
        return value_rescaling(returns, eps) if rescale else returns
def masked_gae(
    *,
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lambda_: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(λ) advantages and λ-returns of padded episodes that end at their last valid step.

    Each column of ``mask`` marks a prefix of valid steps (a token sequence padded on the
    right); the step after the last valid one is terminal (``V = 0``, no bootstrap). With
    ``m_{t+1}`` the validity of the next step:

    .. math::

        \\delta_t = r_t + \\gamma\\, m_{t+1} V(x_{t+1}) - V(x_t), \\qquad
        A_t = \\delta_t + \\gamma \\lambda\\, m_{t+1} A_{t+1}, \\qquad G_t = A_t + V(x_t).

    ``λ = 1`` is the Monte-Carlo return ``G_t = Σ_{k≥t} γ^{k−t} r_k`` (the values only
    enter as a baseline, ``A_t = G_t − V(x_t)``); ``λ = 0`` the one-step TD target. Padding
    steps get ``A = G = 0`` whatever their rewards and values hold.

    Args:
      rewards: ``[T, *B]`` r_t.
      values: ``[T, *B]`` V(x_t).
      mask: ``[T, *B]`` valid steps (bool, or read as ``!= 0``), a prefix of each column.
      gamma: discount in ``[0, 1]``.
      lambda_: λ in ``[0, 1]``.

    Returns:
      ``(advantages, returns)``, each ``[T, *B]`` in the promoted float dtype, detached.

    Raises:
      ValueError: a shape, ``gamma`` or ``lambda_`` is wrong, or a mask is not a prefix.
      TypeError: rewards or values are not floating-point tensors.
    """
    float_tensor("rewards", rewards)
    float_tensor("values", values)
    if rewards.ndim < 1:
        raise ValueError(f"rewards must have shape [T, *B] with a leading time axis, got {tuple(rewards.shape)}")
    check_same_shape("values", values, "rewards", rewards)
    if not isinstance(mask, torch.Tensor) or mask.shape != rewards.shape:
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a tensor of the rewards' shape {tuple(rewards.shape)}, got {got}")
    for name, x in (("gamma", gamma), ("lambda_", lambda_)):
        if not 0.0 <= x <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {x!r}")
    valid = mask.detach().to(device=rewards.device, dtype=torch.bool)
    if (valid[1:] & ~valid[:-1]).any():
        raise ValueError("mask: valid steps must form a prefix of each column (padding on the right only)")
    dtype = torch.promote_types(rewards.dtype, values.dtype)
    with torch.no_grad():
        r = torch.where(valid, rewards.detach().to(dtype), 0)
        v = torch.where(valid, values.detach().to(dtype), 0)
        nxt = torch.cat([valid[1:], torch.zeros_like(valid[:1])]).to(dtype)
        v_next = torch.cat([v[1:], torch.zeros_like(v[:1])])
        delta = torch.where(valid, r + gamma * nxt * v_next - v, 0)
        adv = torch.zeros_like(delta)
        running = torch.zeros_like(delta[0])
        for t in range(delta.shape[0] - 1, -1, -1):
            running = delta[t] + gamma * lambda_ * nxt[t] * running
            adv[t] = running
        return adv, torch.where(valid, adv + v, 0)
