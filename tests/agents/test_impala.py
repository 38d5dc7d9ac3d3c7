"""The IMPALA loss against a hand-computed case, independent of ``seedrl.ops.vtrace``.

A tabular model (logits and value per observation id) makes every term of
the loss a closed form: the V-trace targets are written out as the explicit
sum ``v_s = V(x_s) + Σ_t (Π_{i<t} γ_i c_i) δ_t`` per episode segment (the op
uses a backward recursion), and the reference loss is rebuilt from those
numpy constants, so its gradient is the stop-gradient one by construction.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seedrl.agents.impala import ImpalaConfig, impala_loss
from seedrl.runtime.unrolls import Unroll

T, B, A, N_OBS = 5, 2, 3, 9


class TabularPolicy(torch.nn.Module):
    """logits[obs], value[obs]: no torso, no state."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.logits = torch.nn.Parameter(torch.randn(N_OBS, A, generator=g, dtype=torch.float64))
        self.value = torch.nn.Parameter(torch.randn(N_OBS, generator=g, dtype=torch.float64))

    def initial_state(self, n):
        return ()

    def step(self, obs, state, first=None, prev_action=None, prev_reward=None):
        return self.logits[obs], self.value[obs], ()

    def unroll(self, obs, state0, first=None, prev_action=None, prev_reward=None):
        return self.logits[obs], self.value[obs], ()


def _batch() -> Unroll:
    """Env 0: terminal after transition 1, time-limit cut after transition 3.
    Env 1: time-limit cut at the last transition (T − 1), so V(x_T) must be unused there."""
    obs = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [1, 2], [3, 8]], dtype=np.int64)
    action = np.array([[0, 2], [1, 1], [2, 0], [0, 1], [1, 2], [0, 0]], dtype=np.int64)
    reward = np.array([[0, 0], [1.5, -0.3], [-2.0, 0.7], [0.4, 3.0], [0.9, -0.2], [0.1, 1.1]], dtype=np.float32)
    terminated = np.zeros((T + 1, B), bool)
    truncated = np.zeros((T + 1, B), bool)
    terminated[2, 0] = True  # transition 1 of env 0 ends the episode
    truncated[4, 0] = True  # transition 3 of env 0 hits the time limit
    truncated[5, 1] = True  # transition 4 (the last) of env 1 hits the time limit
    # behaviour log-probs: rhos on both sides of every clip threshold
    logp = np.log(np.array([[0.1, 0.6], [0.5, 0.05], [0.3, 0.9], [0.02, 0.4], [0.7, 0.2], [0.3, 0.3]], np.float32))
    arrays = {
        "obs": obs,
        "first": np.zeros((T + 1, B), bool),
        "reward": reward,
        "terminated": terminated,
        "truncated": truncated,
        "action": action,
        "logp": logp,
        "prev_action": np.zeros((T + 1, B), np.int64),
        "prev_reward": np.zeros((T + 1, B), np.float32),
        "version": np.zeros((T + 1, B), np.int64),
    }
    final_obs = {(4, 0): np.array(8, np.int64), (5, 1): np.array(4, np.int64)}
    return Unroll(arrays, (), final_obs)


CFG = ImpalaConfig(
    discount=0.9, lambda_=0.8, clip_rho=0.9, clip_c=1.3, clip_pg_rho=0.6,
    baseline_cost=0.7, entropy_cost=0.05, reward_clip=1.0,
)


def _hand_targets(model: TabularPolicy, batch: Unroll, cfg: ImpalaConfig):
    """v_s and pg advantages by the explicit-sum definition, plain Python floats."""
    a = batch.arrays
    lg = model.logits.detach().numpy()
    val = model.value.detach().numpy()
    logpi = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
    vs = np.zeros((T, B))
    adv = np.zeros((T, B))
    for b in range(B):
        V = [float(val[a["obs"][t, b]]) for t in range(T + 1)]
        rho = [math.exp(logpi[a["obs"][t, b], a["action"][t, b]] - a["logp"][t, b]) for t in range(T)]
        clip = math.inf if cfg.reward_clip is None else cfg.reward_clip
        r = [max(-clip, min(clip, float(a["reward"][t + 1, b]))) for t in range(T)]
        gam = [0.0 if a["terminated"][t + 1, b] else cfg.discount for t in range(T)]
        cut = [bool(a["truncated"][t + 1, b]) for t in range(T)]
        v_next = [
            float(val[batch.final_obs[(t + 1, b)]]) if cut[t] else V[t + 1] for t in range(T)
        ]
        delta = [min(cfg.clip_rho, rho[t]) * (r[t] + gam[t] * v_next[t] - V[t]) for t in range(T)]
        for s in range(T):
            total, prod = 0.0, 1.0
            for t in range(s, T):
                total += prod * delta[t]
                if cut[t]:
                    break
                prod *= gam[t] * cfg.lambda_ * min(cfg.clip_c, rho[t])
            vs[s, b] = V[s] + total
        for s in range(T):
            nxt = v_next[s] if cut[s] else (vs[s + 1, b] if s + 1 < T else V[T])
            adv[s, b] = min(cfg.clip_pg_rho, rho[s]) * (r[s] + gam[s] * nxt - V[s])
    return vs, adv


def _hand_loss(model: TabularPolicy, batch: Unroll, cfg: ImpalaConfig) -> torch.Tensor:
    vs, adv = _hand_targets(model, batch, cfg)
    obs = torch.from_numpy(batch.arrays["obs"][:-1])
    act = torch.from_numpy(batch.arrays["action"][:-1])
    logpi = torch.log_softmax(model.logits[obs], -1)
    chosen = logpi.gather(-1, act.unsqueeze(-1)).squeeze(-1)
    pg = -(chosen * torch.from_numpy(adv)).sum() / (T * B)
    baseline = 0.5 * ((torch.from_numpy(vs) - model.value[obs]) ** 2).sum() / (T * B)
    entropy = -(logpi.exp() * logpi).sum() / (T * B)
    return pg + cfg.baseline_cost * baseline - cfg.entropy_cost * entropy


@pytest.mark.parametrize("cfg", [CFG, ImpalaConfig(discount=0.97, entropy_cost=0.2, clip_rho=2.0, clip_c=0.5, clip_pg_rho=1.5)])
def test_impala_loss_and_gradient_match_hand_computation(cfg):
    batch = _batch()
    model = TabularPolicy()
    loss, logs = impala_loss(model, batch, cfg)
    grads = torch.autograd.grad(loss, [model.logits, model.value])

    ref_model = TabularPolicy()
    ref = _hand_loss(ref_model, batch, cfg)
    ref_grads = torch.autograd.grad(ref, [ref_model.logits, ref_model.value])

    assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    assert logs["loss"] == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    for g, rg in zip(grads, ref_grads):
        np.testing.assert_allclose(g.numpy(), rg.numpy(), rtol=1e-5, atol=1e-6)


def test_hand_case_exercises_every_branch():
    """The fixture is only a check if clips bind both ways and the cut transitions matter."""
    batch = _batch()
    model = TabularPolicy()
    lg = model.logits.detach().numpy()
    logpi = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
    a = batch.arrays
    rho = np.exp(logpi[a["obs"][:-1], a["action"][:-1]] - a["logp"][:-1])
    for clip in (CFG.clip_rho, CFG.clip_c, CFG.clip_pg_rho):
        assert (rho > clip).any() and (rho < clip).any()
    assert (np.abs(a["reward"][1:]) > CFG.reward_clip).any()
    # the final observations' values differ from the next-episode values they replace
    val = model.value.detach().numpy()
    assert abs(val[8] - val[a["obs"][4, 0]]) > 0.1 and abs(val[4] - val[a["obs"][5, 1]]) > 0.1


def test_logged_policy_drift_sees_what_mean_rho_cannot():
    """E_μ[ρ] = Σ_a π(a|x) = 1 for any π, so a mean ρ of 1 says nothing about how far π moved
    from μ (issue 10 read 'mean_rho 1.0' as 'the logits never change'). The logs carry the
    mean |log ρ| and the share of ρ above clip_rho, by hand here."""
    batch = _batch()
    model = TabularPolicy()
    _, logs = impala_loss(model, batch, CFG)
    a = batch.arrays
    lg = model.logits.detach().numpy()
    logpi = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
    log_rho = logpi[a["obs"][:-1], a["action"][:-1]] - a["logp"][:-1]
    assert logs["mean_abs_log_rho"] == pytest.approx(np.abs(log_rho).mean(), rel=1e-5)
    assert logs["rho_clipped"] == pytest.approx((np.exp(log_rho) > CFG.clip_rho).mean())

    # actions drawn from μ: the mean ρ is ~1 although π and μ differ a lot; the drift shows.
    rng = np.random.default_rng(0)
    mu = np.array([0.7, 0.2, 0.1])
    n = 20_000
    actions = rng.choice(3, size=(n + 1, 1), p=mu)
    arrays = {k: np.zeros((n + 1, 1), v.dtype) for k, v in a.items()}
    arrays.update(action=actions, logp=np.log(mu)[actions].astype(np.float32))
    far = TabularPolicy()
    with torch.no_grad():
        far.logits.zero_()  # π uniform
    _, drift = impala_loss(far, Unroll(arrays, ()), CFG)
    assert drift["mean_rho"] == pytest.approx(1.0, abs=0.03)
    assert drift["mean_abs_log_rho"] > 0.5 and drift["rho_clipped"] > 0.25
