"""Input checks shared by the ops: errors name the argument and its shape."""

from __future__ import annotations

import torch


def float_tensor(name: str, x: object) -> torch.Tensor:
    """``x`` if it is a floating-point tensor, else a TypeError naming ``name``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype} (shape {tuple(x.shape)})")
    return x


def check_shape(name: str, x: torch.Tensor, expected: torch.Size | tuple[int, ...], layout: str) -> None:
    if x.shape != torch.Size(expected):
        raise ValueError(f"{name} must have shape {layout} = {tuple(expected)}, got {tuple(x.shape)}")


def check_same_shape(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if x.shape != ref.shape:
        raise ValueError(
            f"{name} must have the same [T, *B] shape as {ref_name}, got "
            f"{name}.shape = {tuple(x.shape)} and {ref_name}.shape = {tuple(ref.shape)}"
        )
