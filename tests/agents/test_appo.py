"""APPO: the clipped surrogate against brute force, its first step against IMPALA's, the passes, the learner."""

from __future__ import annotations

import queue

import numpy as np
import pytest
import torch

from seedrl.agents.appo import AppoConfig, AppoMinibatch, AppoStep, appo_loss, appo_targets
from seedrl.agents.impala import ImpalaConfig, impala_loss
from seedrl.config import ConfigError, load_config
from seedrl.runtime.config import AppoTrainConfig
from seedrl.runtime.learner import Learner
from seedrl.runtime.unrolls import Unroll
from tests.agents.test_impala import TabularPolicy, _batch

SHARED = dict(discount=0.9, lambda_=0.8, clip_rho=0.9, clip_c=1.3, clip_pg_rho=0.6,
              baseline_cost=0.7, entropy_cost=0.05, reward_clip=1.0)


def _grads(model: torch.nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def test_first_gradient_step_of_a_batch_is_impalas():
    # at θ = θ₀ the ratio is 1 and ∇(r·A) = ∇log π · A: without normalisation APPO's first step is IMPALA's
    batch = _batch()
    cfg = AppoConfig(**SHARED, normalize_advantages=False)
    model = TabularPolicy(seed=3)
    appo, _ = appo_loss(model, appo_targets(model, batch, cfg), cfg)
    impala, _ = impala_loss(model, batch, ImpalaConfig(**SHARED))
    for g_appo, g_impala in zip(_grads(model, appo), _grads(model, impala)):
        torch.testing.assert_close(g_appo, g_impala, rtol=1e-10, atol=1e-12)


def _move(model: TabularPolicy, seed: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.logits.add_(scale * torch.randn(model.logits.shape, generator=g, dtype=torch.float64))
        model.value.add_(scale * torch.randn(model.value.shape, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("normalize", [False, True])
def test_surrogate_value_and_gradient_match_brute_force_after_the_policy_moved(normalize):
    batch = _batch()
    cfg = AppoConfig(**SHARED, clip_ratio=0.2, normalize_advantages=normalize)
    model = TabularPolicy(seed=1)
    mb = appo_targets(model, batch, cfg)
    _move(model, seed=7, scale=0.4)  # ratios now on both sides of 1 ± ε
    loss, logs = appo_loss(model, mb, cfg)

    a = batch.arrays
    adv = mb.advantages.numpy().copy()
    if normalize:
        adv = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)
    T, B = adv.shape
    pg, clipped, binding = 0.0, 0, []
    for t in range(T):
        for b in range(B):
            logp = torch.log_softmax(model.logits[a["obs"][t, b]], -1)[a["action"][t, b]].item()
            r = float(np.exp(logp - mb.anchor_logp[t, b].item()))
            pg -= min(r * adv[t, b], min(max(r, 0.8), 1.2) * adv[t, b]) / (T * B)
            clipped += abs(r - 1) > 0.2
            binding.append((adv[t, b] > 0 and r > 1.2) or (adv[t, b] < 0 and r < 0.8))
    assert 0 < clipped < T * B and any(binding) and not all(binding)
    assert logs["pg_loss"] == pytest.approx(pg, rel=1e-6)  # the loss works in float32
    assert logs["clip_fraction"] == pytest.approx(clipped / (T * B))

    # gradient: binding elements contribute nothing to the policy term, the others r·A
    obs, act = torch.from_numpy(a["obs"][:-1]), torch.from_numpy(a["action"][:-1])
    logp = torch.log_softmax(model.logits[obs], -1).gather(-1, act.unsqueeze(-1)).squeeze(-1)
    ratio = (logp - mb.anchor_logp).exp()
    keep = ~torch.tensor(binding).reshape(T, B)
    values = model.value[obs]
    entropy = -(torch.log_softmax(model.logits[obs], -1).exp() * torch.log_softmax(model.logits[obs], -1)).sum(-1).mean()
    ref = (-(ratio * torch.from_numpy(adv) * keep).sum() / (T * B)
           + cfg.baseline_cost * 0.5 * ((mb.vs - values) ** 2).mean() - cfg.entropy_cost * entropy)
    for g, g_ref in zip(_grads(model, loss), _grads(model, ref)):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-7)


def _wide_batch(envs: int) -> Unroll:
    """``envs`` copies of the test batch's environments, each with its own observations."""
    base = _batch()
    reps = (envs + 1) // 2
    arrays = {k: np.concatenate([v] * reps, axis=1)[:, :envs] for k, v in base.arrays.items()}
    arrays["obs"] = (arrays["obs"] + np.arange(envs)[None, :]) % 9
    return Unroll(arrays, ())


def test_passes_cover_every_environment_once_per_epoch_with_targets_fixed_at_arrival():
    batch = _wide_batch(7)
    cfg = AppoConfig(**SHARED, epochs=3, minibatches=3)
    model = TabularPolicy(seed=2)
    step = AppoStep(model, cfg, seed=0)
    whole = appo_targets(model, batch, cfg)
    seen = []
    for i, mb in enumerate(step.passes(batch)):
        assert isinstance(mb, AppoMinibatch)
        envs = [int(np.flatnonzero((batch.arrays["obs"] == mb.unroll.arrays["obs"][:, [j]]).all(0))[0])
                for j in range(mb.unroll.num_envs)]
        torch.testing.assert_close(mb.vs, whole.vs[:, envs])  # computed once, before the model moved
        torch.testing.assert_close(mb.advantages, whole.advantages[:, envs])
        torch.testing.assert_close(mb.anchor_logp, whole.anchor_logp[:, envs])
        seen.append(envs)
        _move(model, seed=i, scale=0.3)
    assert len(seen) == 9 and [len(e) for e in seen[:3]] in ([3, 2, 2], [2, 3, 2], [2, 2, 3])
    for epoch in range(3):
        assert sorted(sum(seen[3 * epoch:3 * epoch + 3], [])) == list(range(7))
    assert seen[:3] != seen[3:6]  # reshuffled each epoch


def test_learner_takes_one_optimizer_step_per_minibatch_and_publishes_once():
    model = TabularPolicy(seed=4)
    cfg = AppoConfig(**SHARED, epochs=2, minibatches=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    learner = Learner(model, None, optimizer, AppoStep(model, cfg), queue.Queue(), 6, grad_clip=1.0)
    published = []
    learner.on_publish = published.append
    logs = learner.update(_wide_batch(6), frames=0)
    assert optimizer.state[model.logits]["step"].item() == 6 and logs["gradient_steps"] == 6
    assert published == [1] and learner.updates == 1
    assert logs["approx_kl"] >= 0 and 0 <= logs["clip_fraction"] <= 1


def test_appo_learns_a_contextual_bandit():
    # obs id decides the rewarded action; one batch repeated: the passes must raise the right actions' probability
    rng = np.random.default_rng(0)
    T, B = 4, 8
    obs = rng.integers(0, 9, (T + 1, B))
    model = TabularPolicy(seed=5)
    with torch.no_grad():
        probs = torch.softmax(model.logits, -1)
    cfg = AppoConfig(discount=0.0, epochs=4, minibatches=2, entropy_cost=0.0)
    step = AppoStep(model, cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    learner = Learner(model, None, optimizer, step, queue.Queue(), B, grad_clip=None)
    for _ in range(30):
        with torch.no_grad():
            p = torch.softmax(model.logits[torch.from_numpy(obs)], -1)
        action = torch.multinomial(p.reshape(-1, 3), 1, generator=torch.Generator().manual_seed(_)).reshape(T + 1, B)
        reward = np.zeros((T + 1, B), np.float32)
        reward[1:] = (action[:-1].numpy() == obs[:-1] % 3).astype(np.float32)
        arrays = {"obs": obs, "first": np.zeros((T + 1, B), bool), "reward": reward,
                  "terminated": np.ones((T + 1, B), bool), "truncated": np.zeros((T + 1, B), bool),
                  "action": action.numpy(), "logp": p.gather(-1, action.unsqueeze(-1)).squeeze(-1).log().float().numpy(),
                  "prev_action": np.zeros((T + 1, B), np.int64), "prev_reward": np.zeros((T + 1, B), np.float32),
                  "version": np.zeros((T + 1, B), np.int64)}
        learner.update(Unroll(arrays, ()), frames=0)
    seen = np.unique(obs[:-1])
    with torch.no_grad():
        after = torch.softmax(model.logits, -1)
    right_before = probs[seen, seen % 3].mean().item()
    right_after = after[seen, seen % 3].mean().item()
    assert right_after > 0.9 > right_before + 0.4, (right_before, right_after)


def test_more_minibatches_than_batch_environments_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="agent.minibatches") as err:
        load_config(AppoTrainConfig, {"name": "t", "out_dir": str(tmp_path), "agent": {"minibatches": 20},
                                      "runtime": {"batch_size": 16}})
    assert "20" in str(err.value) and "16" in str(err.value)


def test_transition_minibatches_cover_every_step_once_per_epoch_with_targets_fixed_at_arrival():
    batch = _wide_batch(3)  # T = 5, 3 envs: 15 transitions
    cfg = AppoConfig(**SHARED, epochs=2, minibatches=4, shuffle="transitions")
    model = TabularPolicy(seed=2)
    whole = appo_targets(model, batch, cfg)
    seen = []
    for i, mb in enumerate(AppoStep(model, cfg, seed=0).passes(batch)):
        t, b = mb.steps
        torch.testing.assert_close(mb.vs, whole.vs[t, b])
        torch.testing.assert_close(mb.advantages, whole.advantages[t, b])
        torch.testing.assert_close(mb.anchor_logp, whole.anchor_logp[t, b])
        seen.append(sorted(zip(t.tolist(), b.tolist())))
        _move(model, seed=i, scale=0.3)
    assert len(seen) == 8 and sorted(len(s) for s in seen[:4]) == [3, 4, 4, 4]
    every = sorted((t, b) for t in range(5) for b in range(3))
    assert sorted(sum(seen[:4], [])) == every and sorted(sum(seen[4:], [])) == every
    assert seen[:4] != seen[4:]
    assert any(len({b for _, b in s}) > 1 and len({t for t, _ in s}) > 1 for s in seen)  # mixed, not whole unrolls


@pytest.mark.parametrize("normalize", [False, True])
def test_one_minibatch_of_all_transitions_is_the_whole_unroll_loss(normalize):
    # the same transitions in another order: every term is a mean, so loss and gradient are the same
    batch = _wide_batch(4)
    model = TabularPolicy(seed=6)
    by_unroll = AppoConfig(**SHARED, clip_ratio=0.2, minibatches=1, normalize_advantages=normalize)
    by_step = AppoConfig(**SHARED, clip_ratio=0.2, minibatches=1, normalize_advantages=normalize, shuffle="transitions")
    mb_unroll = next(AppoStep(model, by_unroll).passes(batch))
    mb_step = next(AppoStep(model, by_step).passes(batch))
    _move(model, seed=9, scale=0.4)
    loss_u, logs_u = appo_loss(model, mb_unroll, by_unroll)
    loss_s, logs_s = appo_loss(model, mb_step, by_step)
    assert loss_s.item() == pytest.approx(loss_u.item(), rel=1e-6)
    for key in ("pg_loss", "baseline_loss", "entropy", "clip_fraction", "approx_kl", "mean_abs_log_rho"):
        assert logs_s[key] == pytest.approx(logs_u[key], rel=1e-5, abs=1e-9), key
    for g_s, g_u in zip(_grads(model, loss_s), _grads(model, loss_u)):
        torch.testing.assert_close(g_s, g_u, rtol=1e-5, atol=1e-9)


def test_transition_minibatches_refuse_a_recurrent_model():
    batch = _batch()
    recurrent = Unroll(batch.arrays, (torch.zeros(batch.num_envs, 4),))
    step = AppoStep(TabularPolicy(), AppoConfig(shuffle="transitions", minibatches=2))
    with pytest.raises(ConfigError, match="agent.shuffle"):
        next(step.passes(recurrent))


def test_transition_minibatches_refuse_a_recurrent_network_at_start_up():
    import gymnasium as gym

    from seedrl.models.config import ModelConfig, build_model

    spaces = (gym.spaces.Box(-1.0, 1.0, (4,), np.float32), gym.spaces.Discrete(2))
    cfg = AppoConfig(shuffle="transitions", minibatches=2)
    AppoStep(build_model(ModelConfig(), *spaces), cfg)  # feed-forward: accepted
    with pytest.raises(ConfigError, match="agent.shuffle"):
        AppoStep(build_model(ModelConfig(lstm_size=8), *spaces), cfg)
    AppoStep(build_model(ModelConfig(lstm_size=8), *spaces), AppoConfig())  # whole unrolls keep the sequences


def test_transition_minibatches_may_outnumber_environments_but_not_transitions(tmp_path):
    def cfg(**agent):
        return load_config(AppoTrainConfig, {"name": "t", "out_dir": str(tmp_path), "agent": agent,
                                             "runtime": {"batch_size": 4, "unroll_length": 8}})
    assert cfg(minibatches=8, shuffle="transitions").agent.minibatches == 8
    with pytest.raises(ConfigError, match="agent.minibatches") as err:
        cfg(minibatches=33, shuffle="transitions")
    assert "33" in str(err.value) and "32" in str(err.value)
    with pytest.raises(ConfigError, match="agent.minibatches"):
        cfg(minibatches=8)
