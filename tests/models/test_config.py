"""Tests for seedrl.models.config: loading, constraints, build_model."""

from __future__ import annotations

import pytest
from gymnasium import spaces

from seedrl.config import ConfigError, format_config_help, load_config, save_config
from seedrl.models import ActorCritic, ImpalaResNet, MLPTorso, ModelConfig, build_model


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(ModelConfig, {"torso": "impala"}, ["lstm_size=256", "use_prev_action_reward=true"])
    assert cfg == ModelConfig(torso="impala", lstm_size=256, use_prev_action_reward=True)
    assert load_config(ModelConfig, None, ["hidden=[32, 32, 16]"]).hidden == (32, 32, 16)
    path = save_config(cfg, tmp_path / "model.yaml")
    assert load_config(ModelConfig, path) == cfg


@pytest.mark.parametrize(
    "override, words",
    [
        ("torso=resnet", "not one of"),
        ("activation=gelu", "not one of"),
        ("lstm_size=0", "below the minimum"),
        ("hidden=[64, 0]", "below the minimum"),
        ("reward_clip=0", "must be greater than"),
    ],
)
def test_bad_values_rejected(override, words):
    with pytest.raises(ConfigError, match=words):
        load_config(ModelConfig, None, [override])


def test_help_lists_every_field():
    text = format_config_help(ModelConfig)
    for name in ("torso", "hidden", "activation", "lstm_size", "use_prev_action_reward", "reward_clip"):
        assert name in text


def test_build_model():
    obs = spaces.Box(-1.0, 1.0, (5,))
    model = build_model(ModelConfig(hidden=(16,), activation="relu", lstm_size=8), obs, spaces.Discrete(3))
    assert isinstance(model, ActorCritic) and isinstance(model.torso, MLPTorso)
    assert model.torso.output_dim == 16 and model.lstm_size == 8 and model.num_actions == 3
    image = spaces.Box(0, 255, (4, 84, 84), "uint8")
    model = build_model(ModelConfig(torso="impala"), image, spaces.Discrete(6))
    assert isinstance(model.torso, ImpalaResNet) and not model.is_recurrent
