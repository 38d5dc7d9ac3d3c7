"""Pure math ops of the SEED RL agents (rlax style: one function per concept).

Sequence tensors are time-major ``[T, B]`` (any trailing batch shape ``[T, *B]``
works). Functions that produce learning targets return detached tensors.

* :func:`vtrace` -> :class:`VTraceReturns` -- IMPALA's off-policy targets.
* :func:`n_step_returns`, :func:`double_q_n_step_targets`,
  :func:`sequence_priority` -- R2D2's targets and replay priorities.
* :func:`value_rescaling`, :func:`inverse_value_rescaling` -- R2D2's ``h``
  and ``h^{-1}``.
"""

from seedrl.ops.returns import double_q_n_step_targets, n_step_returns, sequence_priority
from seedrl.ops.value_rescaling import DEFAULT_EPS, inverse_value_rescaling, value_rescaling
from seedrl.ops.vtrace import VTraceReturns, vtrace

__all__ = [
    "DEFAULT_EPS",
    "VTraceReturns",
    "double_q_n_step_targets",
    "inverse_value_rescaling",
    "n_step_returns",
    "sequence_priority",
    "value_rescaling",
    "vtrace",
]
