"""Shared argument checks for ops (cheap, at the op boundary)."""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

from tokenmix.errors import MixerInputError, unknown_name


def check_impl(op: str, impl: str, valid: Iterable[str]) -> None:
    valid = tuple(valid)
    if impl not in valid:
        raise unknown_name("impl", impl, valid, owner=op)


def check_head_tensors(op: str, **tensors: Tensor) -> None:
    """All tensors are floating `(B, H, L, *)` with one batch size and head count."""
    first_name, first = next(iter(tensors.items()))
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise MixerInputError(f"{op}: {name} must be floating point, got {t.dtype}")
        if t.ndim != 4:
            raise MixerInputError(f"{op}: {name} must have shape (batch, heads, length, dim), got {tuple(t.shape)}")
        if t.shape[:2] != first.shape[:2]:
            raise MixerInputError(
                f"{op}: {name} has (batch, heads) {tuple(t.shape[:2])}, {first_name} has {tuple(first.shape[:2])}")


def compute_dtype(*tensors: Tensor):
    """Half-precision inputs accumulate in float32; float32 and float64 stay as they are."""
    import torch

    dtype = torch.promote_types(tensors[0].dtype, tensors[-1].dtype)
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
