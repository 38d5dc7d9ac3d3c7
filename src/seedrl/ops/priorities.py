"""R2D2's sequence priority: the η-mixed max and mean of a sequence's |TD| errors.

The replay (:mod:`seedrl.runtime.replay`) clips priorities below at its
``min_priority`` (a sequence with no valid step gets 0 here).
"""

from __future__ import annotations

import torch

from seedrl.ops._checks import float_tensor

__all__ = ["sequence_priority"]


def sequence_priority(
    td_abs: torch.Tensor,
    mask: torch.Tensor | None = None,
    eta: float = 0.9,
    *,
    dim: int = 0,
) -> torch.Tensor:
    """R2D2's replay priority of a sequence from its TD errors.

    .. math::

        p = \\eta \\max_t |\\delta_t| + (1 - \\eta) \\operatorname{mean}_t |\\delta_t|

    over the time axis ``dim`` (0 for time-major ``[T, B]``). With ``mask``
    (same shape as ``td_abs``; bool, other dtypes read as ``!= 0``) the max and
    mean run over the valid steps only; a sequence with no valid step gets
    priority 0. The absolute value is taken again, so signed TD errors are also
    fine.

    Args:
      td_abs: ``[..., T, ...]`` absolute TD errors.
      mask: optional validity mask, same shape as ``td_abs``.
      eta: weight of the max, in ``[0, 1]``; default 0.9 (R2D2).
      dim: the time axis; default 0.

    Returns:
      ``td_abs`` reduced over ``dim``; detached (``requires_grad=False``).

    Raises:
      ValueError: a shape, ``eta`` or ``dim`` is wrong (the message names it).
      TypeError: ``td_abs`` is not a floating-point tensor.
    """
    float_tensor("td_abs", td_abs)
    if td_abs.ndim < 1:
        raise ValueError(f"td_abs must have at least a time axis, got shape {tuple(td_abs.shape)}")
    if not -td_abs.ndim <= dim < td_abs.ndim:
        raise ValueError(
            f"dim must be in [{-td_abs.ndim}, {td_abs.ndim}) for td_abs of shape {tuple(td_abs.shape)}, got {dim}"
        )
    if td_abs.shape[dim] == 0:
        raise ValueError(f"td_abs must have a non-empty time axis (dim={dim}), got shape {tuple(td_abs.shape)}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta!r}")
    with torch.no_grad():
        td = td_abs.detach().abs()
        if mask is None:
            return eta * td.amax(dim=dim) + (1.0 - eta) * td.mean(dim=dim)
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
        if mask.shape != td_abs.shape:
            raise ValueError(
                f"mask must have the same shape as td_abs, got mask.shape = {tuple(mask.shape)} "
                f"and td_abs.shape = {tuple(td_abs.shape)}"
            )
        valid = mask.detach().to(device=td.device, dtype=torch.bool)
        td = torch.where(valid, td, torch.zeros_like(td))
        count = valid.sum(dim=dim).to(td.dtype)
        mean = td.sum(dim=dim) / count.clamp(min=1.0)
        return eta * td.amax(dim=dim) + (1.0 - eta) * mean
