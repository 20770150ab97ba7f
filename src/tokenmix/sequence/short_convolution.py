"""Short convolutions as sequence mixers: the causal depthwise convolution of Mamba/GLA-style blocks, LightConv and
DynamicConv, a ByteNet dilated stack and MultiresConv's wavelet tree.

Each has a finite receptive field, so each streams with a fixed state: the last inputs its taps still reach.
Inside, sequences are channels-first `(B, C, L)` as `tokenmix.ops.fftconv.fft_conv`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.mixer import SequenceMixer, State
from tokenmix.registry import register
from tokenmix.sequence._heads import check_heads
from tokenmix.sequence._short_conv import ShortConv, causal_conv


def causal_taps(u: Tensor, taps: int, dilation: int, history: Tensor | None) -> tuple[list[Tensor], Tensor]:
    """The inputs a causal dilated filter reads: `[u_{t - j·dilation}]_{j<taps}` each `(B, C, L)` (zeros before
    the start, or the `history` of the last `(taps - 1)·dilation` inputs), and the new history."""
    reach, length = (taps - 1) * dilation, u.shape[-1]
    history = u.new_zeros(*u.shape[:-1], reach) if history is None else history.to(u.dtype)
    full = torch.cat([history, u], dim=-1)
    shifted = [full[..., reach - j * dilation:reach - j * dilation + length] for j in range(taps)]
    return shifted, full[..., full.shape[-1] - reach:]


class _ShortConvMixer(SequenceMixer):
    """Shared: a kernel of `kernel_size` taps (tap j = lag j) over `(B, C, L)`; with `causal=False` the window is
    centered instead (tap j = lag j - ⌊(k-1)/2⌋: ⌊(k-1)/2⌋ tokens ahead), the encoder form."""

    kernel_size: int
    channels: int

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        return {"inputs": torch.zeros(batch_size, self.channels, self.kernel_size - 1, device=device, dtype=dtype)}

    def _convolve(self, u: Tensor, kernel: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        """Convolve with a fixed `(C, k)` kernel whose tap j is lag j."""
        impl = "reference" if self.impl == "reference" else "direct"
        if not self.causal:  # the causal convolution of u padded with `ahead` zeros, read `ahead` tokens later
            ahead = self.ahead
            return causal_conv(F.pad(u, (0, ahead)), kernel, impl=impl)[0][..., ahead:], None
        y, history = causal_conv(u, kernel, None if state is None else state["inputs"], impl=impl)
        return y, (None if state is None else {"inputs": history})

    @property
    def ahead(self) -> int:
        """Future tokens a non-causal (centered) window reads."""
        return 0 if self.causal else (self.kernel_size - 1) // 2


def _kernel_size(mixer: SequenceMixer, value: int) -> int:
    return mixer._positive_int("kernel_size", value)


@register(
    name="short_conv",
    family="short_convolution",
    layout="sequence",
    paper="Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
    arxiv="2312.00752",
    impls=("reference", "direct"),
    causal="always",
    state="fixed",
    time_complexity="L k",
    memory_complexity="L",
    summary="Causal depthwise convolution of a few taps and a SiLU, the local mixer inside Mamba, GLA and "
            "DeltaNet blocks.",
)
class ShortConvolution(_ShortConvMixer):
    """y_t = SiLU(Σ_{j<k} w_j ⊙ x_{t-j} + b), per channel. Mamba's default: k = 4, with bias."""

    def __init__(self, dim: int, *, kernel_size: int = 4, activation: bool = True, impl: str = "auto",
                 causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.kernel_size, self.channels, self.activation = _kernel_size(self, kernel_size), dim, activation
        self.conv = ShortConv(dim, self.kernel_size, bias=True)

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        impl = "reference" if self.impl == "reference" else "direct"
        y, history = self.conv(x, None if state is None else state["inputs"], impl=impl)
        return (F.silu(y) if self.activation else y), (None if state is None else {"inputs": history})


@register(
    name="lightconv",
    family="short_convolution",
    layout="sequence",
    paper="Pay Less Attention with Lightweight and Dynamic Convolutions",
    arxiv="1901.10430",
    impls=("reference", "direct"),
    causal="optional",
    state="fixed",
    time_complexity="L k",
    memory_complexity="L",
    summary="Depthwise convolution with softmax-normalized kernels shared by the channels of each head, "
            "between a GLU input projection and an output projection.",
)
class LightConv(_ShortConvMixer):
    """LightConv(X)_{i,c} = Σ_j softmax(W_{h(c), :})_j · X_{i-j, c} (the causal, decoder form; `causal=False`:
    X_{i+⌊(k-1)/2⌋-j, c}, the paper's centered encoder form), with H heads of d/H channels sharing a kernel;
    the block is y = W_out LightConv(GLU(W_in x)). Paper defaults: H = 16, kernel sizes 3, 7, 15, 31, ... growing
    with depth (k = 7 here), weight dropout 0.1 (not applied here)."""

    def __init__(self, dim: int, *, num_heads: int = 16, kernel_size: int = 7, impl: str = "auto",
                 causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.num_heads = num_heads
        check_heads(self.spec.name, dim, num_heads)
        self.kernel_size, self.channels = _kernel_size(self, kernel_size), dim
        self.in_proj = nn.Linear(dim, 2 * dim)
        self.weight = nn.Parameter(torch.randn(num_heads, kernel_size) * 0.1)
        self.out = nn.Linear(dim, dim)

    def kernel(self) -> Tensor:
        """(dim, k): each head's softmax-normalized kernel, repeated over the head's channels."""
        return self.weight.softmax(-1).repeat_interleave(self.dim // self.num_heads, dim=0)

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        u = F.glu(self.in_proj(x), dim=-1).transpose(1, 2)
        y, state = self._convolve(u, self.kernel(), state)
        return self.out(y.transpose(1, 2)), state


@register(
    name="dynamicconv",
    family="short_convolution",
    layout="sequence",
    paper="Pay Less Attention with Lightweight and Dynamic Convolutions",
    arxiv="1901.10430",
    impls=("reference",),
    causal="optional",
    state="fixed",
    time_complexity="L k d",
    memory_complexity="L k",
    summary="LightConv whose softmax-normalized head kernels are predicted at every position by a linear map "
            "of that position's input.",
)
class DynamicConv(_ShortConvMixer):
    """DynamicConv(X)_{i,c} = Σ_j softmax((X_i W^Q)_{h(c), :})_j · X_{i-j, c} (`causal=False`:
    X_{i+⌊(k-1)/2⌋-j, c}, centered): a kernel per position and head, W^Q ∈ R^{d × Hk}; the block is
    y = W_out DynamicConv(GLU(W_in x)). Paper defaults: H = 16, kernel sizes growing with depth (k = 7 here)."""

    def __init__(self, dim: int, *, num_heads: int = 16, kernel_size: int = 7, impl: str = "auto",
                 causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.num_heads = num_heads
        check_heads(self.spec.name, dim, num_heads)
        self.kernel_size, self.channels = _kernel_size(self, kernel_size), dim
        self.in_proj = nn.Linear(dim, 2 * dim)
        self.predict = nn.Linear(dim, num_heads * kernel_size, bias=False)
        self.out = nn.Linear(dim, dim)

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        u = F.glu(self.in_proj(x), dim=-1)                                          # (B, L, D)
        k, h = self.kernel_size, self.num_heads
        weights = self.predict(u).unflatten(-1, (h, k)).softmax(-1)                # (B, L, H, k)
        padded = F.pad(u.transpose(1, 2), (0, self.ahead))                         # centered: ahead zeros after
        shifted, history = causal_taps(padded, k, 1, None if state is None else state["inputs"])
        windows = torch.stack(shifted, dim=-1)[:, :, self.ahead:]                   # (B, D, L, k), tap j = lag j
        grouped = windows.unflatten(1, (h, self.dim // h))                          # (B, H, D/H, L, k)
        y = torch.einsum("bhclk,blhk->blhc", grouped, weights).flatten(-2)
        return self.out(y), (None if state is None else {"inputs": history})


@register(
    name="bytenet",
    family="short_convolution",
    layout="sequence",
    paper="Neural Machine Translation in Linear Time",
    arxiv="1610.10099",
    impls=("reference",),
    causal="always",
    state="fixed",
    time_complexity="L k d²",
    memory_complexity="L",
    summary="ByteNet's decoder as a mixer: residual blocks of masked (causal) dilated convolutions with dilations "
            "1, 2, 4, 8, 16, each between LayerNorm-ReLU-1×1 projections.",
)
class ByteNet(SequenceMixer):
    """A stack of ByteNet decoder residual blocks, block b with dilation r_b = 2^(b mod 5):

        z = W_in ReLU(LN(x))  (d → d/2),   c_t = Σ_{j<k} W_j ReLU(LN(z))_{t - j·r_b} + b  (masked dilated conv)
        x ← x + W_out ReLU(LN(c))  (d/2 → d)

    Paper defaults: masked kernel size 3 in the decoder, dilations 1, 2, 4, 8, 16 repeated (one set of 5 here)."""

    def __init__(self, dim: int, *, num_blocks: int = 5, kernel_size: int = 3, impl: str = "auto",
                 causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.num_blocks = self._positive_int("num_blocks", num_blocks)
        self.kernel_size = self._positive_int("kernel_size", kernel_size)
        self.hidden = max(dim // 2, 1)
        self.dilations = [2 ** (b % 5) for b in range(num_blocks)]
        hidden = self.hidden
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"norm_in": nn.LayerNorm(dim), "project_in": nn.Linear(dim, hidden),
                           "norm_conv": nn.LayerNorm(hidden), "norm_out": nn.LayerNorm(hidden),
                           "project_out": nn.Linear(hidden, dim)})
            for _ in range(num_blocks))
        bound = (hidden * kernel_size) ** -0.5
        self.conv_weight = nn.Parameter(torch.empty(num_blocks, kernel_size, hidden, hidden).uniform_(-bound, bound))
        self.conv_bias = nn.Parameter(torch.zeros(num_blocks, hidden))

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        return {f"block{b}": torch.zeros(batch_size, self.hidden, (self.kernel_size - 1) * r, device=device,
                                         dtype=dtype) for b, r in enumerate(self.dilations)}

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        new_state = {}
        for b, (block, dilation) in enumerate(zip(self.blocks, self.dilations)):
            z = F.relu(block["norm_conv"](block["project_in"](F.relu(block["norm_in"](x)))))
            history = None if state is None else state[f"block{b}"]
            shifted, new_state[f"block{b}"] = causal_taps(z.transpose(1, 2), self.kernel_size, dilation, history)
            c = sum(torch.einsum("bcl,co->blo", u, w) for u, w in zip(shifted, self.conv_weight[b]))
            x = x + block["project_out"](F.relu(block["norm_out"](c + self.conv_bias[b])))
        return x, (None if state is None else new_state)


@register(
    name="multires_conv",
    family="short_convolution",
    layout="sequence",
    paper="Sequence Modeling with Multiresolution Convolutional Memory",
    arxiv="2305.01638",
    impls=("reference",),
    causal="always",
    state="fixed",
    time_complexity="L J k",
    memory_complexity="L J",
    summary="A causal à-trous wavelet tree with learned low-/high-pass filters shared across levels; the detail "
            "and last approximation coefficients are mixed by learned per-channel weights.",
)
class MultiresConv(SequenceMixer):
    """MultiresConv per channel, levels j = 0..J-1 with dilation 2^j:

        a_0 = x,  a_{j+1} = h ∗_{2^j} a_j,  d_{j+1} = g ∗_{2^j} a_j   (causal dilated convolutions, k taps)
        y = W_out GELU(w_a ⊙ a_J + Σ_j w_j ⊙ d_j)

    h, g are depthwise filters shared by all levels. Receptive field (k-1)(2^J - 1) + 1; the paper takes
    J ≈ log2(L) levels (J = 10 here, 1024 positions) and filters of k = 2 taps."""

    def __init__(self, dim: int, *, depth: int = 10, kernel_size: int = 2, impl: str = "auto",
                 causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.depth = self._positive_int("depth", depth)
        self.kernel_size = self._positive_int("kernel_size", kernel_size)
        bound = (2 / kernel_size) ** 0.5
        self.low_pass = nn.Parameter(torch.empty(dim, kernel_size).uniform_(-bound, bound))
        self.high_pass = nn.Parameter(torch.empty(dim, kernel_size).uniform_(-bound, bound))
        self.mix_weight = nn.Parameter(torch.randn(depth + 1, dim) / (depth + 1) ** 0.5)
        self.out = nn.Linear(dim, dim)

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        return {f"level{j}": torch.zeros(batch_size, self.dim, (self.kernel_size - 1) * 2 ** j, device=device,
                                         dtype=dtype) for j in range(self.depth)}

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        a, new_state = x.transpose(1, 2), {}
        y = 0
        for j in range(self.depth):
            history = None if state is None else state[f"level{j}"]
            shifted, new_state[f"level{j}"] = causal_taps(a, self.kernel_size, 2 ** j, history)
            detail = sum(self.high_pass[:, i, None] * u for i, u in enumerate(shifted))
            a = sum(self.low_pass[:, i, None] * u for i, u in enumerate(shifted))
            y = y + self.mix_weight[j + 1, :, None] * detail
        y = y + self.mix_weight[0, :, None] * a
        return self.out(F.gelu(y).transpose(1, 2)), (None if state is None else new_state)
