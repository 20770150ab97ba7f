"""Small pieces shared by the grid mixers: option checks and weight initializers."""

from __future__ import annotations

import torch
from torch import nn

from tokenmix.mixer import GridMixer

CONV_IMPLS = ("reference", "direct", "fft")  # the algorithms of tokenmix.ops.conv, for mixers built on it


def odd_kernel(mixer: GridMixer, option: str, value: object) -> int:
    """Check a kernel-size option: a positive odd integer (so 'same' padding is symmetric)."""
    value = mixer._positive_int(option, value)
    if value % 2 == 0:
        raise mixer._fail(f"{option} must be odd, got {value}")
    return value


def depthwise_weight(dim: int, kernel_size: int | tuple[int, ...], spatial_dims: int = 2) -> nn.Parameter:
    sizes = (kernel_size,) * spatial_dims if isinstance(kernel_size, int) else tuple(kernel_size)
    weight = nn.Parameter(torch.empty(dim, 1, *sizes))
    nn.init.trunc_normal_(weight, std=0.02)
    return weight


def positive_pair(mixer: GridMixer, option: str, value: int | tuple[int, int]) -> tuple[int, int]:
    """Check a 2D size option (e.g. a resolution): one positive integer for both axes, or two."""
    values = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(values, (tuple, list)) or len(values) != 2:
        raise mixer._fail(f"{option} must be one positive integer or two, got {value!r}")
    return tuple(mixer._positive_int(option, v) for v in values)
