"""Config of the actor-critic network (see :mod:`seedrl.config` for the conventions)."""

from __future__ import annotations

from dataclasses import dataclass, field

from seedrl.models.actor_critic import ActorCritic

__all__ = ["ModelConfig", "build_model"]


@dataclass
class ModelConfig:
    """Which :class:`~seedrl.models.ActorCritic` to build for an environment's spaces."""

    torso: str = field(
        default="auto",
        metadata={
            "help": "feature extractor: auto (mlp for 1-D Box, nature for uint8 (C, H, W) images), "
            "mlp, nature (DQN CNN), small (the 2013 DQN CNN, ~40% of nature's learner cost), impala (IMPALA deep ResNet)",
            "choices": ["auto", "mlp", "nature", "small", "impala"],
        },
    )
    hidden: tuple[int, ...] = field(
        default=(64, 64), metadata={"help": "hidden layer sizes of the mlp torso", "min": 1}
    )
    activation: str = field(
        default="tanh", metadata={"help": "activation of the mlp torso", "choices": ["tanh", "relu"]}
    )
    lstm_size: int | None = field(
        default=None, metadata={"help": "LSTM core width; null for a feed-forward model", "min": 1}
    )
    use_prev_action_reward: bool = field(
        default=False,
        metadata={"help": "feed the one-hot previous action and clipped previous reward to the core (IMPALA)"},
    )
    reward_clip: float | None = field(
        default=1.0,
        metadata={"help": "clip the previous-reward input to [-x, x]; null: no clipping", "min_exclusive": 0},
    )


def build_model(cfg: ModelConfig, observation_space, action_space) -> ActorCritic:
    """The :class:`ActorCritic` that ``cfg`` describes for Gymnasium ``observation_space`` / ``action_space``."""
    return ActorCritic.from_spaces(
        observation_space,
        action_space,
        torso=cfg.torso,
        lstm_size=cfg.lstm_size,
        hidden=cfg.hidden,
        activation=cfg.activation,
        use_prev_action_reward=cfg.use_prev_action_reward,
        reward_clip=cfg.reward_clip,
    )
