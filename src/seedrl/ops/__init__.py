"""Pure math ops of the SEED RL agents (rlax style: one function per concept).

Sequence tensors are time-major ``[T, B]`` (any trailing batch shape ``[T, *B]``
works). Functions that produce learning targets return detached tensors.

* :func:`vtrace` -> :class:`VTraceReturns` -- IMPALA's off-policy targets.
* :func:`n_step_returns`, :func:`double_q_n_step_targets`,
  :func:`sequence_priority` -- R2D2's targets and replay priorities.
* :func:`value_rescaling`, :func:`inverse_value_rescaling` -- R2D2's ``h``
  and ``h^{-1}``.
* :mod:`seedrl.ops.bond` -- Best-of-N distribution (ties handled), quantiles,
  the BOND and J-BOND rewards, the KL bound.
* :func:`truncated_importance_weights` -- ``min(c, π/μ)`` for off-policy
  policy gradients (per sequence or per token).
* :func:`masked_gae` -- GAE(λ) / Monte-Carlo returns of padded token episodes;
  :func:`kl_shaped_rewards` -- per-token rewards ``(1−α)·R·[last] − α·log π/π_a``.
"""

from seedrl.ops.bond import (
    best_of_n_probs,
    bon_kl_upper_bound,
    bon_log_ratio,
    bond_reward,
    jbond_reward,
    quantile_estimate,
    quantiles,
)
from seedrl.ops.importance import truncated_importance_weights
from seedrl.ops.kl_shaping import kl_shaped_rewards
from seedrl.ops.priorities import sequence_priority
from seedrl.ops.returns import double_q_n_step_targets, masked_gae, n_step_returns
from seedrl.ops.value_rescaling import DEFAULT_EPS, inverse_value_rescaling, value_rescaling
from seedrl.ops.vtrace import VTraceReturns, vtrace

__all__ = [
    "DEFAULT_EPS",
    "VTraceReturns",
    "best_of_n_probs",
    "bon_kl_upper_bound",
    "bon_log_ratio",
    "bond_reward",
    "double_q_n_step_targets",
    "inverse_value_rescaling",
    "jbond_reward",
    "kl_shaped_rewards",
    "masked_gae",
    "n_step_returns",
    "quantile_estimate",
    "quantiles",
    "sequence_priority",
    "truncated_importance_weights",
    "value_rescaling",
    "vtrace",
]
