"""Entailment-feedback RL on the runtime: the value head and the separate critic both train
beside the policy, and a resumed run gets them and their optimizer moments back."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

from seedrl.agents.rlef import CRITIC_DIR, VALUE_HEAD_FILE, LMRLEFConfig, RLEFUpdate  # noqa: E402
from seedrl.config import load_config  # noqa: E402
from seedrl.runtime.errors import ResumeMismatch  # noqa: E402
from seedrl.runtime.lm_loop import train_lm  # noqa: E402


@pytest.fixture
def assets(tiny_arith_assets):
    return tiny_arith_assets


def _cfg(tmp_path, assets, rlef, **kw):
    base = {"name": "rlef", "out_dir": str(tmp_path), "policy": str(assets.path),
            "task": {"world": "arithmetic", "num_examples": 200}, "sampling": {"max_new_tokens": 6},
            "rlef": rlef, "steps": 30, "prompts_per_step": 8, "optim": {"lr": 3e-3}, "runtime": {"num_actors": 2},
            "log": {"progress": False, "every": 1}}
    log = {**base["log"], **kw.pop("log", {})}
    return load_config(LMRLEFConfig, {**base, **kw, "log": log})


@pytest.mark.parametrize("critic", ["head", "separate"])
def test_policy_and_critic_both_train(tmp_path, assets, critic, sevens):
    rows = []
    cfg = _cfg(tmp_path, assets, {"alpha": 0.05, "samples_per_prompt": 4, "critic": critic, "value_coef": 0.5},
               log={"checkpoint_every": 30})
    result = train_lm(cfg, reward_fn=sevens, on_step=rows.append)
    first = np.mean([r["reward"] for r in rows[:5]])
    last = np.mean([r["reward"] for r in rows[-5:]])
    assert last > first + 0.1, (first, last)
    # the critic follows the returns as the policy improves them (from its zero start)
    ret, value = (np.mean([r[k] for r in rows[-5:]]) for k in ("return", "value"))
    assert ret > 0.05 and value > 0.5 * ret, (ret, value)
    assert all(r["importance_weight"] <= 1.0 and r["policy_lag"] >= 0 for r in rows)
    # the first update is on-policy: the sampler's per-token log-probs are the learner's, token by token
    assert rows[0]["policy_lag"] == 0 and rows[0]["importance_weight"] > 0.999
    ckpt = tmp_path / "rlef" / "checkpoint-30"
    head = torch.load(ckpt / VALUE_HEAD_FILE, weights_only=True)
    assert head["linear.weight"].abs().sum() > 0  # moved from its zero start
    if critic == "separate":
        from safetensors.torch import load_file

        trained = load_file(ckpt / CRITIC_DIR / "model.safetensors")
        init = load_file(f"{assets.path}/model.safetensors")
        assert any(not torch.equal(trained[k], init[k]) for k in init)
    assert json.loads((tmp_path / "rlef" / "metrics.jsonl").read_text().splitlines()[-1])["updates"] == 30
    assert result["updates"] == 30 and (tmp_path / "rlef" / "curves.png").exists()


@pytest.mark.parametrize("critic", ["head", "separate"])
def test_resume_restores_the_critic_and_its_optimizer_state(tmp_path, assets, critic, sevens):
    from seedrl.models.lm.policy import LMPolicy

    cfg = _cfg(tmp_path, assets, {"critic": critic, "samples_per_prompt": 2}, steps=4, prompts_per_step=4,
               log={"checkpoint_every": 2})
    train_lm(cfg, reward_fn=sevens)
    ckpt = tmp_path / "rlef" / "checkpoint-4"
    policy = LMPolicy.from_pretrained(ckpt)
    update = RLEFUpdate(cfg, policy, ckpt)
    saved = torch.load(ckpt / VALUE_HEAD_FILE, weights_only=True)
    assert all(torch.equal(update.head.state_dict()[k], v) for k, v in saved.items())
    if critic == "separate":
        from safetensors.torch import load_file

        saved_critic = load_file(ckpt / CRITIC_DIR / "model.safetensors")
        mine = update.critic.model.state_dict()
        assert all(torch.equal(mine[k], v) for k, v in saved_critic.items())
    # the optimizer holds the policy's parameters and then the update's, moments included
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
    n_params = len(list(policy.parameters())) + len(update.parameters())
    assert len(state["optimizer"]["state"]) == n_params
    rows = []
    train_lm(_cfg(tmp_path, assets, {"critic": critic, "samples_per_prompt": 2}, steps=6, prompts_per_step=4,
                  log={"checkpoint_every": 2}), resume=True, reward_fn=sevens, on_step=rows.append)
    assert [r["updates"] for r in rows] == [5, 6]
    resumed = torch.load(tmp_path / "rlef" / "checkpoint-6" / "trainer_state.pt", weights_only=False)
    assert {float(s["step"]) for s in resumed["optimizer"]["state"].values()} == {6.0}  # 4 + 2 steps, every param


def test_resume_with_another_critic_kind_is_refused(tmp_path, assets, sevens):
    train_lm(_cfg(tmp_path, assets, {"critic": "head"}, steps=2, prompts_per_step=2), reward_fn=sevens)
    with pytest.raises(ResumeMismatch, match="critic"):
        train_lm(_cfg(tmp_path, assets, {"critic": "separate"}, steps=3, prompts_per_step=2), resume=True,
                 reward_fn=sevens)
