"""Tests for seedrl.models.torsos: shapes, parameter counts by hand, layer structure."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from seedrl.models import ImpalaResNet, MLPTorso, NatureCNN, SmallCNN, conv_output_size, count_parameters


def conv_params(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + c_out


def linear_params(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


# ----------------------------------------------------------------------------- MLP


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_mlp_shapes_and_params(activation):
    torso = MLPTorso(8, (64, 32), activation)
    assert torso.output_dim == 32
    out = torso(torch.randn(5, 8, dtype=torch.float64))  # cast to the parameter dtype
    assert out.shape == (5, 32) and out.dtype == torch.float32
    assert count_parameters(torso) == linear_params(8, 64) + linear_params(64, 32)
    if activation == "tanh":
        assert out.abs().max() <= 1.0
    else:
        assert out.min() >= 0.0


def test_mlp_flattens_and_identity():
    torso = MLPTorso(6, (16,))
    assert torso(torch.randn(3, 2, 3)).shape == (3, 16)
    ident = MLPTorso(6, ())
    x = torch.randn(4, 6)
    assert ident.output_dim == 6 and torch.equal(ident(x), x)


def test_mlp_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        MLPTorso(4, (8,), "gelu")
    with pytest.raises(ValueError, match="hidden"):
        MLPTorso(4, (8, 0))
    with pytest.raises(ValueError, match="features per row"):
        MLPTorso(4)(torch.randn(2, 5))


# ----------------------------------------------------------------------------- NatureCNN


def test_nature_cnn_atari_shape_and_param_count():
    torso = NatureCNN((4, 84, 84))
    # 84 -> (84-8)/4+1 = 20 -> (20-4)/2+1 = 9 -> 9-3+1 = 7
    assert [conv_output_size(84, 8, 4), conv_output_size(20, 4, 2), conv_output_size(9, 3, 1)] == [20, 9, 7]
    assert torso.flat_dim == 64 * 7 * 7 == 3136
    expected = conv_params(4, 32, 8) + conv_params(32, 64, 4) + conv_params(64, 64, 3) + linear_params(3136, 512)
    assert expected == 8_224 + 32_832 + 36_928 + 1_606_144 == 1_684_128
    assert count_parameters(torso) == expected
    obs = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    out = torso(obs)
    assert torso.output_dim == 512 and out.shape == (2, 512) and out.dtype == torch.float32
    assert out.min() >= 0.0  # ReLU output


def test_nature_cnn_matches_functional_reference():
    torch.manual_seed(0)
    torso = NatureCNN((2, 40, 44)).double()
    obs = torch.randint(0, 256, (3, 2, 40, 44), dtype=torch.uint8)
    x = obs.double() / 255.0
    c = torso.conv
    x = F.relu(F.conv2d(x, c[0].weight, c[0].bias, stride=4))
    x = F.relu(F.conv2d(x, c[2].weight, c[2].bias, stride=2))
    x = F.relu(F.conv2d(x, c[4].weight, c[4].bias, stride=1))
    ref = F.relu(F.linear(x.flatten(1), torso.fc.weight, torso.fc.bias))
    torch.testing.assert_close(torso(obs), ref, rtol=1e-12, atol=1e-12)


def test_small_cnn_shape_params_and_functional_reference():
    torso = SmallCNN((4, 84, 84))
    # 84 -> (84-8)/4+1 = 20 -> (20-4)/2+1 = 9
    assert torso.flat_dim == 32 * 9 * 9 == 2592 and torso.output_dim == 256
    expected = conv_params(4, 16, 8) + conv_params(16, 32, 4) + linear_params(2592, 256)
    assert count_parameters(torso) == expected == 4_112 + 8_224 + 663_808
    torch.manual_seed(0)
    torso = SmallCNN((2, 30, 34)).double()
    obs = torch.randint(0, 256, (3, 2, 30, 34), dtype=torch.uint8)
    c = torso.conv
    x = F.relu(F.conv2d(obs.double() / 255.0, c[0].weight, c[0].bias, stride=4))
    x = F.relu(F.conv2d(x, c[2].weight, c[2].bias, stride=2))
    ref = F.relu(F.linear(x.flatten(1), torso.fc.weight, torso.fc.bias))
    torch.testing.assert_close(torso(obs), ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="too small"):
        SmallCNN((4, 16, 16))


def test_image_scaling_same_for_uint8_and_float_and_input_untouched():
    torso = NatureCNN((4, 36, 36))
    obs = torch.randint(0, 256, (2, 4, 36, 36), dtype=torch.uint8)
    as_float = obs.float()
    before = as_float.clone()
    torch.testing.assert_close(torso(obs), torso(as_float))
    assert torch.equal(as_float, before)


def test_image_torsos_reject_bad_shapes():
    with pytest.raises(ValueError, match="too small"):
        NatureCNN((4, 20, 20))
    with pytest.raises(ValueError, match="channels-first"):
        NatureCNN((84, 84))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        NatureCNN((4, 36, 36))(torch.zeros(4, 36, 36, dtype=torch.uint8))


# ----------------------------------------------------------------------------- ImpalaResNet


def test_impala_resnet_atari_shape_and_param_count():
    torso = ImpalaResNet((4, 84, 84))
    # same-padded 3x3/2 max-pools: 84 -> 42 -> 21 -> 11
    assert torso.flat_dim == 32 * 11 * 11 == 3872
    expected = 0
    c_in = 4
    for c in (16, 32, 32):
        expected += conv_params(c_in, c, 3) + 4 * conv_params(c, c, 3)  # section conv + 2 blocks x 2 convs
        c_in = c
    expected += linear_params(3872, 256)
    assert expected == 1_089_232
    assert count_parameters(torso) == expected
    out = torso(torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8))
    assert torso.output_dim == 256 and out.shape == (2, 256) and out.min() >= 0.0


def test_impala_resnet_matches_functional_reference():
    torch.manual_seed(0)
    torso = ImpalaResNet((3, 13, 10), channels=(4, 6), output_dim=7).double()
    obs = torch.randint(0, 256, (2, 3, 13, 10), dtype=torch.uint8)
    x = obs.double() / 255.0
    layers = list(torso.sections)
    i = 0
    for _ in range(2):
        conv = layers[i]
        x = F.max_pool2d(F.conv2d(x, conv.weight, conv.bias, padding=1), 3, stride=2, padding=1)
        for block in layers[i + 2 : i + 4]:
            y = F.conv2d(F.relu(x), block.conv0.weight, block.conv0.bias, padding=1)
            x = x + F.conv2d(F.relu(y), block.conv1.weight, block.conv1.bias, padding=1)
        i += 4
    ref = F.relu(F.linear(F.relu(x).flatten(1), torso.fc.weight, torso.fc.bias))
    assert x.shape[2:] == (4, 3)  # 13 -> 7 -> 4, 10 -> 5 -> 3
    torch.testing.assert_close(torso(obs), ref, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- initialisation


def _signal_ratios(torso) -> tuple[float, float]:
    """``E[f^2] / E[x^2]`` on uniform frames, and ``|f(x) - f(x')| / |x - x'|`` for a 2x2 patch changed in the
    newest frame (a Pong ball moving): how much of the input's energy and of a small change reaches the features."""
    torch.manual_seed(1)
    obs = torch.randint(0, 256, (16, 4, 84, 84), dtype=torch.uint8)
    moved = obs.clone()
    moved[:, -1, 40:42, 40:42] = 255 - moved[:, -1, 40:42, 40:42]
    with torch.no_grad():
        f, g = torso(obs), torso(moved)
    x = obs.float() / 255
    dx = (moved.float() - obs.float()).div(255).flatten(1).norm(dim=1)
    return float(f.pow(2).mean() / x.pow(2).mean()), float((f - g).norm(dim=1).mean() / dx.mean())


@pytest.mark.parametrize("cls", [NatureCNN, SmallCNN, ImpalaResNet])
def test_image_torsos_keep_the_signal_scale_at_initialisation(cls):
    # PyTorch's default init shrank the Nature CNN's signal energy 1000-fold (ratio 0.0009, patch gain 0.006):
    # Pong's policy could not tell frames apart and stayed uniform. Orthogonal ReLU-gain layers keep it O(1).
    torch.manual_seed(0)
    energy, patch = _signal_ratios(cls((4, 84, 84)))
    assert 0.2 < energy < 20, energy
    assert patch > 0.05, patch


def test_image_torso_layers_are_orthogonal_with_relu_gain_and_zero_bias():
    torso = NatureCNN((4, 84, 84))
    for layer in (*torso.conv[::2], torso.fc):
        w = layer.weight.flatten(1)  # rows <= columns in every Nature CNN layer: W W^T = 2 I
        torch.testing.assert_close(w @ w.T, 2.0 * torch.eye(w.shape[0]), atol=1e-4, rtol=0)
        assert not layer.bias.any()
    resnet = ImpalaResNet((4, 84, 84))
    blocks = [m for m in resnet.sections if type(m).__name__ == "_ResidualBlock"]
    assert len(blocks) == 6
    for b in blocks:  # the residual branch's last conv is orthogonal with gain 0.1 * sqrt(2): near-identity blocks
        w = b.conv1.weight.flatten(1)
        torch.testing.assert_close(w @ w.T, 0.02 * torch.eye(w.shape[0]), atol=1e-5, rtol=0)
