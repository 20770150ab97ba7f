"""Bases of every mixer: input validation at the boundary and the streaming API.

Sequence mixers map `(B, L, D) -> (B, L, D)`; grid mixers map `(B, D, *spatial) -> same`. A subclass implements
`_mix` (and, if causal, `_init_state`, optionally a faster `_step`); the base checks every input once, so ops never
see a wrong rank, channel count or dtype, and it gives every causal mixer `init_state`, `step` and
`forward(x, state=None, return_state=False)`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from tokenmix.errors import MixerInputError, unknown_name
from tokenmix.registry import MixerSpec

State = dict[str, Tensor]


class Mixer(nn.Module):
    """Common part of sequence and grid mixers: `dim`, `impl` and `causal` checked against the spec."""

    spec: ClassVar[MixerSpec]

    def __init__(self, dim: int, *, impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__()
        name = self.spec.name
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise MixerInputError(f"{name}: dim must be a positive integer, got {dim!r}")
        if impl != "auto" and impl not in self.spec.impls:
            raise unknown_name("impl", impl, ("auto", *self.spec.impls), owner=name)
        if causal is None:
            causal = self.spec.causal != "never"
        if causal and self.spec.causal == "never":
            raise MixerInputError(f"{name}: this mixer is non-causal by construction; causal=True is not possible")
        if not causal and self.spec.causal == "always":
            raise MixerInputError(f"{name}: this mixer is causal by construction; causal=False is not possible")
        self.dim = dim
        self.impl = impl
        self.causal = bool(causal)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, impl={self.impl!r}, causal={self.causal}"

    def _positive_int(self, option: str, value: object) -> int:
        """Check an integer option at construction, so a bad value fails here and not inside an op."""
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self._fail(f"{option} must be a positive integer, got {value!r}")
        return value

    def _fail(self, message: str) -> MixerInputError:
        return MixerInputError(f"{self.spec.name}: {message}")

    def _check_dtype(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise self._fail(f"expected a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise self._fail(f"expected a floating-point tensor, got dtype {x.dtype}")


class SequenceMixer(Mixer):
    """`forward(x)` with `x: (B, L, D)`; causal mixers also stream with `init_state` / `step`."""

    max_length: int | None = None  # a mixer with a fixed or maximal length (e.g. a token MLP) sets it

    # --- what a subclass implements -------------------------------------------------------------------------
    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        """Mix a checked `(B, L, D)` input. With `state` (a dict from `init_state` or an earlier call) continue
        from it and return the new state; with `state=None` return `(y, None)`."""
        raise NotImplementedError

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        raise NotImplementedError(f"{self.spec.name} does not implement streaming")

    def _step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One token `(B, D)`. The default runs `_mix` on a length-1 sequence; mixers override it when a
        recurrent form is cheaper."""
        y, new_state = self._mix(x_t[:, None], state)
        return y[:, 0], new_state

    # --- the public contract -----------------------------------------------------------------------------
    def forward(self, x: Tensor, state: State | None = None, return_state: bool = False):
        self._check_sequence(x)
        if state is None and not return_state:
            return self._mix(x, None)[0]
        self._require_streaming("forward with a state")
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        else:
            self._check_state(state, x.shape[0])
        y, new_state = self._mix(x, state)
        return (y, _owning(new_state)) if return_state else y

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> State:
        """The state before the first token: a dict of tensors whose first dimension is the batch."""
        self._require_streaming("init_state")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise self._fail(f"batch_size must be a positive integer, got {batch_size!r}")
        reference = next(self.parameters(), None)
        if device is None:
            device = reference.device if reference is not None else torch.device("cpu")
        if dtype is None:
            dtype = reference.dtype if reference is not None else torch.get_default_dtype()
        return self._init_state(batch_size, torch.device(device), dtype)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """Mix one token `x_t: (B, D)` given the state; returns `(y_t, new_state)`."""
        self._require_streaming("step")
        self._check_dtype(x_t)
        if x_t.ndim != 2 or x_t.shape[-1] != self.dim:
            raise self._fail(f"step expects one token of shape (batch, {self.dim}), got {tuple(x_t.shape)}")
        self._check_state(state, x_t.shape[0])
        return self._step(x_t, state)

    # --- checks ------------------------------------------------------------------------------------------
    def _check_sequence(self, x: Tensor) -> None:
        self._check_dtype(x)
        if x.ndim != 3:
            raise self._fail(f"expected input of shape (batch, length, {self.dim}), got {tuple(x.shape)}")
        if x.shape[-1] != self.dim:
            raise self._fail(f"expected {self.dim} channels in the last dimension, got shape {tuple(x.shape)}")
        if x.shape[1] == 0:
            raise self._fail("expected a sequence of length at least 1, got length 0")
        if self.max_length is not None and x.shape[1] > self.max_length:
            raise self._fail(f"length {x.shape[1]} exceeds this mixer's maximum length {self.max_length}")

    def _require_streaming(self, what: str) -> None:
        if not self.causal:
            raise self._fail(f"{what} needs a causal mixer; this one was built with causal=False"
                             if self.spec.causal != "never" else f"{what} is not possible: the mixer is non-causal")

    def _check_state(self, state: State, batch_size: int) -> None:
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise self._fail(f"state must be a dict of tensors from init_state, got {type(state).__name__}")
        expected = self.__dict__.get("_state_keys")
        if expected is None:  # the keys do not change, so the meta-device probe runs once per mixer
            expected = frozenset(self._init_state(1, torch.device("meta"), torch.float32))
            self.__dict__["_state_keys"] = expected
        if set(state) != expected:
            raise self._fail(f"state keys {sorted(state)} do not match this mixer's {sorted(expected)}")
        for key, value in state.items():
            if value.shape[0] != batch_size:
                raise self._fail(f"state[{key!r}] has batch size {value.shape[0]}, the input has {batch_size}")


class GridMixer(Mixer):
    """`forward(x)` with `x: (B, D, *spatial)`, channels first. `spec.spatial_dims` lists the ranks the class
    supports; an instance serves one of them (`spatial_dims`, default the first that is 2, else the first)."""

    def __init__(self, dim: int, *, impl: str = "auto", causal: bool | None = None,
                 spatial_dims: int | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        supported = self.spec.spatial_dims
        if spatial_dims is None:
            spatial_dims = 2 if 2 in supported else supported[0]
        if spatial_dims not in supported:
            raise self._fail(f"spatial_dims must be one of {supported}, got {spatial_dims!r}")
        self.spatial_dims = spatial_dims

    def _mix(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        self._check_grid(x)
        return self._mix(x)

    def _check_grid(self, x: Tensor) -> None:
        self._check_dtype(x)
        if x.ndim - 2 != self.spatial_dims:
            expected = f"(batch, {self.dim}{', size' * self.spatial_dims})"
            raise self._fail(f"expected input of shape {expected}, got {tuple(x.shape)}")
        if x.shape[1] != self.dim:
            raise self._fail(f"expected {self.dim} channels in dimension 1 (channels first), got shape {tuple(x.shape)}")
        if any(size == 0 for size in x.shape[2:]):
            raise self._fail(f"expected non-empty spatial dimensions, got shape {tuple(x.shape)}")


def _owning(state: State) -> State:
    """The state with every tensor in storage of its own size. A mixer's cache is often a slice of its input or
    of a buffer the size of the prompt (a convolution's last taps, a window of keys); kept as a view it keeps that
    whole buffer alive, O(L) memory behind an O(1) state. Copying the slice costs the state's own size, once per
    `forward` (not per `step`, whose buffers are the state's size already)."""
    return {key: value if value.untyped_storage().nbytes() == value.numel() * value.element_size()
            else value.clone(memory_format=torch.contiguous_format) for key, value in state.items()}
