"""Language RL on the runtime: actors, the generation server and the learner together."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")

from seedrl.config import ConfigError, load_config  # noqa: E402
from seedrl.envs.text import build_toy_assets  # noqa: E402
from seedrl.runtime.lm_loop import LMPGConfig, train_lm_pg  # noqa: E402


def sevens(prompts, completions, examples):
    """Fraction of '7' characters in a completion: a reward a random policy can learn fast."""
    return np.array([c.count("7") / max(1, len(c.replace(" ", ""))) for c in completions], dtype=np.float32)


def test_pg_reward_rises_and_kl_is_tracked(tmp_path):
    assets = build_toy_assets(tmp_path / "toy", world="arithmetic", seed=0, n_embd=32, n_layer=1, n_head=2)
    cfg = load_config(
        LMPGConfig,
        {
            "name": "pg", "out_dir": str(tmp_path), "policy": str(assets.path),
            "task": {"world": "arithmetic", "num_examples": 200},
            "sampling": {"max_new_tokens": 6},
            "pg": {"samples_per_prompt": 4, "kl_coef": 0.01},
            "steps": 40, "prompts_per_step": 8, "optim": {"lr": 3e-3}, "runtime": {"num_actors": 2},
            "log": {"progress": False, "every": 1}, "record": {"rate": 0.5},
        },
    )
    rows = []
    result = train_lm_pg(cfg, reward_fn=sevens, on_step=rows.append)
    first = np.mean([r["reward"] for r in rows[:5]])
    last = np.mean([r["reward"] for r in rows[-5:]])
    assert last > first + 0.2, (first, last)
    assert rows[-1]["kl"] > rows[0]["kl"]  # moving away from the reference costs KL, and it is measured
    assert all(r["policy_lag"] >= 0 for r in rows)
    logged = [json.loads(l) for l in open(tmp_path / "pg" / "metrics.jsonl")]
    assert len(logged) == 40 and (tmp_path / "pg" / "final" / "config.json").exists()
    assert result["updates"] == 40
    # completions are RLDS steps in the trajectory store, with their behaviour log-probs
    from seedrl.data import open_dataset

    ds = open_dataset(tmp_path / "pg" / "episodes")
    assert len(ds) > 0
    step = ds[0][0]
    assert len(step["behaviour_logprobs"]) == len(step["action"]["completion_tokens"])
    assert step["is_first"] and step["is_last"] and isinstance(step["action"]["completion"], str)


def test_missing_policy_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="policy"):
        load_config(LMPGConfig, {"out_dir": str(tmp_path)})


def test_pg_resume_continues_steps_optimizer_and_prompt_order(tmp_path):
    import torch

    assets = build_toy_assets(tmp_path / "toy", world="arithmetic", seed=0, n_embd=32, n_layer=1, n_head=2)
    base = {
        "name": "pg", "out_dir": str(tmp_path), "policy": str(assets.path),
        "task": {"world": "arithmetic", "num_examples": 100}, "sampling": {"max_new_tokens": 4},
        "pg": {"samples_per_prompt": 2}, "prompts_per_step": 4, "runtime": {"num_actors": 1},
        "log": {"progress": False, "every": 1, "checkpoint_every": 3},
    }
    train_lm_pg(load_config(LMPGConfig, {**base, "steps": 6}), reward_fn=sevens)
    state = torch.load(tmp_path / "pg" / "checkpoint-6" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 6 and state["samples"] == 6 * 4 * 2 and state["task"]
    with pytest.raises(FileExistsError, match="--resume"):
        train_lm_pg(load_config(LMPGConfig, {**base, "steps": 9}), reward_fn=sevens)
    rows = []
    train_lm_pg(load_config(LMPGConfig, {**base, "steps": 9}), resume=True, reward_fn=sevens, on_step=rows.append)
    assert [r["updates"] for r in rows] == [7, 8, 9]
    assert rows[0]["frames"] == 6 * 4 * 2 + 4 * 2  # sample counter continues
    resumed = torch.load(tmp_path / "pg" / "checkpoint-9" / "trainer_state.pt", weights_only=False)
    first_param_state = next(iter(resumed["optimizer"]["state"].values()))
    assert float(first_param_state["step"]) == 9  # Adam moments carried over: 6 + 3 steps
    assert sorted(p.name for p in (tmp_path / "pg").glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-9"]


def test_updates_live_in_their_agent_modules_and_old_imports_warn():
    import seedrl.runtime.lm_updates as lm_updates
    from seedrl.agents.bond import BondUpdate
    from seedrl.agents.pg import PGUpdate
    from seedrl.runtime.lm_loop import UPDATES

    assert UPDATES["pg"] is PGUpdate and UPDATES["bond"] is BondUpdate and "rlef" in UPDATES
    with pytest.warns(DeprecationWarning, match="seedrl.agents.pg.PGUpdate"):
        assert lm_updates.PGUpdate is PGUpdate
    with pytest.warns(DeprecationWarning, match="seedrl.agents.bond"):
        assert lm_updates.BondUpdate is BondUpdate
    with pytest.raises(AttributeError):
        lm_updates.NoSuchUpdate  # noqa: B018
