"""Rewards: batched callables ``(prompts, completions, examples) -> float32 [B]``.

* :class:`RewardFn` (the validated base), :class:`CallableReward`,
  :class:`CombinedReward`, :func:`validate_rewards`, :class:`RewardError`
  (``seedrl.rewards.base``);
* :class:`RewardModel`: a one-output sequence classifier (``seedrl.rewards.models``);
* :class:`NLIReward`: entailment of the completion by a source field, with
  premise chunking (``seedrl.rewards.nli``).

``RewardModel`` and ``NLIReward`` import torch / transformers only when used.
"""

from seedrl.rewards.base import (
    NAN_MODES,
    CallableReward,
    CombinedReward,
    RewardError,
    RewardFn,
    as_reward_fn,
    check_reward_on,
    load_reward_callable,
    validate_rewards,
)


def __getattr__(name: str):
    if name == "RewardModel":
        from seedrl.rewards.models import RewardModel

        return RewardModel
    if name in ("NLIReward", "find_entailment_label", "chunk_windows"):
        from seedrl.rewards import nli

        return getattr(nli, name)
    raise AttributeError(f"module 'seedrl.rewards' has no attribute {name!r}")


__all__ = [
    "NAN_MODES",
    "CallableReward",
    "CombinedReward",
    "NLIReward",
    "RewardError",
    "RewardFn",
    "RewardModel",
    "as_reward_fn",
    "check_reward_on",
    "chunk_windows",
    "find_entailment_label",
    "load_reward_callable",
    "validate_rewards",
]
