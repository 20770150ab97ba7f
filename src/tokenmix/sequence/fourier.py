"""Global non-causal token mixers without attention: FNet's Fourier transform and MLP-Mixer's token MLP."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.mixer import SequenceMixer, State
from tokenmix.ops._checks import compute_dtype
from tokenmix.registry import register


@register(
    name="fnet",
    family="spectral",
    layout="sequence",
    paper="FNet: Mixing Tokens with Fourier Transforms",
    arxiv="2105.03824",
    impls=("reference", "fft"),
    causal="never",
    state="none",
    time_complexity="L log L",
    memory_complexity="L",
    summary="The real part of a 2D discrete Fourier transform over the sequence and hidden dimensions, "
            "in place of self-attention.",
)
class FNet(SequenceMixer):
    """y = Re(F_L X F_D), F_n[j, k] = exp(-2πi jk / n): a DFT along the hidden dimension, then along the sequence,
    keeping the real part — the paper's sublayer, with no parameters. Its outputs grow as √(L·D) (the transform is
    unnormalized), so x + FNet(x) is dominated by the transform; the paper's LayerNorm after that sum rescales it,
    and in tokenmix's pre-norm backbone (`x + mixer(RMSNorm(x))`) the next block's RMSNorm and the final one do:
    the backbone needs no gain.
    `reference`: Re(F_L X F_D) = C_L X C_D - S_L X S_D with explicit cosine/sine DFT matrices; `fft`: `fft2`."""

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        u = x.to(compute_dtype(x))
        if self.impl == "reference":
            (cos_l, sin_l), (cos_d, sin_d) = _dft(x.shape[1], u), _dft(x.shape[2], u)
            y = cos_l @ u @ cos_d - sin_l @ u @ sin_d
        else:
            y = torch.fft.fft2(u, dim=(1, 2)).real
        return y.to(x.dtype), None


def _dft(n: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """cos and sin of the n-point DFT angles 2π jk / n (the phase jk reduced mod n first, so it stays exact)."""
    index = torch.arange(n, device=like.device)
    angle = (2 * math.pi / n) * ((index[:, None] * index[None, :]) % n).to(like.dtype)
    return angle.cos(), angle.sin()


@register(
    name="token_mlp",
    family="mlp",
    layout="sequence",
    paper="MLP-Mixer: An all-MLP Architecture for Vision",
    arxiv="2105.01601",
    impls=("reference",),
    causal="never",
    state="none",
    time_complexity="L S d",
    memory_complexity="L",
    summary="MLP-Mixer's token-mixing MLP: one MLP across the positions, shared by all channels; fixed maximum "
            "length.",
)
class TokenMLP(SequenceMixer):
    """U_{:, c} = W_2 GELU(W_1 X_{:, c} + b_1) + b_2 for every channel c: an MLP across the N = `max_length`
    positions with hidden width S = `hidden_dim`, shared over channels (the paper's token mixing, without the
    block's LayerNorm and residual). A shorter input is taken as zero-padded to N and its first L outputs kept
    (the first L columns of W_1 and rows of W_2). Paper defaults: S = 256 (Mixer-S), GELU."""

    def __init__(self, dim: int, *, max_length: int = 512, hidden_dim: int = 256, impl: str = "auto",
                 causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.max_length = self._positive_int("max_length", max_length)
        self.hidden_dim = self._positive_int("hidden_dim", hidden_dim)
        self.fc1 = nn.Linear(max_length, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, max_length)

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        length = x.shape[1]
        hidden = F.gelu(F.linear(x.transpose(1, 2), self.fc1.weight[:, :length], self.fc1.bias))
        y = F.linear(hidden, self.fc2.weight[:length], self.fc2.bias[:length])
        return y.transpose(1, 2), None
