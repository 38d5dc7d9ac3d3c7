"""BOND / J-BOND on a language task: actors sample policy and anchor completions through
the generation server, the learner distils Best-of-N."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

from seedrl.config import ConfigError, load_config  # noqa: E402
from seedrl.envs.text import build_toy_assets  # noqa: E402
from seedrl.runtime.lm_loop import LMBondConfig, train_lm  # noqa: E402


def sevens(prompts, completions, examples):
    """Fraction of '7' characters: rare under the untrained reference, so Best-of-N lifts it a lot."""
    return np.array([c.count("7") / max(1, len(c.replace(" ", ""))) for c in completions], dtype=np.float32)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return build_toy_assets(tmp_path_factory.mktemp("toy"), world="arithmetic", seed=0, n_embd=32, n_layer=1, n_head=2)


def _cfg(tmp_path, assets, bond, **kw):
    base = {"name": "bond", "out_dir": str(tmp_path), "policy": str(assets.path),
            "task": {"world": "arithmetic", "num_examples": 200}, "sampling": {"max_new_tokens": 6},
            "bond": bond, "steps": 30, "prompts_per_step": 8, "optim": {"lr": 1e-2}, "runtime": {"num_actors": 2},
            "log": {"progress": False, "every": 1}, "frontier_prompts": 16}
    log = {**base["log"], **kw.pop("log", {})}
    return load_config(LMBondConfig, {**base, **kw, "log": log})


def test_bond_distils_best_of_n_of_the_reference(tmp_path, assets):
    cfg = _cfg(tmp_path, assets, {"n": 16, "beta": 0.5, "backward_reward": "log_quantile", "quantile_samples": 16})
    rows = []
    train_lm(cfg, reward_fn=sevens, on_step=rows.append)
    frontier = json.loads((tmp_path / "bond" / "bon_frontier.json").read_text())["rows"]
    ref_reward = frontier[0]["reward"]
    bo16 = frontier[-1]
    assert bo16["n"] == 16 and bo16["reward"] > 3 * ref_reward  # the target is well above the reference
    last = np.mean([r["reward"] for r in rows[-10:]])
    assert last > 2.5 * ref_reward, (ref_reward, last)  # the policy moved towards Best-of-16
    assert np.mean([r["kl"] for r in rows[-10:]]) > 0.1  # and paid KL for it, measured
    # n = M = 16: the best anchor sample is the best of 16 reference samples, whose mean reward the
    # frontier estimates independently (other prompts, other samples); likewise for the mean reward
    best = np.mean([r["best_anchor_reward"] for r in rows])
    anchor = np.mean([r["anchor_reward"] for r in rows])
    assert best == pytest.approx(bo16["reward"], rel=0.25), (best, bo16)
    assert anchor == pytest.approx(ref_reward, rel=0.5), (anchor, ref_reward)
    # the backward reward is (n − 1)·log p̂_≤ of the policy samples (floored at 1/(k + 1), k = 16)
    for r in rows:
        assert r["backward_reward"] == pytest.approx(15 * r["log_quantile"], rel=1e-4, abs=1e-6)
    assert min(r["log_quantile"] for r in rows) < 0  # not vacuous: some policy samples rank below anchor samples
    # policy and anchor samples both counted: 8 prompts x (2 policy + 16 anchor) per update
    assert rows[-1]["frames"] == 30 * 8 * (2 + 16)
    for name in ("curves.png", "reward_vs_kl.png", "final/config.json"):
        assert (tmp_path / "bond" / name).exists(), name


def test_jbond_ema_anchor_moves_is_checkpointed_and_resumes(tmp_path, assets):
    from safetensors.torch import load_file

    from seedrl.models.lm.policy import LMPolicy
    from seedrl.agents.bond import BondUpdate

    bond = {"n": 2, "beta": 0.5, "backward_reward": "jbond", "policy_samples": 1, "anchor": "ema", "anchor_ema": 0.2,
            "anchor_kl_coef": 0.1, "forward_estimator": "pool"}
    rows = []
    train_lm(_cfg(tmp_path, assets, bond, steps=4, log={"checkpoint_every": 4}, frontier_prompts=0), reward_fn=sevens,
             on_step=rows.append)
    assert all(np.isfinite(r["kl_anchor"]) for r in rows)
    ckpt = tmp_path / "bond" / "checkpoint-4"
    saved = load_file(ckpt / "anchor" / "model.safetensors")
    reference = load_file(f"{assets.path}/model.safetensors")
    policy = load_file(ckpt / "model.safetensors")
    key = next(k for k in saved if saved[k].is_floating_point() and saved[k].numel() > 100)
    # the EMA anchor sits strictly between the reference and the policy after 4 moves
    assert not torch.equal(saved[key], reference[key]) and not torch.equal(saved[key], policy[key])
    cfg = _cfg(tmp_path, assets, bond, steps=6, log={"checkpoint_every": 2}, frontier_prompts=0)
    update = BondUpdate(cfg, LMPolicy.from_pretrained(str(ckpt)), ckpt)
    assert torch.equal(dict(update.anchor.model.named_parameters())[key].detach(), saved[key])
    resumed = []
    train_lm(cfg, resume=True, reward_fn=sevens, on_step=resumed.append)
    assert [r["updates"] for r in resumed] == [5, 6]


def test_bond_config_errors(tmp_path, assets):
    with pytest.raises(ConfigError, match="n must be 2"):
        _cfg(tmp_path, assets, {"n": 4, "backward_reward": "jbond"})
    with pytest.raises(ConfigError, match="bandits only"):
        _cfg(tmp_path, assets, {"backward_reward": "exact"})


def test_learner_log_probs_match_the_reference_before_any_update(tmp_path, assets):
    """The learner scores without dropout: at update 1 the policy is the reference, so the
    sequence-level KL estimate is zero up to float error (dropout made it about -0.5 here)."""
    from seedrl.models.lm.policy import LMPolicy

    assert LMPolicy.from_pretrained(str(assets.path)).model.config.resid_pdrop > 0  # the toy models do use dropout
    rows = []
    train_lm(_cfg(tmp_path, assets, {"n": 2, "backward_reward": "jbond", "policy_samples": 1}, steps=1, frontier_prompts=0),
             reward_fn=sevens, on_step=rows.append)
    assert abs(rows[0]["kl"]) < 1e-4 and abs(rows[0]["kl_anchor"]) < 1e-4


def test_backward_only_bond_skips_the_forward_term(tmp_path, assets, monkeypatch):
    """β = 1: no anchor sample is scored by the learner (the forward log-probs carry no graph);
    β = 0.5: the best anchor sample of each prompt is, with its NLL as forward_nll."""
    import seedrl.agents.bond as bond_agent

    seen = []

    def spy(policy_lp, anchor_lp, r_b, forward_lp, weights, cfg, *rest):
        seen.append((cfg.beta, forward_lp.detach().clone(), forward_lp.requires_grad, weights.clone()))
        return real(policy_lp, anchor_lp, r_b, forward_lp, weights, cfg, *rest)

    real = bond_agent.bond_loss
    monkeypatch.setattr(bond_agent, "bond_loss", spy)
    for beta, name in ((1.0, "b1"), (0.5, "b05")):
        rows = []
        train_lm(_cfg(tmp_path, assets, {"n": 4, "beta": beta, "quantile_samples": 4}, steps=2, frontier_prompts=0,
                      name=name), reward_fn=sevens, on_step=rows.append)
        assert [r["updates"] for r in rows] == [1, 2]
        calls = [c for c in seen if c[0] == beta]
        assert len(calls) == 2
        for (_, fwd, grad, weights), row in zip(calls, rows):
            if beta == 1.0:
                assert not grad and row["forward_nll"] == 0.0
            else:  # scored: negative log-probs of real sequences, weighted one-hot
                assert grad and (fwd[weights > 0] < 0).all() and (weights.sum(1) == 1).all()
                assert row["forward_nll"] == pytest.approx(-(weights * fwd).sum(1).mean().item(), rel=1e-5)
