"""A small language-model backbone around any sequence mixer.

tokens → embedding (+ learned positions) → depth × [x + mixer(RMSNorm(x)), x + MLP(RMSNorm(x))]
       → RMSNorm → linear head.
Inputs are token ids (an embedding table) or, with `input_channels`, real values `(B, L, C)` (a linear
embedding). With `pooling="mean"` the head sees the mean over positions and gives one prediction per example.
Every block builds its mixer with `tokenmix.create(mixer, dim, **mixer_options)`, so the backbone is the same for
every mixer and a comparison changes only the mixer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

import tokenmix
from tokenmix.errors import MixerInputError


class MLP(nn.Module):
    """The channel mixer of a block: Linear → GELU → Linear."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.up = nn.Linear(dim, hidden_dim)
        self.activation = nn.GELU()
        self.down = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.activation(self.up(x)))


class Block(nn.Module):
    """Pre-norm residual block: a token mixer, then (if `mlp_ratio > 0`) an MLP."""

    def __init__(self, dim: int, mixer: str, mixer_options: dict[str, Any], mlp_ratio: float) -> None:
        super().__init__()
        self.mixer_norm = nn.RMSNorm(dim)
        self.mixer = tokenmix.create(mixer, dim, **mixer_options)
        hidden_dim = int(round(mlp_ratio * dim))
        self.mlp_norm = nn.RMSNorm(dim) if hidden_dim else None
        self.mlp = MLP(dim, hidden_dim) if hidden_dim else None

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mixer(self.mixer_norm(x))
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x


class SequenceModel(nn.Module):
    """Token ids `(B, L)` (or values `(B, L, input_channels)`) → logits `(B, L, num_classes)`, or `(B, num_classes)`
    with `pooling="mean"`.

    `max_length` adds learned absolute position embeddings (a mixer without its own notion of order, like
    softmax attention without rotary embeddings, needs them to tell a key from the value after it);
    `max_length=None` leaves order to the mixers.
    """

    def __init__(self, vocab_size: int, dim: int, depth: int, mixer: str, mixer_options: dict[str, Any] | None = None,
                 num_classes: int | None = None, mlp_ratio: float = 4.0, max_length: int | None = None, *,
                 input_channels: int | None = None, pooling: str | None = None) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("dim", dim), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise MixerInputError(f"SequenceModel: {name} must be a positive integer, got {value!r}")
        if input_channels is not None and (isinstance(input_channels, bool) or not isinstance(input_channels, int)
                                           or input_channels <= 0):
            raise MixerInputError(f"SequenceModel: input_channels must be a positive integer, got {input_channels!r}")
        if pooling not in (None, "mean"):
            raise MixerInputError(f"SequenceModel: pooling must be None or 'mean', got {pooling!r}")
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.input_channels = input_channels
        self.pooling = pooling
        self.embedding = nn.Linear(input_channels, dim) if input_channels else nn.Embedding(vocab_size, dim)
        self.position_embedding = nn.Embedding(max_length, dim) if max_length else None
        self.blocks = nn.ModuleList(Block(dim, mixer, dict(mixer_options or {}), mlp_ratio) for _ in range(depth))
        self.norm = nn.RMSNorm(dim)
        self.head = nn.Linear(dim, num_classes or vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        if self.input_channels:
            self._check_values(tokens)
        else:
            self._check_tokens(tokens)
        x = self.embedding(tokens)
        if self.position_embedding is not None:
            x = x + self.position_embedding(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        if self.pooling == "mean":
            x = x.mean(1)
        return self.head(x)

    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    def _check_tokens(self, tokens: Tensor) -> None:
        if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.int32, torch.int64):
            raise MixerInputError(f"SequenceModel: expected integer token ids, got "
                                  f"{getattr(tokens, 'dtype', type(tokens).__name__)}")
        if tokens.ndim != 2:
            raise MixerInputError(
                f"SequenceModel: expected token ids of shape (batch, length), got {tuple(tokens.shape)}")
        self._check_length(tokens)

    def _check_values(self, values: Tensor) -> None:
        if not isinstance(values, Tensor) or not values.is_floating_point() or values.ndim != 3 \
                or values.shape[-1] != self.input_channels:
            shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise MixerInputError(f"SequenceModel: expected floating values of shape (batch, length, "
                                  f"{self.input_channels}), got {shape}")
        self._check_length(values)

    def _check_length(self, inputs: Tensor) -> None:
        if self.max_length is not None and inputs.shape[1] > self.max_length:
            raise MixerInputError(f"SequenceModel: length {inputs.shape[1]} exceeds max_length {self.max_length}")
