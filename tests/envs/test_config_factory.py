"""EnvConfig loading and validation, backend resolution and the make_env_batch factory."""

import importlib.util

import gymnasium as gym
import numpy as np
import pytest

from seedrl.config import ConfigError, config_to_dict, load_config
from seedrl.envs import (
    COUNTING_ID,
    EnvConfig,
    EnvpoolBatch,
    GymnasiumBatch,
    envpool_options,
    make_env_batch,
    resolve_backend,
)

HAS_ENVPOOL = importlib.util.find_spec("envpool") is not None


def test_load_and_round_trip():
    cfg = load_config(EnvConfig, {"kind": "atari", "id": "ALE/Pong-v5"}, ["num_envs=8", "episodic_life=true"])
    assert (cfg.kind, cfg.num_envs, cfg.episodic_life, cfg.sticky_action_prob) == ("atari", 8, True, 0.25)
    assert load_config(EnvConfig, config_to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "override",
    ["kind=mujoco", "backend=ray", "num_envs=0", "sticky_action_prob=1.5", "noop_max=-1", "resize=4"],
)
def test_bad_values_fail_at_load(override):
    with pytest.raises(ConfigError):
        load_config(EnvConfig, None, [override])


def test_unknown_atari_game_fails_at_load():
    pytest.importorskip("ale_py")
    with pytest.raises(ConfigError, match="unknown Atari game"):
        load_config(EnvConfig, {"kind": "atari", "id": "Pongg"})


def test_backend_resolution():
    assert resolve_backend(EnvConfig(id=COUNTING_ID)) == "gymnasium"
    assert resolve_backend(EnvConfig(backend="gymnasium")) == "gymnasium"
    assert resolve_backend(EnvConfig(id="CartPole-v1")) == ("envpool" if HAS_ENVPOOL else "gymnasium")
    with pytest.raises(ValueError):
        resolve_backend(EnvConfig(id=COUNTING_ID, backend="envpool"))


def test_envpool_options_mirror_the_gymnasium_preprocessing():
    opts = envpool_options(EnvConfig(kind="atari", id="Pong", noop_max=0, max_episode_frames=400))
    assert opts["reward_clip"] is False and opts["use_fire_reset"] is False
    assert opts["repeat_action_probability"] == 0.25 and opts["stack_num"] == 4 and opts["frame_skip"] == 4
    assert opts["noop_max"] == 1 and opts["max_episode_steps"] == 100
    assert (opts["img_height"], opts["img_width"], opts["gray_scale"]) == (84, 84, True)


def test_factory_builds_seeded_toy_batches():
    batch = make_env_batch(EnvConfig(id=COUNTING_ID, num_envs=3, seed=9))
    assert isinstance(batch, GymnasiumBatch) and batch.num_envs == 3
    assert isinstance(batch.action_space, gym.spaces.Discrete)
    np.testing.assert_array_equal(batch.reset()[:, 0], [9, 10, 11])
    batch.close()
    with make_env_batch(EnvConfig(id=COUNTING_ID), num_envs=2, seed=40) as batch:
        np.testing.assert_array_equal(batch.reset()[:, 0], [40, 41])


@pytest.mark.skipif(not HAS_ENVPOOL, reason="envpool not installed")
def test_factory_auto_uses_envpool_for_cartpole():
    with make_env_batch(EnvConfig(id="CartPole-v1", envpool_threads=1), num_envs=2, seed=0) as batch:
        assert isinstance(batch, EnvpoolBatch)
        assert batch.reset().shape == (2, 4)
