"""``agent.eval_envs`` (SEED's num_eval_envs): the last K slots act at ``eval_epsilon`` and alone feed
``episode_return`` and the solved check; the others' episodes are ``train_return``."""

from __future__ import annotations

import numpy as np
import pytest

from seedrl.agents.r2d2 import actor_epsilons
from seedrl.config import ConfigError
from seedrl.runtime.algorithms import game_algo
from seedrl.runtime.loop import train

from tests.runtime.test_r2d2_runtime import _cfg


def test_the_last_slots_act_at_the_eval_epsilon(tmp_path):
    cfg = _cfg(tmp_path, **{"agent.eval_envs": 3, "agent.eval_epsilon": 0.01})
    head = game_algo("r2d2").acting_head(cfg, 8)
    np.testing.assert_allclose(head.epsilons[5:], [0.01] * 3)
    np.testing.assert_allclose(head.epsilons[:5], actor_epsilons(5, 0.4, 7.0))  # SEED's spread over the others
    with pytest.raises(ConfigError, match=r"'agent.eval_envs' = 8 leaves no training environment of the 8"):
        _cfg(tmp_path, **{"agent.eval_envs": 8})


def test_episode_return_counts_only_the_evaluation_slots(tmp_path):
    # CartPole with no learning (min_replay = capacity): training slots act greedily with an untrained
    # net (episodes of ~9-10 steps), the 2 evaluation slots uniformly at random (~22 on average).
    rows = []
    cfg = _cfg(tmp_path, **{"env.id": "CartPole-v1", "agent.epsilon_base": 0.0, "agent.eval_epsilon": 1.0,
                            "agent.eval_envs": 2, "agent.min_replay": 4096, "agent.replay_capacity": 4096,
                            "total_frames": 6000, "log.solved_return": None})
    train(cfg, on_update=lambda row, backend: rows.append(row))
    last = rows[-1]
    assert last["updates"] == 0 and last["episodes"] >= 150
    assert last["episode_return"] > 16, last  # random play: mean 22 (sd ~12)
    assert last["train_return"] < 12, last  # greedy untrained play: the same few steps each time
