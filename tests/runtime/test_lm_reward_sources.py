"""Rewards of language runs from the config: the task's own, a reward model, NLI, weighted sums."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

from seedrl.config import load_config  # noqa: E402
from seedrl.envs.text import build_toy_assets  # noqa: E402
from seedrl.rewards import RewardModel  # noqa: E402
from seedrl.runtime.lm_loop import LMPGConfig, _task_and_reward, train_lm  # noqa: E402


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    root = tmp_path_factory.mktemp("rm")
    assets = build_toy_assets(root / "toy", world="arithmetic", seed=0, n_embd=32, n_layer=1, n_head=2)
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(assets.path, num_labels=1)
    rm.save_pretrained(root / "rm")
    AutoTokenizer.from_pretrained(assets.path).save_pretrained(root / "rm")
    return assets.path, str(root / "rm")


def _cfg(tmp_path, policy, **task):
    return load_config(LMPGConfig, {"name": "r", "out_dir": str(tmp_path), "policy": str(policy),
                                    "task": {"world": "arithmetic", "num_examples": 50, **task},
                                    "sampling": {"max_new_tokens": 4}, "pg": {"samples_per_prompt": 2},
                                    "steps": 2, "prompts_per_step": 2, "runtime": {"num_actors": 1},
                                    "log": {"progress": False}})


def test_reward_model_replaces_the_task_reward_and_weights_combine(tmp_path, paths):
    policy, rm_path = paths
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(policy)
    prompts, comps = ["1 + 2 =", "3 - 1 ="], [" 3", " 7"]
    examples = [{"answer": "3"}, {"answer": "2"}]
    rm_scores = RewardModel.from_pretrained(rm_path)(prompts, comps, examples)
    _, task_reward = _task_and_reward(_cfg(tmp_path, policy), tok)
    exact = task_reward(prompts, comps, examples)
    _, only_rm = _task_and_reward(_cfg(tmp_path, policy, reward_model=rm_path), tok)
    np.testing.assert_allclose(only_rm(prompts, comps, examples), rm_scores, rtol=1e-6)
    _, mixed = _task_and_reward(_cfg(tmp_path, policy, reward_model=rm_path, reward_weights={"task": 0.5, "reward_model": 2.0}), tok)
    np.testing.assert_allclose(mixed(prompts, comps, examples), 0.5 * exact + 2.0 * rm_scores, rtol=1e-5)


def test_reward_source_errors_name_the_key(tmp_path, paths):
    policy, rm_path = paths
    with pytest.raises(ValueError, match="unknown sources"):
        _task_and_reward(_cfg(tmp_path, policy, reward_weights={"critic": 1.0}), None)
    with pytest.raises(ValueError, match="reward_weights.nli"):
        _task_and_reward(_cfg(tmp_path, policy, reward_weights={"nli": 1.0}), None)


def test_a_run_trains_on_a_reward_model(tmp_path, paths):
    policy, rm_path = paths
    rows = []
    train_lm(_cfg(tmp_path, policy, reward_model=rm_path), on_step=rows.append)
    assert [r["updates"] for r in rows] == [1, 2] and all(np.isfinite(r["reward"]) for r in rows)
