"""Tests for seedrl.models.ActorCritic: unroll == repeated step, resets, spaces, gradients, seeds."""

from __future__ import annotations

import pytest
import torch
from gymnasium import spaces
from torch import nn

from seedrl.models import ActorCritic, ImpalaResNet, MLPTorso, NatureCNN, count_parameters

A = 5


def make_inputs(obs_shape, T, B, seed=0, dtype=torch.float32, first_rate=0.25):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        obs = torch.randint(0, 256, (T, B, *obs_shape), generator=g, dtype=torch.uint8)
    else:
        obs = torch.randn(T, B, *obs_shape, generator=g)
    first = torch.rand(T, B, generator=g) < first_rate
    first[0, 0] = True  # a reset on the first step
    first[T // 2, :] = True  # and in the middle, for every row
    first[T // 2 + 1, 1] = True  # two resets in a row
    prev_action = torch.randint(0, A, (T, B), generator=g)
    prev_reward = torch.randn(T, B, generator=g) * 3.0  # some outside the clip range
    return obs, first, prev_action, prev_reward


def random_state(model, B, seed=1):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(s.shape, generator=g) for s in model.initial_state(B))


def step_loop(model, obs, state, first, prev_action, prev_reward):
    logits, values = [], []
    for t in range(obs.shape[0]):
        lg, v, state = model.step(obs[t], state, first[t], prev_action[t], prev_reward[t])
        logits.append(lg)
        values.append(v)
    return torch.stack(logits), torch.stack(values), state


MLP_CASES = [(lstm, par) for lstm in (None, 16) for par in (False, True)]


@pytest.mark.parametrize("lstm_size, use_par", MLP_CASES)
def test_unroll_equals_repeated_step_mlp(lstm_size, use_par):
    torch.manual_seed(0)
    model = ActorCritic(MLPTorso(6, (32, 32)), A, lstm_size, use_par)
    T, B = 9, 4
    obs, first, pa, pr = make_inputs((6,), T, B)
    state0 = random_state(model, B)
    with torch.no_grad():
        ref_logits, ref_values, ref_state = step_loop(model, obs, state0, first, pa, pr)
        logits, values, state = model.unroll(obs, state0, first, pa, pr)
    assert logits.shape == (T, B, A) and values.shape == (T, B)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(values, ref_values, rtol=0, atol=1e-5)
    assert len(state) == len(ref_state) == (2 if lstm_size else 0)
    for s, r in zip(state, ref_state):
        torch.testing.assert_close(s, r, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "torso",
    [lambda: NatureCNN((4, 36, 36)), lambda: ImpalaResNet((3, 16, 16), channels=(8, 8), output_dim=32)],
    ids=["nature", "impala"],
)
def test_unroll_equals_repeated_step_images(torso):
    torch.manual_seed(0)
    model = ActorCritic(torso(), A, lstm_size=24, use_prev_action_reward=True)
    T, B = 6, 3
    obs, first, pa, pr = make_inputs(model.torso.obs_shape, T, B, dtype=torch.uint8)
    state0 = random_state(model, B)
    with torch.no_grad():
        ref = step_loop(model, obs, state0, first, pa, pr)
        out = model.unroll(obs, state0, first, pa, pr)
    for got, want in zip(out[:2] + out[2], ref[:2] + ref[2]):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_unroll_chunks_compose():
    """Unrolling T steps equals unrolling two halves, passing the state between them."""
    torch.manual_seed(0)
    model = ActorCritic(MLPTorso(6), A, 16, True)
    obs, first, pa, pr = make_inputs((6,), 10, 3)
    s0 = random_state(model, 3)
    with torch.no_grad():
        full = model.unroll(obs, s0, first, pa, pr)
        a = model.unroll(obs[:4], s0, first[:4], pa[:4], pr[:4])
        b = model.unroll(obs[4:], a[2], first[4:], pa[4:], pr[4:])
    torch.testing.assert_close(torch.cat([a[0], b[0]]), full[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(b[2][0], full[2][0], rtol=0, atol=1e-5)


def test_manual_lstm_matches_torch_lstm_cell():
    torch.manual_seed(0)
    model = ActorCritic(MLPTorso(6), A, 16)
    x, h, c = torch.randn(4, 64), torch.randn(4, 16), torch.randn(4, 16)
    xproj = nn.functional.linear(x, model.core.weight_ih, model.core.bias_ih)
    got = model._lstm(xproj, h, c)
    want = model.core(x, (h, c))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


# ----------------------------------------------------------------------------- state and resets


def test_initial_state():
    ff = ActorCritic(MLPTorso(3), A)
    assert ff.initial_state(7) == () and not ff.is_recurrent
    rec = ActorCritic(MLPTorso(3), A, lstm_size=12)
    h, c = rec.initial_state(7)
    assert rec.is_recurrent and h.shape == c.shape == (7, 12)
    assert not h.any() and not c.any() and h.data_ptr() != c.data_ptr()


def test_first_resets_state_before_the_step():
    torch.manual_seed(0)
    model = ActorCritic(MLPTorso(6), A, 16, use_prev_action_reward=True)
    B = 4
    obs = torch.randn(B, 6)
    state = random_state(model, B)
    first = torch.tensor([True, False, True, False])
    pa, pr = torch.tensor([1, 2, 3, 4]), torch.tensor([0.5, -0.5, 1.0, 0.0])
    with torch.no_grad():
        logits, value, (h, c) = model.step(obs, state, first, pa, pr)
        # rows 0 and 2 as if from the zero state, with no previous action/reward
        fresh = model.step(obs, model.initial_state(B), torch.ones(B, dtype=torch.bool), pa, pr)
        # rows 1 and 3 as if first were all False
        kept = model.step(obs, state, torch.zeros(B, dtype=torch.bool), pa, pr)
    for rows, ref in (([0, 2], fresh), ([1, 3], kept)):
        torch.testing.assert_close(logits[rows], ref[0][rows])
        torch.testing.assert_close(value[rows], ref[1][rows])
        torch.testing.assert_close(h[rows], ref[2][0][rows])
        torch.testing.assert_close(c[rows], ref[2][1][rows])
    # a reset row does not depend on the stale state, even a non-finite one
    bad = (state[0].clone().fill_(float("nan")), state[1].clone().fill_(float("inf")))
    with torch.no_grad():
        out = model.step(obs, bad, torch.ones(B, dtype=torch.bool), pa, pr)
    torch.testing.assert_close(out[0], fresh[0])


def test_prev_action_reward_inputs():
    torch.manual_seed(0)
    model = ActorCritic(MLPTorso(6), A, 16, use_prev_action_reward=True)
    obs, state = torch.randn(2, 6), model.initial_state(2)
    no_first = torch.zeros(2, dtype=torch.bool)
    with torch.no_grad():
        base = model.step(obs, state, no_first, torch.tensor([0, 0]), torch.tensor([1.0, -1.0]))[0]
        clipped = model.step(obs, state, no_first, torch.tensor([0, 0]), torch.tensor([7.0, -3.0]))[0]
        other_action = model.step(obs, state, no_first, torch.tensor([3, 0]), torch.tensor([1.0, -1.0]))[0]
        # at the start of an episode the previous action and reward are ignored
        a = model.step(obs, state, ~no_first, torch.tensor([0, 1]), torch.tensor([1.0, 5.0]))[0]
        b = model.step(obs, state, ~no_first, torch.tensor([4, 2]), torch.tensor([-2.0, 0.0]))[0]
    torch.testing.assert_close(base, clipped)  # rewards clipped to [-1, 1]
    assert not torch.allclose(base[0], other_action[0])
    torch.testing.assert_close(base[1], other_action[1])
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="needs prev_action"):
        model.step(obs, state, no_first)
    unclipped = ActorCritic(MLPTorso(6), A, 16, use_prev_action_reward=True, reward_clip=None)
    with torch.no_grad():
        r1 = unclipped.step(obs, state, no_first, torch.tensor([0, 0]), torch.tensor([1.0, 1.0]))[0]
        r7 = unclipped.step(obs, state, no_first, torch.tensor([0, 0]), torch.tensor([7.0, 1.0]))[0]
    assert not torch.allclose(r1[0], r7[0])


def test_shape_errors():
    model = ActorCritic(MLPTorso(6), A, 16)
    with pytest.raises(ValueError, match="state must be"):
        model.step(torch.randn(3, 6), model.initial_state(2))
    with pytest.raises(ValueError, match="first must have shape"):
        model.unroll(torch.randn(4, 3, 6), model.initial_state(3), torch.zeros(3, 4, dtype=torch.bool))


def test_forward_is_unroll_and_first_optional():
    torch.manual_seed(0)
    model = ActorCritic(MLPTorso(6), A, 8)
    obs = torch.randn(5, 2, 6)
    s0 = model.initial_state(2)
    with torch.no_grad():
        a = model(obs, s0)
        b = model.unroll(obs, s0, torch.zeros(5, 2, dtype=torch.bool))
    torch.testing.assert_close(a[0], b[0])


def test_feed_forward_output_does_not_depend_on_history():
    model = ActorCritic(MLPTorso(6), A)
    obs = torch.randn(4, 2, 6)
    with torch.no_grad():
        logits, values, state = model.unroll(obs, ())
        single = model.step(obs[2], ())
    assert state == () and single[2] == ()
    torch.testing.assert_close(logits[2], single[0])


# ----------------------------------------------------------------------------- from_spaces


def test_from_spaces_auto_and_explicit():
    vec, image, act = spaces.Box(-1, 1, (8,)), spaces.Box(0, 255, (4, 84, 84), "uint8"), spaces.Discrete(6)
    m = ActorCritic.from_spaces(vec, act)
    assert isinstance(m.torso, MLPTorso) and m.torso.in_dim == 8 and m.num_actions == 6
    m = ActorCritic.from_spaces(image, act)
    assert isinstance(m.torso, NatureCNN) and not m.is_recurrent
    # DQN torso + heads: 1,684,128 + (512*6 + 6) + (512 + 1)
    assert count_parameters(m) == 1_684_128 + 3_078 + 513 == 1_687_719
    m = ActorCritic.from_spaces(image, act, torso="impala", lstm_size=256, use_prev_action_reward=True)
    assert isinstance(m.torso, ImpalaResNet)
    lstm = 4 * 256 * (256 + 6 + 1) + 4 * 256 * 256 + 2 * 4 * 256
    assert count_parameters(m) == 1_089_232 + lstm + 256 * 6 + 6 + 256 + 1
    m = ActorCritic.from_spaces(spaces.Box(0, 1, (3, 4)), act, torso="mlp", hidden=(10,), activation="relu")
    assert m.torso.in_dim == 12 and m.torso.output_dim == 10
    assert m.step(torch.rand(2, 3, 4), ())[0].shape == (2, 6)


def test_from_spaces_errors():
    act = spaces.Discrete(3)
    with pytest.raises(ValueError, match="cannot choose a torso"):
        ActorCritic.from_spaces(spaces.Box(0, 1, (3, 84, 84)), act)  # float image: name the torso
    with pytest.raises(ValueError, match="cannot choose a torso"):
        ActorCritic.from_spaces(spaces.Box(0, 1, (3, 4)), act)
    with pytest.raises(ValueError, match="torso must be"):
        ActorCritic.from_spaces(spaces.Box(0, 1, (3,)), act, torso="transformer")
    with pytest.raises(TypeError, match="Discrete"):
        ActorCritic.from_spaces(spaces.Box(0, 1, (3,)), spaces.Box(0, 1, (2,)))
    with pytest.raises(ValueError, match="start must be 0"):
        ActorCritic.from_spaces(spaces.Box(0, 1, (3,)), spaces.Discrete(3, start=1))
    with pytest.raises(TypeError, match="Box"):
        ActorCritic.from_spaces(spaces.Discrete(4), act)


# ----------------------------------------------------------------------------- training properties


@pytest.mark.parametrize("torso", ["nature", "impala"])
def test_gradients_reach_every_parameter(torso):
    torch.manual_seed(0)
    shape = (4, 36, 36) if torso == "nature" else (3, 12, 12)
    model = ActorCritic.from_spaces(
        spaces.Box(0, 255, shape, "uint8"), spaces.Discrete(A), torso=torso, lstm_size=16, use_prev_action_reward=True
    )
    obs, first, pa, pr = make_inputs(shape, 4, 3, dtype=torch.uint8)
    logits, values, state = model.unroll(obs, random_state(model, 3), first, pa, pr)
    loss = (logits * torch.randn_like(logits)).sum() + values.square().sum() + state[0].sum()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_deterministic_under_seed():
    def build():
        torch.manual_seed(123)
        return ActorCritic.from_spaces(spaces.Box(-1, 1, (6,)), spaces.Discrete(A), lstm_size=8)

    m1, m2 = build(), build()
    for (k1, v1), (k2, v2) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    obs = torch.randn(3, 2, 6)
    with torch.no_grad():
        o1, o2 = m1.unroll(obs, m1.initial_state(2)), m2.unroll(obs, m2.initial_state(2))
    assert torch.equal(o1[0], o2[0]) and torch.equal(o1[1], o2[1])
    torch.manual_seed(124)
    m3 = ActorCritic.from_spaces(spaces.Box(-1, 1, (6,)), spaces.Discrete(A), lstm_size=8)
    assert not torch.equal(m3.policy.weight, m1.policy.weight)


def test_initial_policy_is_near_uniform():
    torch.manual_seed(0)
    model = ActorCritic.from_spaces(spaces.Box(0, 255, (4, 84, 84), "uint8"), spaces.Discrete(6))
    obs = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8)
    with torch.no_grad():
        logits = model.step(obs, ())[0]
    assert logits.abs().max() < 0.1


def test_float64_model():
    model = ActorCritic(NatureCNN((2, 36, 36)), A, 8, True).double()
    obs, first, pa, pr = make_inputs((2, 36, 36), 3, 2, dtype=torch.uint8)
    logits, values, (h, c) = model.unroll(obs, model.initial_state(2), first, pa, pr)
    assert logits.dtype == values.dtype == h.dtype == torch.float64


@pytest.mark.parametrize("torso", ["nature", "impala"])
def test_channels_last_model_gives_the_same_outputs(torso):
    torch.manual_seed(0)
    shape = (4, 36, 36) if torso == "nature" else (3, 12, 12)
    obs_space, act = spaces.Box(0, 255, shape, "uint8"), spaces.Discrete(A)
    model = ActorCritic.from_spaces(obs_space, act, torso=torso, lstm_size=16, use_prev_action_reward=True)
    cl = ActorCritic.from_spaces(obs_space, act, torso=torso, lstm_size=16, use_prev_action_reward=True)
    cl.load_state_dict(model.state_dict())
    cl = cl.to(memory_format=torch.channels_last)
    seen = []
    first_conv = next(m for m in cl.torso.modules() if isinstance(m, nn.Conv2d))
    first_conv.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].is_contiguous(memory_format=torch.channels_last)))
    obs, first, pa, pr = make_inputs(shape, 4, 3, dtype=torch.uint8)
    s0 = random_state(model, 3)
    with torch.no_grad():
        ref, got = model.unroll(obs, s0, first, pa, pr), cl.unroll(obs, s0, first, pa, pr)
        step_ref, step_got = model.step(obs[0], s0, first[0], pa[0], pr[0]), cl.step(obs[0], s0, first[0], pa[0], pr[0])
    assert seen == [True, True]  # the uint8 input was made channels-last to match the weights
    for a, b in zip(ref[:2] + step_ref[:2], got[:2] + step_got[:2]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("lstm_size", [None, 8])
def test_empty_batch(lstm_size):
    model = ActorCritic(MLPTorso(6), A, lstm_size, use_prev_action_reward=True)
    empty = torch.zeros(0, dtype=torch.long)
    with torch.no_grad():
        logits, value, state = model.step(torch.zeros(0, 6), model.initial_state(0), empty.bool(), empty, empty.float())
    assert logits.shape == (0, A) and value.shape == (0,)
    assert all(s.shape == (0, lstm_size) for s in state)
