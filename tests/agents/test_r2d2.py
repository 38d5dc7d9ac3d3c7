"""R2D2's loss, priorities, burn-in, target net, ε-greedy and learner step.

The loss is checked against hand-computed cases on a tabular "network"
(Q-values per observation id, online and target tables different, so every
number below is worked out by hand in the comments); the burn-in, target-net
and sync tests use the real recurrent :class:`QNetwork`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seedrl.agents.r2d2 import R2D2Config, R2D2Step, actor_epsilons, epsilon_greedy, r2d2_loss
from seedrl.config import ConfigError
from seedrl.models import MLPTorso
from seedrl.models.q_network import QNetwork
from seedrl.runtime.unrolls import Unroll

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Q-values per state id: online selects, target evaluates. In state 3 they disagree on the best
# action (online: 0, target: 1) and in state 2 their values differ (online 1.5, target 9).
Q_ONLINE = [[1.0, 2.0], [3.0, 0.0], [0.5, 1.5], [2.0, 1.0], [0.0, 6.0]]
Q_TARGET = [[10.0, 20.0], [30.0, 5.0], [7.0, 9.0], [4.0, 8.0], [3.0, 11.0]]


class TableQ(torch.nn.Module):
    """q = table[obs]: no torso, no state."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(table, dtype=torch.float64))

    def initial_state(self, n, device=None):
        return ()

    def step(self, obs, state, first, prev_action=None, prev_reward=None):
        return self.table[obs.long()], ()

    def unroll(self, obs, state0, first, prev_action=None, prev_reward=None):
        return self.table[obs.long()], ()


def h(x, eps=1e-3):  # the formula, written out independently of seedrl.ops
    return math.copysign(math.sqrt(abs(x) + 1) - 1, x) + eps * x


def h_inv(x, eps=1e-3):
    return math.copysign(((math.sqrt(1 + 4 * eps * (abs(x) + 1 + eps)) - 1) / (2 * eps)) ** 2 - 1, x)


def chain_batch(columns: int = 1, terminal_col: int | None = None, truncated_col: int | None = None) -> Unroll:
    """Entries 0..3 in states 0..3, actions (1, 0, 1, ·), rewards r_0, r_1, r_2 = 1, 2, 4 (stored at entries 1..3).

    ``terminal_col``: in that column transition 1 ends in a terminal (entry 2 starts a new
    episode); ``truncated_col``: there transition 1 is cut by a time limit, final observation state 4.
    """
    S = 4
    arrays = {
        "obs": np.tile(np.arange(S)[:, None], (1, columns)),
        "first": np.zeros((S, columns), bool),
        "reward": np.tile(np.array([0.0, 1.0, 2.0, 4.0], np.float32)[:, None], (1, columns)),
        "terminated": np.zeros((S, columns), bool),
        "truncated": np.zeros((S, columns), bool),
        "action": np.tile(np.array([1, 0, 1, 0])[:, None], (1, columns)),
        "prev_action": np.zeros((S, columns), np.int64),
        "prev_reward": np.zeros((S, columns), np.float32),
    }
    finals = {}
    for col, flag in ((terminal_col, "terminated"), (truncated_col, "truncated")):
        if col is not None:
            arrays[flag][2, col] = True
            arrays["first"][2, col] = True
    if truncated_col is not None:
        finals[(2, truncated_col)] = np.array(4)
    return Unroll(arrays, (), finals)


def cfg(**kw) -> R2D2Config:
    base = dict(burn_in=0, n_step=2, discount=0.5, value_rescaling=False, priority_eta=0.9, min_replay=1)
    return R2D2Config(**{**base, **kw})


def loss_of(batch, weights, **kw):
    return r2d2_loss(TableQ(Q_ONLINE), TableQ(Q_TARGET), batch, torch.tensor(weights), cfg(**kw))


# ---------------------------------------------------------------------------------------- hand-computed cases
def test_loss_and_priorities_by_hand_without_rescaling():
    # Column 0, γ = 0.5, n = 2, T = 3 transitions:
    #   t=0: window 2 -> s_2, a* = argmax Q_on(s_2) = 1, Q_tg(s_2, 1) = 9:  y = 1 + .5*2 + .25*9 = 4.25
    #   t=1: window 2 -> s_3, a* = argmax Q_on(s_3) = 0, Q_tg(s_3, 0) = 4:  y = 2 + .5*4 + .25*4 = 5
    #   t=2: window 1 (end of the sequence) -> s_3:                           y = 4 + .5*4 = 6
    #   Q_on(s_t, a_t) = 2, 3, 1.5 -> δ = 2.25, 2, 4.5; ½Σδ² = 14.65625
    # Column 1, terminal after transition 1 (γ_1 = 0):
    #   y = 1 + .5*2 = 2, 2, 6 -> δ = 0, -1, 4.5; ½Σδ² = 10.625
    loss, prio, logs = loss_of(chain_batch(2, terminal_col=1), [1.0, 0.5])
    assert loss.item() == pytest.approx((14.65625 + 0.5 * 10.625) / 2)
    assert logs["loss"] == pytest.approx(9.984375)
    np.testing.assert_allclose(prio, [0.9 * 4.5 + 0.1 * 8.75 / 3, 0.9 * 4.5 + 0.1 * 5.5 / 3], rtol=1e-6)
    assert prio.dtype == np.float64 and prio.shape == (2,)


def test_loss_by_hand_with_value_rescaling():
    y = [h(1 + 0.5 * 2 + 0.25 * h_inv(9.0)), h(2 + 0.5 * 4 + 0.25 * h_inv(4.0)), h(4 + 0.5 * h_inv(4.0))]
    td = [y[0] - 2.0, y[1] - 3.0, y[2] - 1.5]
    loss, prio, _ = loss_of(chain_batch(1), [0.7], value_rescaling=True)
    assert loss.item() == pytest.approx(0.7 * 0.5 * sum(d * d for d in td), rel=1e-5)
    abs_td = [abs(d) for d in td]
    assert prio[0] == pytest.approx(0.9 * max(abs_td) + 0.1 * sum(abs_td) / 3, rel=1e-5)


def test_truncation_bootstraps_from_the_final_observation():
    # Transition 1 cut by a time limit; its lost next state is state 4: a* = argmax Q_on(4) = 1,
    # Q_tg(4, 1) = 11. y_0 = 1 + .5*2 + .25*11 = 4.75, y_1 = 2 + .5*11 = 7.5, y_2 = 6 (new episode).
    loss, prio, _ = loss_of(chain_batch(1, truncated_col=0), [1.0])
    td = [4.75 - 2.0, 7.5 - 3.0, 6.0 - 1.5]
    assert loss.item() == pytest.approx(0.5 * sum(d * d for d in td))
    # A truncation that is also a terminal does not bootstrap.
    batch = chain_batch(1, truncated_col=0)
    batch.arrays["terminated"][2, 0] = True
    loss, _, _ = loss_of(batch, [1.0])
    assert loss.item() == pytest.approx(0.5 * (0.0 ** 2 + 1.0 + 4.5 ** 2))


def test_loss_gradient_is_the_stop_gradient_one():
    # dL/dQ_on(s_t, a_t) = -w δ_t (targets carry no gradient, so state 3's row stays zero).
    online = TableQ(Q_ONLINE)
    loss, _, _ = r2d2_loss(online, TableQ(Q_TARGET), chain_batch(1), torch.tensor([1.0]), cfg())
    loss.backward()
    expected = torch.zeros(5, 2, dtype=torch.float64)
    expected[0, 1], expected[1, 0], expected[2, 1] = -2.25, -2.0, -4.5
    torch.testing.assert_close(online.table.grad, expected)


def test_weights_shape_is_checked():
    with pytest.raises(ValueError, match=r"weights must have one value per sequence \(2\)"):
        loss_of(chain_batch(2), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="burn_in=3 leaves no transition"):
        loss_of(chain_batch(1), [1.0], burn_in=3)


# ---------------------------------------------------------------------------------------- burn-in, target net
def recurrent_net(seed=0, width=8):
    torch.manual_seed(seed)
    return QNetwork(MLPTorso(3, (8,)), 2, width, dueling=True, recurrent=True, use_prev_action_reward=True).double()


def random_batch(S=9, B=3, seed=0, obs_scale=1.0) -> Unroll:
    rng = np.random.default_rng(seed)
    first = rng.random((S, B)) < 0.15
    terminated = first & (rng.random((S, B)) < 0.5)
    first[0] = True
    action = rng.integers(0, 2, (S, B))
    reward = rng.normal(size=(S, B)).astype(np.float32)
    arrays = {
        "obs": rng.normal(size=(S, B, 3)) * obs_scale,
        "first": first,
        "reward": reward,
        "terminated": terminated,
        "truncated": np.zeros((S, B), bool),
        "action": action,
        "prev_action": np.concatenate([np.zeros((1, B), np.int64), action[:-1]]),
        "prev_reward": reward,
    }
    return Unroll(arrays, (), {})


def with_state(batch: Unroll, state) -> Unroll:
    return Unroll(batch.arrays, state, batch.final_obs)


def suffix(batch: Unroll, start: int, state) -> Unroll:
    return Unroll({k: v[start:] for k, v in batch.arrays.items()}, state, {})


def burn_in_states(net, batch, burn_in, state0):
    a = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.arrays.items()}
    with torch.no_grad():
        _, state = net.unroll(a["obs"][:burn_in], state0, a["first"][:burn_in], a["prev_action"][:burn_in], a["prev_reward"][:burn_in])
    return state


def test_burn_in_leaks_no_gradient():
    online, target = recurrent_net(0), recurrent_net(1)
    g = torch.Generator().manual_seed(3)
    state0 = tuple(torch.randn(3, 8, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2))
    batch = with_state(random_batch(), state0)
    batch.arrays["first"][:5] = False  # no reset inside the burn-in: state0 would reach the loss
    c = cfg(burn_in=4, n_step=3, discount=0.9, value_rescaling=True)
    loss, _, _ = r2d2_loss(online, target, batch, torch.ones(3), c)
    grads = torch.autograd.grad(loss, [*online.parameters(), *state0], allow_unused=True)
    assert all(g is None or not g.abs().any() for g in grads[-2:])  # nothing flows back into state0
    # Parameter gradients equal those of the loss on the learning part alone, started from the
    # burned-in states (detached): the burn-in entries contribute only those states.
    s_on = burn_in_states(online, batch, 4, tuple(s.detach() for s in state0))
    s_tg = burn_in_states(target, batch, 4, tuple(s.detach() for s in state0))
    assert not torch.allclose(s_on[0], s_tg[0])  # the nets differ, so each must burn in its own state

    class FromState(torch.nn.Module):  # runs `net` from a fixed state, whatever state it is given
        def __init__(self, net, state):
            super().__init__()
            self.net, self.state = net, state

        def unroll(self, obs, state0, *rest):
            return self.net.unroll(obs, self.state, *rest)

    ref, _, _ = r2d2_loss(FromState(online, s_on), FromState(target, s_tg), suffix(batch, 4, ()), torch.ones(3), cfg(n_step=3, discount=0.9, value_rescaling=True))
    ref_grads = torch.autograd.grad(ref, list(online.parameters()))
    assert ref.item() == pytest.approx(loss.item(), rel=1e-6)
    for got, want in zip(grads[:-2], ref_grads):
        torch.testing.assert_close(got, want)


def test_burn_in_observations_act_only_through_the_state():
    online, target = recurrent_net(0), recurrent_net(1)
    batch = with_state(random_batch(), online.initial_state(3))
    batch.arrays["first"][:5] = False
    other = with_state(random_batch(), online.initial_state(3))
    other.arrays = {k: v.copy() for k, v in batch.arrays.items()}
    other.arrays["obs"][:4] = np.random.default_rng(9).normal(size=other.arrays["obs"][:4].shape)
    c = cfg(burn_in=4, n_step=3, discount=0.9)
    l1, _, _ = r2d2_loss(online, target, batch, torch.ones(3), c)
    l2, _, _ = r2d2_loss(online, target, other, torch.ones(3), c)
    assert l1.item() != pytest.approx(l2.item())  # the burn-in is used...
    batch.arrays["first"][4] = True  # ...but a reset at the first learning entry erases it
    other.arrays["first"][4] = True
    l1, _, _ = r2d2_loss(online, target, batch, torch.ones(3), c)
    l2, _, _ = r2d2_loss(online, target, other, torch.ones(3), c)
    assert l1.item() == pytest.approx(l2.item(), rel=1e-12)


def test_truncation_bootstraps_as_one_more_step_of_the_episode():
    # Recurrent nets: the final observation f of a cut episode is evaluated from each net's state after
    # the last entry, with that entry's action and the cut transition's reward as previous inputs. So
    # with n = 1 the truncated batch has the TD errors of a batch whose entry k holds f and goes on
    # (no reset) -- up to and including the cut transition k − 1.
    from seedrl.agents.r2d2 import r2d2_td_errors

    online, target = recurrent_net(0), recurrent_net(1)
    c = cfg(burn_in=2, n_step=1, discount=0.9, value_rescaling=True)
    k, col = 6, 1
    goes_on = with_state(random_batch(seed=4), online.initial_state(3))
    goes_on.arrays["first"][1:] = False
    goes_on.arrays["terminated"][:] = False
    cut = with_state(random_batch(seed=4), online.initial_state(3))
    cut.arrays = {name: v.copy() for name, v in goes_on.arrays.items()}
    cut.final_obs = {(k, col): goes_on.arrays["obs"][k, col].copy()}
    cut.arrays["obs"][k, col] = np.random.default_rng(5).normal(size=3)  # the next episode's first frame
    cut.arrays["first"][k, col] = cut.arrays["truncated"][k, col] = True
    cut.arrays["prev_action"][k, col], cut.arrays["prev_reward"][k, col] = 0, 0.0
    with torch.no_grad():
        td_cut, _ = r2d2_td_errors(online, target, cut, c)
        td_on, _ = r2d2_td_errors(online, target, goes_on, c)
    learn_k = k - 1 - c.burn_in  # the cut transition, in the learning part
    torch.testing.assert_close(td_cut[: learn_k + 1, col], td_on[: learn_k + 1, col], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(td_cut[learn_k + 1:, col], td_on[learn_k + 1:, col])  # a new episode after it
    other = [b for b in range(3) if b != col]
    torch.testing.assert_close(td_cut[:, other], td_on[:, other], rtol=0, atol=0)


def test_target_values_come_from_the_target_net():
    # The same batch with the online table as the target gives the value 1.5 instead of 9 at s_2, etc.
    online = TableQ(Q_ONLINE)
    same, _, _ = r2d2_loss(online, online, chain_batch(1), torch.tensor([1.0]), cfg())
    # y = 1 + 1 + .25*1.5 = 2.375, 2 + 2 + .25*2 = 4.5, 4 + .5*2 = 5 -> δ = .375, 1.5, 3.5
    assert same.item() == pytest.approx(0.5 * (0.375 ** 2 + 1.5 ** 2 + 3.5 ** 2))
    step = R2D2Step(online, cfg())
    assert step.target is not online and not step.target.table.requires_grad


# ---------------------------------------------------------------------------------------- learner step
def update(step: R2D2Step, opt, batch: Unroll, count: int) -> None:
    """One learner update as the runtime does it: loss, backward, optimizer step, after_update."""
    opt.zero_grad()
    loss, _, _ = step.loss(batch, torch.ones(batch.num_envs))
    loss.backward()
    opt.step()
    step.after_update(count)


def test_target_syncs_every_period_and_round_trips():
    online = recurrent_net(0)
    step = R2D2Step(online, cfg(target_update_period=3))
    frozen = {k: v.clone() for k, v in step.target.state_dict().items()}
    opt = torch.optim.SGD(online.parameters(), lr=0.1)
    batch = with_state(random_batch(), online.initial_state(3))
    for count in range(1, 7):
        update(step, opt, batch, count)
        on, tg = online.state_dict(), step.target.state_dict()
        if count % 3:
            assert any(not torch.equal(on[k], tg[k]) for k in on)
            assert all(torch.equal(tg[k], frozen[k]) for k in tg)
        else:
            assert all(torch.equal(on[k], tg[k]) for k in on)
            frozen = {k: v.clone() for k, v in tg.items()}
    assert step.syncs == 2 and step.updates == 6
    restored = R2D2Step(recurrent_net(5), cfg(target_update_period=3))
    restored.load_state_dict(step.state_dict())
    assert restored.syncs == 2 and restored.updates == 6
    assert all(torch.equal(v, step.target.state_dict()[k]) for k, v in restored.target.state_dict().items())
    restored.after_update(8)  # no multiple of 3 crossed
    assert restored.syncs == 2
    restored.after_update(10)  # a jump across 9 still syncs
    assert restored.syncs == 3


def test_insertion_priorities_match_the_loss_priorities():
    online = recurrent_net(0)
    step = R2D2Step(online, cfg(burn_in=2, n_step=3, discount=0.9, value_rescaling=True))
    batch = with_state(random_batch(), online.initial_state(3))
    _, from_loss, _ = step.loss(batch, torch.ones(3))
    fresh = step.priorities(batch)
    np.testing.assert_allclose(fresh, from_loss, rtol=1e-12)
    assert fresh.shape == (3,) and (fresh > 0).all()


def test_config_errors_name_the_field_and_value():
    with pytest.raises(ConfigError, match="'agent.n_step' = 0 is below the minimum 1"):
        R2D2Config(n_step=0).validate()
    with pytest.raises(ConfigError, match="'agent.discount' = 1.5 is above the maximum 1.0"):
        R2D2Config(discount=1.5).validate()
    with pytest.raises(ConfigError, match="'agent.min_replay' = 20 exceeds 'agent.replay_capacity' = 10"):
        R2D2Config(min_replay=20, replay_capacity=10).validate()
    with pytest.raises(ConfigError, match="'agent.replay_ratio' = nan"):
        R2D2Config(replay_ratio=float("nan")).validate()
    R2D2Config().validate()


# ---------------------------------------------------------------------------------------- exploration
def test_actor_epsilons_hand_values():
    np.testing.assert_allclose(actor_epsilons(1), [0.4])
    np.testing.assert_allclose(actor_epsilons(2), [0.4, 0.4 ** 8])
    np.testing.assert_allclose(actor_epsilons(8), [0.4, 0.16, 0.064, 0.0256, 0.01024, 0.004096, 0.0016384, 0.00065536])
    np.testing.assert_allclose(actor_epsilons(3, base=0.5, alpha=2.0), [0.5, 0.25, 0.125])
    with pytest.raises(ValueError, match="num must be an int >= 1, got 0"):
        actor_epsilons(0)


def test_epsilon_greedy_frequencies():
    n, A = 40_000, 4
    q = torch.tensor([[0.0, 1.0, 3.0, 2.0]]).repeat(3 * n, 1)
    eps = torch.tensor([0.0, 0.3, 1.0]).repeat_interleave(n)
    actions = epsilon_greedy(q, eps, torch.Generator().manual_seed(0))
    assert actions.dtype == torch.int64 and actions.shape == (3 * n,)
    for i, e in enumerate([0.0, 0.3, 1.0]):
        counts = torch.bincount(actions[i * n:(i + 1) * n], minlength=A).double() / n
        for a in range(A):
            p = e / A + (1 - e) * (a == 2)
            assert abs(counts[a].item() - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-12, (e, a, counts)
    again = epsilon_greedy(q, eps, torch.Generator().manual_seed(0))
    assert torch.equal(actions, again)  # seeded: reproducible
    with pytest.raises(ValueError, match="epsilon must have shape"):
        epsilon_greedy(q[:2], torch.zeros(3), torch.Generator())


# ---------------------------------------------------------------------------------------- learning
def test_learns_the_closed_form_q_values_of_a_two_step_chain():
    # s0 -a0-> terminal, r = 1;  s0 -a1-> s1, r = 0;  s1 -a0-> terminal, r = 0;  s1 -a1-> terminal, r = 2.
    # Fixed sequences play s0 a1 s1 a1 twice and s0 a1 s1 a0 once. With γ = 0.9 and n = 2 the
    # 2-step returns of (s0, a1) are the played ones, 1.8, 1.8 and 0 (no off-policy correction, as
    # in R2D2), and the squared loss in the rescaled space is minimised by their mean *there*:
    # Q(s0, a1) = h⁻¹((2 h(1.8) + h(0)) / 3) ≈ 1.10, not h⁻¹(h(1.2)). The one-step values are
    # Q(s0, a0) = 1, Q(s1) = (0, 2).
    episodes = [[(0, 0, 1.0)], [(0, 1, 0.0), (1, 1, 2.0)], [(0, 1, 0.0), (1, 0, 0.0)], [(0, 1, 0.0), (1, 1, 2.0)], [(0, 0, 1.0)]]
    obs, first, reward, term, action = [], [], [], [], []
    prev_r, prev_term = 0.0, True
    for ep in episodes:
        for i, (s, a, r) in enumerate(ep):
            obs.append(np.eye(3)[s]); first.append(i == 0); action.append(a)
            reward.append(prev_r); term.append(prev_term and len(obs) > 1)
            prev_r, prev_term = r, i == len(ep) - 1
    obs.append(np.eye(3)[0]); first.append(True); action.append(0); reward.append(prev_r); term.append(True)
    S = len(obs)
    col = lambda x, dt: np.asarray(x, dt).reshape(S, 1)  # noqa: E731
    arrays = {"obs": np.asarray(obs, np.float32)[:, None], "first": col(first, bool), "reward": col(reward, np.float32),
              "terminated": col(term, bool), "truncated": np.zeros((S, 1), bool), "action": col(action, np.int64),
              "prev_action": np.zeros((S, 1), np.int64), "prev_reward": np.zeros((S, 1), np.float32)}
    torch.manual_seed(0)
    net = QNetwork(MLPTorso(3, (16,)), 2, 16, dueling=True, recurrent=True)
    step = R2D2Step(net, R2D2Config(burn_in=1, n_step=2, discount=0.9, target_update_period=10, min_replay=1))
    batch = Unroll(arrays, net.initial_state(1), {})
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for count in range(1, 301):
        update(step, opt, batch, count)
    with torch.no_grad():
        q0, state = net.step(torch.eye(3)[:1], net.initial_state(1), torch.ones(1, dtype=torch.bool))
        q1, _ = net.step(torch.eye(3)[1:2], state, torch.zeros(1, dtype=torch.bool))
    raw = lambda q: [h_inv(v) for v in q[0].tolist()]  # noqa: E731
    np.testing.assert_allclose(raw(q0), [1.0, h_inv(2 * h(1.8) / 3)], atol=0.03)
    np.testing.assert_allclose(raw(q1), [0.0, 2.0], atol=0.03)


# ---------------------------------------------------------------------------------------- property: brute force


def brute_force(batch: Unroll, weights, c: R2D2Config, q_on, q_tg):
    """Loss and priorities by explicit loops over every transition's n-step window (tabular nets)."""
    def boot(s):
        value = q_tg[s][int(np.argmax(q_on[s]))]
        return h_inv(value, c.rescaling_epsilon) if c.value_rescaling else value

    def rescale(x):
        return h(x, c.rescaling_epsilon) if c.value_rescaling else x

    arr, S = batch.arrays, batch.arrays["obs"].shape[0]
    T = S - 1 - c.burn_in
    losses, prios = [], []
    for b in range(arr["obs"].shape[1]):
        tds = []
        for t in range(c.burn_in, S - 1):
            ret, scale = 0.0, 1.0
            for j in range(t, min(t + c.n_step, S - 1)):  # transition j: reward[j+1], flags at j+1
                ret += scale * float(arr["reward"][j + 1, b])
                if arr["terminated"][j + 1, b]:
                    scale = 0.0
                    break
                if arr["truncated"][j + 1, b]:
                    ret += scale * c.discount * boot(int(batch.final_obs[(j + 1, b)]))
                    scale = 0.0
                    break
                scale *= c.discount
            else:
                ret += scale * boot(int(arr["obs"][min(t + c.n_step, S - 1), b]))
            tds.append(rescale(ret) - q_on[int(arr["obs"][t, b])][int(arr["action"][t, b])])
        assert len(tds) == T
        losses.append(weights[b] * 0.5 * sum(d * d for d in tds))
        prios.append(c.priority_eta * max(map(abs, tds)) + (1 - c.priority_eta) * sum(map(abs, tds)) / T)
    return sum(losses) / len(losses), prios


@settings(max_examples=60)
@given(S=st.integers(2, 8), B=st.integers(1, 3), n=st.integers(1, 4), burn_in=st.integers(0, 2),
       discount=st.sampled_from([0.0, 0.5, 0.97, 1.0]), rescale=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_loss_and_priorities_match_brute_force(S, B, n, burn_in, discount, rescale, seed):
    if S < burn_in + 2:
        burn_in = S - 2
    rng = np.random.default_rng(seed)
    N_STATES, ACTIONS = 6, 3
    q_on = rng.normal(size=(N_STATES, ACTIONS)) * 3
    q_tg = rng.normal(size=(N_STATES, ACTIONS)) * 3
    ends = rng.random((S, B))
    terminated, truncated = ends < 0.2, (ends >= 0.2) & (ends < 0.35)
    terminated[0] = truncated[0] = False
    arrays = {"obs": rng.integers(0, N_STATES, (S, B)), "first": terminated | truncated,
              "reward": rng.normal(size=(S, B)).astype(np.float32), "terminated": terminated, "truncated": truncated,
              "action": rng.integers(0, ACTIONS, (S, B)), "prev_action": np.zeros((S, B), np.int64),
              "prev_reward": np.zeros((S, B), np.float32)}
    finals = {(int(t), int(b)): np.array(rng.integers(0, N_STATES)) for t, b in zip(*np.nonzero(truncated))}
    batch = Unroll(arrays, (), finals)
    weights = rng.uniform(0.1, 1.0, B)
    c = R2D2Config(burn_in=burn_in, n_step=n, discount=discount, value_rescaling=rescale, min_replay=1)
    loss, prio, _ = r2d2_loss(TableQ(q_on.tolist()), TableQ(q_tg.tolist()), batch, torch.tensor(weights), c)
    want_loss, want_prio = brute_force(batch, weights, c, q_on.tolist(), q_tg.tolist())
    assert loss.item() == pytest.approx(want_loss, rel=1e-4, abs=1e-4)
    np.testing.assert_allclose(prio, want_prio, rtol=1e-4, atol=1e-4)
