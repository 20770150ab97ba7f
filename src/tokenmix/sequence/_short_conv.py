"""The short causal depthwise convolution (DeltaNet, Mamba, Mamba-2, Hyena, H3's shift SSM, LightConv, ...) and
its streaming cache, over the one convolution op `tokenmix.ops.fftconv.fft_conv` (its `direct` form: a few taps,
and exact continuation from a `history` of the last `taps - 1` inputs)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tokenmix.ops.fftconv import fft_conv


def causal_conv(u: Tensor, kernel: Tensor, history: Tensor | None = None, *, impl: str = "direct"
                ) -> tuple[Tensor, Tensor | None]:
    """y_t = Σ_{j<K} k_j ⊙ u_{t-j} over `u: (..., C, L)` with `kernel: (C, K)` (tap j = lag j), zeros before
    the start or the `history: (..., C, K-1)` of the inputs before `u`. Returns `y` and, when a history was
    given, the new history (the last `K - 1` inputs, in the history's dtype); else None."""
    y = fft_conv(u, kernel, history=history, impl=impl)
    if history is None:
        return y, None
    keep = kernel.shape[-1] - 1
    recent = u[..., max(u.shape[-1] - keep, 0):]   # only the inputs the cache keeps (none when keep is 0)
    full = torch.cat([history.to(u.dtype), recent], dim=-1)
    return y, full[..., full.shape[-1] - keep:].to(history.dtype)


class ShortConv(nn.Module):
    """y_t = Σ_{i<W} w_i ⊙ x_{t-W+1+i} (+ bias), per channel; zeros before the first token. The weight has
    `nn.Conv1d`'s depthwise layout `(C, 1, W)` (last tap = current token), so checkpoints of Mamba-style
    `Conv1d(C, C, W, groups=C, padding=W-1)` layers load as they are. Initialization as that layer's default."""

    def __init__(self, channels: int, kernel_size: int = 4, bias: bool = False) -> None:
        super().__init__()
        self.channels, self.kernel_size = channels, kernel_size
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def kernel(self) -> Tensor:
        """(C, W) with tap j = lag j, as `fft_conv` takes it."""
        return self.weight[:, 0].flip(-1)

    def init_cache(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        return torch.zeros(batch_size, self.channels, self.kernel_size - 1, device=device, dtype=dtype)

    def forward(self, x: Tensor, cache: Tensor | None = None, *, channels_first: bool = False,
                impl: str = "direct") -> tuple[Tensor, Tensor | None]:
        """(B, L, C) -> (B, L, C) (or `(B, C, L)` both ways with `channels_first`); with `cache` (B, C, W-1)
        continue from it and return the new cache, else None. `impl`: `direct` or `reference` (fft_conv's)."""
        u = x if channels_first else x.transpose(1, 2)
        y, new_cache = causal_conv(u, self.kernel(), cache, impl=impl)
        if self.bias is not None:  # in place on the fresh convolution output (its autograd never keeps y itself)
            y = y.add_(self.bias[:, None])
        return (y if channels_first else y.transpose(1, 2)), new_cache
