"""Kernel generators of the long-convolution mixers: small modules `kernel(length) -> (channels, length)`.

Each is a function of the tap index t = 0, 1, 2, ... defined at every t, so a mixer can convolve inputs of any
length and stream past its training length; positions are normalized by a reference length `kernel_length`
(the paper's L) only to set the scale of the features.

* `HyenaFilter`: h_t = FFN(PosEnc(t)) · Window(t)  ("Hyena Hierarchy", arXiv:2302.10866, §3.3);
* `ModalKernel`: K_t = 2 Re Σ_n C_n B̄_n Ā_n^t, the S4D kernel of a diagonal state space discretized by
  zero-order hold ("On the Parameterization and Initialization of Diagonal State Space Models", arXiv:2206.11893);
* `MultiscaleKernel`: k = concat_i α^i · Upsample_{2^max(i-1,0)}(w_i)  (SGConv, arXiv:2210.09298);
* `SirenKernel`: ψ(τ) = MLP with sine activations  (CKConv, arXiv:2102.02611);
* `MagnetKernel`: ψ(τ) = MAGNet(τ) · Gaussian mask of learnable width  (FlexConv, arXiv:2110.08059).

These hold parameters, so they live beside the pure ops as the one place every long-conv mixer takes its kernel
from; the convolution itself is `tokenmix.ops.fftconv.fft_conv`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _positions(length: int, reference: int, like: Tensor) -> Tensor:
    """τ_t = t / reference for t = 0..length-1, as a column (length, 1)."""
    return (torch.arange(length, device=like.device, dtype=like.dtype) / reference)[:, None]


_HALF = (torch.float16, torch.bfloat16)


class KernelGenerator(nn.Module):
    """Base of the generators: its parameters keep their full precision when the model is cast to fp16/bf16.

    A generated kernel is a smooth function of a few parameters amplified by high frequencies (SIREN's ω0 = 30,
    Gabor frequencies): rounding those parameters to 8 bits would change the kernel by O(1). The kernel is made in
    float32 and the convolution takes half-precision inputs in float32, so nothing else changes."""

    def _apply(self, fn, recurse=True):
        before = {name: t.data for name, t in (*self.named_parameters(), *self.named_buffers())}
        result = super()._apply(fn, recurse)
        for name, t in (*self.named_parameters(), *self.named_buffers()):
            original = before.get(name)
            if t.dtype in _HALF and original is not None and original.dtype not in _HALF:
                t.data = original.to(device=t.device)
        return result


class Sine(nn.Module):
    """sin(ω x): the periodic activation of SIREN / Hyena filters."""

    def __init__(self, frequency: float) -> None:
        super().__init__()
        self.frequency = frequency

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.frequency * x)


class HyenaFilter(KernelGenerator):
    """Hyena's implicit filter, one per channel:

        h_t = FFN(z_t) · (exp(-α_c τ_t) + shift),   z_t = [τ_t, cos(2πkτ_t), sin(2πkτ_t)]_{k=1..K},  τ_t = t / L

    FFN = Linear(1+2K, W) → sin(ω·) → (depth - 1) × [Linear(W, W) → sin(ω·)] → Linear(W, channels); the decay
    rates α_c are spread over channels so that the window falls to `target` at τ between `fast_decay` and
    `slow_decay` (the paper's exponential modulation: 0.3 and 1.5 of the length, target 1e-2). Paper defaults:
    FFN width 64, sine activations, exponentially decaying window.
    """

    def __init__(self, channels: int, *, width: int = 64, depth: int = 3, positional_bands: int = 8,
                 sine_frequency: float = 1.0, kernel_length: int = 1024, fast_decay: float = 0.3,
                 slow_decay: float = 1.5, target: float = 1e-2, shift: float = 0.0) -> None:
        super().__init__()
        self.kernel_length, self.shift = kernel_length, shift
        self.register_buffer("bands", torch.arange(1, positional_bands + 1, dtype=torch.float32), persistent=False)
        layers: list[nn.Module] = [nn.Linear(1 + 2 * positional_bands, width), Sine(sine_frequency)]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), Sine(sine_frequency)]
        layers.append(nn.Linear(width, channels, bias=False))
        self.ffn = nn.Sequential(*layers)
        decays = torch.linspace(fast_decay, slow_decay, channels)
        self.register_buffer("rates", math.log(1 / target) / decays, persistent=False)

    def positional_encoding(self, tau: Tensor) -> Tensor:
        angles = 2 * math.pi * tau * self.bands.to(tau.dtype)
        return torch.cat([tau, angles.cos(), angles.sin()], dim=-1)

    def forward(self, length: int) -> Tensor:
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            return self._filter(length)
        # Inference (a stream asks for one more tap per token): h_t does not depend on the length asked for, so
        # the longest filter made with these exact parameter values is reused — keyed by each parameter's
        # storage and in-place version, so an update of the weights is never served stale taps.
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.parameters())
        cached = self.__dict__.get("_cached_filter")
        if cached is None or cached[0] != key or cached[1].shape[-1] < length:
            longer = max(length, 2 * cached[1].shape[-1]) if cached is not None and cached[0] == key else length
            cached = (key, self._filter(longer))
            self.__dict__["_cached_filter"] = cached
        return cached[1][..., :length]

    def _filter(self, length: int) -> Tensor:
        like = self.ffn[0].weight
        tau = _positions(length, self.kernel_length, like)
        hidden = self.ffn[:-1](self.positional_encoding(tau))                 # (length, width)
        h = self.ffn[-1].weight @ hidden.T                                    # (channels, length), contiguous
        return h * self.window(tau)

    def window(self, tau: Tensor) -> Tensor:
        """exp(-α_c τ_t) + shift, `(channels, length)`. It has no parameters, so the longest one made is reused
        (sliced) while the dtype and device stay the same."""
        length, key = tau.shape[0], (tau.dtype, tau.device, self.shift)
        cached = self.__dict__.get("_window")
        if cached is None or cached[0] != key or cached[1].shape[-1] < length:
            window = torch.exp(-self.rates.to(tau.dtype)[:, None] * tau.T) + self.shift
            self.__dict__["_window"] = cached = (key, window)
        return cached[1][..., :length]


class ModalKernel(KernelGenerator):
    """S4D: a diagonal state space x' = A x + B u, y = C x per channel, N/2 complex modes in conjugate pairs.

    Zero-order hold with step Δ: Ā = exp(ΔA), B̄ = (exp(ΔA) - 1)/A · B. The convolution kernel is
    K_t = 2 Re Σ_n C_n B̄_n Ā_n^t and the same system runs as the recurrence s_t = Ā s_{t-1} + B̄ u_t,
    y_t = 2 Re(C s_t). B is folded into C (B = 1). Defaults (the paper's): N = 64, S4D-Lin initialization
    A_n = -1/2 + iπn, Δ log-uniform in [1e-3, 1e-1], C ~ N(0, 1) complex.
    """

    def __init__(self, channels: int, *, state_size: int = 64, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 init: str = "lin") -> None:
        super().__init__()
        modes = max(state_size // 2, 1)
        log_dt = torch.rand(channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        n = torch.arange(modes, dtype=torch.float32)
        imag = math.pi * n if init == "lin" else modes / math.pi * (modes / (2 * n + 1) - 1)  # "inv"
        self.log_decay = nn.Parameter(torch.full((channels, modes), math.log(0.5)))  # Re A = -exp(.) = -1/2
        self.frequency = nn.Parameter(imag.repeat(channels, 1))
        self.output = nn.Parameter(torch.randn(channels, modes, 2) * 0.5 ** 0.5)

    def discrete(self) -> tuple[Tensor, Tensor, Tensor]:
        """(ΔA, B̄, C), each complex (channels, modes); Ā = exp(ΔA)."""
        a = torch.complex(-torch.exp(self.log_decay), self.frequency)
        dt_a = a * torch.exp(self.log_dt)[:, None]
        return dt_a, torch.expm1(dt_a) / a, torch.view_as_complex(self.output.contiguous())

    def forward(self, length: int) -> Tensor:
        dt_a, b_bar, c = self.discrete()
        return modal_sum(c * b_bar, dt_a, length)


MODAL_CHUNK = 1024  # the largest Vandermonde block: bounds memory to (channels, modes, 1024)


def modal_sum(weights: Tensor, dt_a: Tensor, length: int) -> Tensor:
    """2 Re Σ_n w_n exp(ΔA_n t) for t = 0..length-1: `weights (..., N)` and `dt_a (..., N)` broadcast, complex;
    returns `(..., length)` real.

    Positions are split into blocks of b: t = s + r with Ā^t = Ā^s · Ā^r, so one `(N, b)` Vandermonde block
    Ā^r serves every block start s — a matrix product of the weights scaled by Ā^s with it, instead of
    N·L complex exponentials. Each Ā^s is its own exponential, so no error accumulates over blocks."""
    real = dt_a.real.dtype
    block = min(MODAL_CHUNK, 1 << max(math.ceil(math.log2(length) / 2), 4))  # ≈ √L: N·(b + L/b) exponentials
    starts = torch.arange(0, length, block, device=dt_a.device, dtype=real)
    base = complex_exp(dt_a[..., None] * torch.arange(block, device=dt_a.device, dtype=real))   # (..., N, b)
    scaled = weights[..., None, :] * complex_exp(dt_a[..., None, :] * starts[:, None])          # (..., S, N)
    # Only the real part is needed: Re(s b) = Re s Re b - Im s Im b, one real product over 2N (a complex product
    # would also compute the imaginary part: twice the work).
    real_parts = torch.cat([scaled.real, scaled.imag], dim=-1)                                 # (..., S, 2N)
    stacked = torch.cat([base.real, -base.imag], dim=-2)                                       # (..., 2N, b)
    return 2 * (real_parts @ stacked).flatten(-2)[..., :length]


def complex_exp(z: Tensor) -> Tensor:
    """exp(z) = e^Re z (cos Im z + i sin Im z) through real exp/cos/sin, which are vectorized on CPU where the
    complex exp is not (several times faster)."""
    return torch.polar(torch.exp(z.real), z.imag)


class MultiscaleKernel(KernelGenerator):
    """SGConv: k = concat_{i=0}^{S-1} α^i · Upsample_{2^max(i-1,0)}(w_i), w_i ∈ R^{channels × d}, then normalized
    by its norm (the paper's kernel normalization). S = ⌈log2(kernel_length / d)⌉ + 1 sub-kernels make a kernel
    of d·2^(S-1) ≥ kernel_length taps. Upsampling is linear interpolation. Defaults: d = 32, α = 1/2."""

    def __init__(self, channels: int, *, kernel_length: int = 1024, sub_kernel: int = 32, decay: float = 0.5) -> None:
        super().__init__()
        self.scales = max(math.ceil(math.log2(max(kernel_length / sub_kernel, 1))), 0) + 1
        self.decay = decay
        self.sub_kernels = nn.ParameterList(
            nn.Parameter(torch.randn(channels, sub_kernel)) for _ in range(self.scales))

    @property
    def length(self) -> int:
        return self.sub_kernels[0].shape[-1] * 2 ** (self.scales - 1)

    def forward(self, length: int) -> Tensor:
        parts = []
        for i, w in enumerate(self.sub_kernels):
            factor = 2 ** max(i - 1, 0)
            if factor > 1:
                w = F.interpolate(w[None], scale_factor=factor, mode="linear", align_corners=False)[0]
            parts.append(self.decay ** i * w)
        k = torch.cat(parts, dim=-1)
        k = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return k[..., :length] if k.shape[-1] >= length else F.pad(k, (0, length - k.shape[-1]))


class SirenKernel(KernelGenerator):
    """CKConv: the kernel is a continuous function of the relative position, ψ(τ) = MLP_ψ(τ) with sine
    activations (SIREN): Linear(1, W) → sin(ω0·) → (depth - 1) × [Linear(W, W) → sin(ω0·)] → Linear(W, channels),
    τ_t = t / kernel_length. SIREN initialization: first layer U(-1, 1), later U(±√(6/W)/ω0). Defaults
    (the paper's): W = 32, depth 3, ω0 = 30. Depthwise: one kernel per channel."""

    def __init__(self, channels: int, *, width: int = 32, depth: int = 3, omega: float = 30.0,
                 kernel_length: int = 1024) -> None:
        super().__init__()
        self.kernel_length = kernel_length
        layers: list[nn.Module] = []
        for i in range(depth):
            linear = nn.Linear(1 if i == 0 else width, width)
            bound = 1.0 if i == 0 else math.sqrt(6 / width) / omega
            nn.init.uniform_(linear.weight, -bound, bound)
            layers += [linear, Sine(omega)]
        last = nn.Linear(width, channels)
        nn.init.uniform_(last.weight, -math.sqrt(6 / width) / omega, math.sqrt(6 / width) / omega)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def forward(self, length: int) -> Tensor:
        tau = _positions(length, self.kernel_length, self.net[0].weight)
        return self.net(tau).transpose(0, 1)


class MagnetKernel(KernelGenerator):
    """FlexConv: K(τ) = MAGNet(τ) · G(τ; σ), with learnable kernel size through the Gaussian mask
    G(τ) = exp(-τ² / (2σ²)) centered on the current position (causal, τ_t = t / kernel_length ≥ 0).

    MAGNet (multiplicative anisotropic Gabor network): h_1 = g_1(τ), h_{l+1} = (W_l h_l + b_l) ⊙ g_{l+1}(τ),
    ψ = W_out h_depth, with Gabor units g_l(τ) = exp(-½ γ_l² (τ - μ_l)²) · sin(ω_l τ + φ_l). Defaults: W = 32,
    depth 3, initial σ = 0.25 of kernel_length (the mask starts small and learns to grow)."""

    def __init__(self, channels: int, *, width: int = 32, depth: int = 3, kernel_length: int = 1024,
                 initial_size: float = 0.25, max_frequency: float = 64.0) -> None:
        super().__init__()
        self.kernel_length = kernel_length
        self.gamma = nn.Parameter(torch.rand(depth, width) * 4 + 1)
        self.mu = nn.Parameter(torch.rand(depth, width))
        self.omega = nn.Parameter(torch.randn(depth, width) * max_frequency / depth)
        self.phase = nn.Parameter(torch.rand(depth, width) * 2 * math.pi - math.pi)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        self.out = nn.Linear(width, channels)
        self.log_size = nn.Parameter(torch.tensor(math.log(initial_size)))

    def gabor(self, tau: Tensor, layer: int) -> Tensor:
        envelope = torch.exp(-0.5 * (self.gamma[layer] * (tau - self.mu[layer])) ** 2)
        return envelope * torch.sin(self.omega[layer] * tau + self.phase[layer])

    def forward(self, length: int) -> Tensor:
        tau = _positions(length, self.kernel_length, self.gamma)
        h = self.gabor(tau, 0)
        for layer, linear in enumerate(self.hidden, start=1):
            h = linear(h) * self.gabor(tau, layer)
        mask = torch.exp(-0.5 * (tau / torch.exp(self.log_size)) ** 2)
        return (self.out(h) * mask).transpose(0, 1)
