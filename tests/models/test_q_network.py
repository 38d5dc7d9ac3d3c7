"""Tests for seedrl.models.q_network.QNetwork: dueling identity, state-free MLP core, step == unroll, torsos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from seedrl.models import MLPTorso, ModelConfig, NatureCNN
from seedrl.models.q_network import QNetwork

A = 4


def inputs(obs_shape, T, B, seed=0, image=False):
    g = torch.Generator().manual_seed(seed)
    if image:
        obs = torch.randint(0, 256, (T, B, *obs_shape), generator=g, dtype=torch.uint8)
    else:
        obs = torch.randn(T, B, *obs_shape, generator=g)
    first = torch.rand(T, B, generator=g) < 0.2
    first[T // 2, :] = True  # a reset in the middle of every row
    prev_action = torch.randint(0, A, (T, B), generator=g)
    prev_reward = torch.randn(T, B, generator=g) * 3.0
    return obs, first, prev_action, prev_reward


def random_state(net, B, seed=1):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(s.shape, generator=g) for s in net.initial_state(B))


def box(*shape, dtype=np.float32):
    return spaces.Box(0 if dtype == np.uint8 else -1, 255 if dtype == np.uint8 else 1, shape, dtype)


@pytest.mark.parametrize("recurrent", [True, False])
@pytest.mark.parametrize("use_par", [False, True])
@pytest.mark.parametrize("dueling", [True, False])
def test_unroll_equals_repeated_step(recurrent, use_par, dueling):
    torch.manual_seed(0)
    net = QNetwork(MLPTorso(6, (16,)), A, 12, dueling=dueling, recurrent=recurrent, use_prev_action_reward=use_par)
    T, B = 7, 3
    obs, first, pa, pr = inputs((6,), T, B)
    state0 = random_state(net, B)
    with torch.no_grad():
        q, final = net.unroll(obs, state0, first, pa, pr)
        q_again, every = net.unroll_states(obs, state0, first, pa, pr)
        state, steps, states = state0, [], []
        for t in range(T):
            qt, state = net.step(obs[t], state, first[t], pa[t], pr[t])
            steps.append(qt)
            states.append(state)
    assert q.shape == (T, B, A)
    torch.testing.assert_close(q, torch.stack(steps), rtol=0, atol=1e-5)
    torch.testing.assert_close(q_again, q, rtol=0, atol=0)
    assert len(every) == (2 if recurrent else 0)
    for i, per_step in enumerate(every):  # the state after every entry, as step carries it
        torch.testing.assert_close(per_step, torch.stack([s[i] for s in states]), rtol=0, atol=1e-5)
    assert len(final) == len(state) == (2 if recurrent else 0)
    for a, b in zip(final, state):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_dueling_head_is_value_plus_centred_advantage():
    torch.manual_seed(0)
    net = QNetwork(MLPTorso(5, (8,)), A, 6, dueling=True, recurrent=True)
    obs = torch.randn(4, 5)
    state = random_state(net, 4)
    first = torch.zeros(4, dtype=torch.bool)
    with torch.no_grad():
        q, _ = net.step(obs, state, first)
        h, _ = net._body_step(obs, state, first, None, None)
        v, adv = net.value(h), net.advantage(h)
    torch.testing.assert_close(q, v + adv - adv.mean(-1, keepdim=True))
    torch.testing.assert_close(q.mean(-1), v.squeeze(-1))  # the mean over actions is V
    assert torch.equal(q.argmax(-1), adv.argmax(-1))


def test_plain_head_has_no_value_stream():
    net = QNetwork(MLPTorso(5, (8,)), A, 6, dueling=False, recurrent=True)
    names = {n.split(".")[0] for n, _ in net.named_parameters()}
    assert names == {"torso", "core", "q"}


def test_feedforward_has_no_state_and_first_is_harmless():
    torch.manual_seed(0)
    net = QNetwork(MLPTorso(5, (8,)), A, 6, dueling=True, recurrent=False)
    assert not net.is_recurrent and net.initial_state(3) == ()
    assert net.feedforward is not None and net.feedforward[0].out_features == 6  # the LSTM's width
    obs = torch.randn(6, 3, 5)
    with torch.no_grad():
        q_none, s1 = net.unroll(obs, (), torch.zeros(6, 3, dtype=torch.bool))
        q_all, s2 = net.unroll(obs, (), torch.ones(6, 3, dtype=torch.bool))
        q_rev, _ = net.unroll(obs.flip(0), (), torch.zeros(6, 3, dtype=torch.bool))
    assert s1 == s2 == ()
    torch.testing.assert_close(q_none, q_all, rtol=0, atol=0)
    torch.testing.assert_close(q_rev.flip(0), q_none, rtol=0, atol=1e-6)  # no memory: order does not matter


def test_recurrent_remembers_and_first_resets():
    torch.manual_seed(0)
    net = QNetwork(MLPTorso(5, (8,)), A, 6, dueling=True, recurrent=True)
    obs = torch.randn(3, 2, 5)
    obs2 = obs.clone()
    obs2[0] = torch.randn(2, 5)  # change only the first frame
    state0 = net.initial_state(2)
    first = torch.zeros(3, 2, dtype=torch.bool)
    with torch.no_grad():
        q1, _ = net.unroll(obs, state0, first)
        q2, _ = net.unroll(obs2, state0, first)
        first[1] = True  # reset before frame 1: frame 0 is forgotten
        q3, _ = net.unroll(obs, state0, first)
        q4, _ = net.unroll(obs2, state0, first)
    assert not torch.allclose(q1[2], q2[2])
    torch.testing.assert_close(q3[1:], q4[1:], rtol=0, atol=0)


@pytest.mark.parametrize("recurrent", [True, False])
def test_from_spaces_mlp_and_nature(recurrent):
    torch.manual_seed(0)
    mlp = QNetwork.from_spaces(ModelConfig(hidden=(16, 16)), box(4), spaces.Discrete(3), dueling=True, recurrent=recurrent)
    assert isinstance(mlp.torso, MLPTorso) and mlp.width == 16  # lstm_size null: the torso's width
    assert mlp.is_recurrent is recurrent
    cfg = ModelConfig(lstm_size=8, use_prev_action_reward=True)
    cnn = QNetwork.from_spaces(cfg, box(2, 36, 36, dtype=np.uint8), spaces.Discrete(A), dueling=False, recurrent=recurrent)
    assert isinstance(cnn.torso, NatureCNN) and cnn.width == 8
    obs, first, pa, pr = inputs((2, 36, 36), 3, 2, image=True)
    q, state = cnn.unroll(obs, cnn.initial_state(2), first, pa, pr)
    assert q.shape == (3, 2, A) and q.dtype == torch.float32
    q.sum().backward()  # gradients reach the torso
    assert cnn.torso.conv[0].weight.grad.abs().sum() > 0


def test_from_spaces_rejects_continuous_actions():
    with pytest.raises(TypeError, match="QNetwork.from_spaces: action space must be Discrete"):
        QNetwork.from_spaces(ModelConfig(), box(4), box(2), dueling=True, recurrent=True)
    with pytest.raises(ValueError, match="QNetwork: width must be >= 1, got 0"):
        QNetwork(MLPTorso(4, (8,)), 2, 0)
