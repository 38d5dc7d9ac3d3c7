"""Feature extractors ("torsos") for actor-critic networks.

Every torso maps a batch of observations ``[N, *obs_shape]`` to features
``[N, output_dim]`` and exposes ``output_dim``. Inputs of any dtype are cast to
the torso's parameter dtype inside the model, so actors can ship compact
observations (``uint8`` frames) and the cast happens once, batched, at the
inference server or the learner.

* :class:`MLPTorso` -- fully connected layers for vector observations.
* :class:`NatureCNN` -- the DQN network of Mnih et al. (2015).
* :class:`SmallCNN` -- the smaller DQN network of Mnih et al. (2013): ~40 % of
  the learner's cost per frame of :class:`NatureCNN` on a CPU core.
* :class:`ImpalaResNet` -- the "deep" residual network of Espeholt et al. (2018).

**Initialisation of the image torsos.** A ReLU layer ``y = relu(W x)`` with
``Var(W_ij) = s / fan_in`` maps a second moment ``E[x^2]`` to about
``(s / 2) E[x^2]`` (He et al., 2015). PyTorch's default (``kaiming_uniform``,
``a = sqrt(5)``) has ``s = 1/3``: each layer divides the signal energy by
about 6, so the Nature CNN's four layers shrink it ~1000-fold (measured:
``E[f^2] / E[x^2] = 0.0009`` on uniform frames, against 0.87 with the init
below). The features then hardly vary between frames, the logits (a 0.01-gain
head on top) cannot tell states apart, and the policy gradient reaching the
torso is ~1000x weaker than the value gradient: Pong's policy stayed uniform
for thousands of updates. So the convolutions and the fully connected layer
are orthogonal with gain ``sqrt(2)`` (``s = 2``, the ReLU gain, as in the
DQN/PPO baselines) and zero bias; in :class:`ImpalaResNet` the last
convolution of every residual branch is scaled by ``RESIDUAL_BRANCH_SCALE``
(0.1), so each block starts close to the identity and the six residual sums
do not blow the scale up (with the full gain: ``E[f^2] / E[x^2] = 1600``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ImpalaResNet", "MLPTorso", "NatureCNN", "SmallCNN", "conv_output_size", "count_parameters", "init_relu_layers"]

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
#: Initial scale of the last convolution of each :class:`ImpalaResNet` residual branch (see the module docstring).
RESIDUAL_BRANCH_SCALE = 0.1


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Spatial size after a convolution or pooling layer (floor mode, as PyTorch computes it)."""
    return (size + 2 * padding - kernel) // stride + 1


def init_relu_layers(module: nn.Module) -> None:
    """Orthogonal weights with the ReLU gain ``sqrt(2)`` and zero biases for every conv and linear layer of ``module``."""
    gain = nn.init.calculate_gain("relu")
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(layer.weight, gain)
            nn.init.zeros_(layer.bias)


def _check_image_shape(name: str, shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{name} expects a channels-first image shape (C, H, W), got {shape}")
    return shape  # type: ignore[return-value]


class MLPTorso(nn.Module):
    """Fully connected layers ``in_dim -> hidden[0] -> ... -> hidden[-1]``, each followed by ``activation``.

    Inputs ``[N, *shape]`` are flattened to ``[N, in_dim]``. With ``hidden=()``
    the torso is the identity on the flattened input and ``output_dim == in_dim``.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int] = (64, 64), activation: str = "tanh") -> None:
        super().__init__()
        if in_dim < 1:
            raise ValueError(f"MLPTorso: in_dim must be >= 1, got {in_dim}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"MLPTorso: activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in hidden):
            raise ValueError(f"MLPTorso: hidden sizes must be >= 1, got {hidden}")
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), _ACTIVATIONS[activation]()]
            width = h
        self.in_dim = in_dim
        self.output_dim = width
        self.net = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        dtype = self.net[0].weight.dtype if len(self.net) else torch.get_default_dtype()
        if obs.dim() == 0 or obs.numel() != obs.shape[0] * self.in_dim:
            raise ValueError(f"MLPTorso: expected [N, ...] with {self.in_dim} features per row, got {tuple(obs.shape)}")
        return self.net(obs.reshape(obs.shape[0], self.in_dim).to(dtype))


class _ScaledImageTorso(nn.Module):
    """Shared input handling of the image torsos: cast to float and multiply by ``input_scale``.

    The input follows the layout of the first convolution's weight: after
    ``model.to(memory_format=torch.channels_last)`` the (usually ``uint8``)
    observations are made channels-last *before* the cast, where the copy is
    four times smaller than on the float tensor.
    """

    input_scale: float

    def _scale(self, obs: torch.Tensor, first_weight: torch.Tensor) -> torch.Tensor:
        if obs.dim() != 4:
            raise ValueError(f"{type(self).__name__}: expected [N, C, H, W] observations, got {tuple(obs.shape)}")
        if first_weight.is_contiguous(memory_format=torch.channels_last) and not first_weight.is_contiguous():
            obs = obs.contiguous(memory_format=torch.channels_last)
        if obs.dtype == first_weight.dtype:  # never scale the caller's tensor in place
            return obs * self.input_scale
        return obs.to(first_weight.dtype).mul_(self.input_scale)


class _ConvFCTorso(_ScaledImageTorso):
    """Valid (unpadded) ReLU convolutions ``LAYERS`` = ``((channels, kernel, stride), ...)``, then a ReLU
    fully connected layer of ``FC`` units: the shape of both DQN torsos. ``MIN_SIDE`` is the smallest
    image side the convolutions accept (for the error message)."""

    LAYERS: tuple[tuple[int, int, int], ...]
    FC: int
    MIN_SIDE: int

    def __init__(self, obs_shape: Sequence[int] = (4, 84, 84), input_scale: float = 1.0 / 255.0) -> None:
        super().__init__()
        name = type(self).__name__
        c, h, w = _check_image_shape(name, obs_shape)
        layers: list[nn.Module] = []
        for out, k, s in self.LAYERS:
            layers += [nn.Conv2d(c, out, k, stride=s), nn.ReLU()]
            c, h, w = out, conv_output_size(h, k, s), conv_output_size(w, k, s)
        if h < 1 or w < 1:
            raise ValueError(f"{name}: image {tuple(obs_shape)} is too small (needs H, W >= {self.MIN_SIDE})")
        self.obs_shape = tuple(int(s) for s in obs_shape)
        self.input_scale = float(input_scale)
        self.conv = nn.Sequential(*layers)
        self.flat_dim = c * h * w
        self.fc = nn.Linear(self.flat_dim, self.FC)
        self.output_dim = self.FC
        init_relu_layers(self)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.conv(self._scale(obs, self.conv[0].weight))
        return F.relu(self.fc(x.flatten(1)))


class NatureCNN(_ConvFCTorso):
    """The DQN torso (Mnih et al., 2015): three convolutions and a 512-unit layer, all ReLU.

    ``conv 32 8x8 /4 -> conv 64 4x4 /2 -> conv 64 3x3 /1 -> fc 512``. On
    ``[4, 84, 84]`` frames the last feature map is ``64 x 7 x 7 = 3136``.
    Observations (usually ``uint8``) are multiplied by ``input_scale``
    (default ``1/255``) inside the model, whatever their dtype.
    """

    LAYERS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
    FC = 512
    MIN_SIDE = 36


class SmallCNN(_ConvFCTorso):
    """The first DQN torso (Mnih et al., 2013): two convolutions and a 256-unit layer, all ReLU.

    ``conv 16 8x8 /4 -> conv 32 4x4 /2 -> fc 256``. On ``[4, 84, 84]`` frames
    the last feature map is ``32 x 9 x 9 = 2592``: 5.9 MFLOP per frame forward
    against the Nature CNN's 18.7. The learner's step (unroll + backward of the
    actor-critic over 20 x 32 frames, one thread, channels-last) takes 212 ms
    against 538 ms (``benchmarks/model_forward.py``), so a learner that passes
    over each batch several times (APPO) keeps up with ~2.5x the frames.
    """

    LAYERS = ((16, 8, 4), (32, 4, 2))
    FC = 256
    MIN_SIDE = 20


class _ResidualBlock(nn.Module):
    """``x + conv(relu(conv(relu(x))))`` with 3x3 same-padded convolutions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(F.relu(self.conv0(F.relu(x))))


class ImpalaResNet(_ScaledImageTorso):
    """IMPALA's "deep" torso (Espeholt et al., 2018).

    Per section (channels ``(16, 32, 32)``): conv 3x3, max-pool 3x3 stride 2
    (same padding, so 84 -> 42 -> 21 -> 11), two residual blocks; then ReLU,
    flatten, fc ``output_dim`` (256) and ReLU. Observations are multiplied by
    ``input_scale`` (default ``1/255``) inside the model.
    """

    def __init__(
        self,
        obs_shape: Sequence[int] = (4, 84, 84),
        channels: Sequence[int] = (16, 32, 32),
        num_blocks: int = 2,
        output_dim: int = 256,
        input_scale: float = 1.0 / 255.0,
    ) -> None:
        super().__init__()
        c, h, w = _check_image_shape("ImpalaResNet", obs_shape)
        sections: list[nn.Module] = []
        for out in channels:
            sections += [nn.Conv2d(c, out, 3, padding=1), nn.MaxPool2d(3, stride=2, padding=1)]
            sections += [_ResidualBlock(out) for _ in range(num_blocks)]
            c, h, w = out, conv_output_size(h, 3, 2, 1), conv_output_size(w, 3, 2, 1)
        self.obs_shape = tuple(int(s) for s in obs_shape)
        self.input_scale = float(input_scale)
        self.sections = nn.Sequential(*sections)
        self.flat_dim = c * h * w
        self.fc = nn.Linear(self.flat_dim, output_dim)
        self.output_dim = int(output_dim)
        init_relu_layers(self)
        with torch.no_grad():
            for block in self.sections:
                if isinstance(block, _ResidualBlock):
                    block.conv1.weight.mul_(RESIDUAL_BRANCH_SCALE)  # near-identity blocks at initialisation

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.sections(self._scale(obs, self.sections[0].weight))
        return F.relu(self.fc(F.relu(x).flatten(1)))


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters of ``module``."""
    return sum(math.prod(p.shape) for p in module.parameters())
