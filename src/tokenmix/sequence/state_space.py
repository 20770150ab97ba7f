"""Diagonal state-space mixers: S4D and H3. One system, two forms — a long convolution with the modal kernel
K_t = 2 Re Σ_n C_n B̄_n Ā_n^t (through `fft_conv`) and the recurrence s_t = Ā s_{t-1} + B̄ u_t,
y_t = 2 Re(C s_t) — so they stream with a fixed state of N/2 complex modes per channel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.mixer import SequenceMixer, State
from tokenmix.ops._checks import compute_dtype
from tokenmix.ops.fftconv import fft_conv
from tokenmix.ops.kernels import MODAL_CHUNK, ModalKernel, complex_exp, modal_sum
from tokenmix.registry import register
from tokenmix.sequence._heads import check_heads
from tokenmix.sequence._layout import channels_first
from tokenmix.sequence.long_convolution import channels_first_linear
from tokenmix.sequence._short_conv import ShortConv

SSM_IMPLS = ("reference", "fft", "recurrent")


def diagonal_ssm(u: Tensor, dt_a: Tensor, b_bar: Tensor, c: Tensor, state: Tensor | None, impl: str
                 ) -> tuple[Tensor, Tensor | None]:
    """Run a diagonal SSM over `u: (B, *C, L)` with complex `(*C, N)` ΔA, B̄, C from `state: (B, *C, N)`
    (complex, or None for zeros). Returns `y: (B, *C, L)` and the last state (None when `state` is None)."""
    length = u.shape[-1]
    real = compute_dtype(u, dt_a.real)
    u = u.to(real)
    if impl == "recurrent":
        a_bar = torch.exp(dt_a)
        s = torch.zeros(*u.shape[:-1], dt_a.shape[-1], dtype=a_bar.dtype, device=u.device) if state is None else state
        outputs = []
        for u_t in u.unbind(-1):  # views taken once: `u[..., t]` in the loop would make backward O(L²)
            s = a_bar * s + b_bar * u_t[..., None]
            outputs.append(2 * (c * s).sum(-1).real)
        return torch.stack(outputs, dim=-1), (None if state is None else s)
    y = fft_conv(u, modal_sum(c * b_bar, dt_a, length), impl="reference" if impl == "reference" else "auto")
    if state is None:
        return y, None
    a_bar = torch.exp(dt_a)
    y = y + modal_sum(c * a_bar * state, dt_a, length)                                # 2 Re C Ā^{t+1} s_0
    driven = sum(torch.einsum("...nl,...l->...n", complex_exp(dt_a[..., None] * (length - 1 - t)),
                              u[..., t].to(dt_a.dtype))                            # Σ_j Ā^{L-1-j} u_j
                 for t in _blocks(length, u.device))
    return y, torch.exp(dt_a * length) * state + b_bar * driven


def _blocks(length: int, device: torch.device) -> list[Tensor]:
    return [torch.arange(s, min(s + MODAL_CHUNK, length), device=device) for s in range(0, length, MODAL_CHUNK)]


def _complex_state(state: Tensor) -> Tensor:
    return torch.view_as_complex(state.contiguous())


def _real_state(state: Tensor, dtype: torch.dtype) -> Tensor:
    return torch.view_as_real(state).to(dtype)


@register(
    name="s4d",
    family="state_space",
    layout="sequence",
    paper="On the Parameterization and Initialization of Diagonal State Space Models",
    arxiv="2206.11893",
    impls=SSM_IMPLS,
    causal="always",
    state="fixed",
    time_complexity="L log L (fft) / L N (recurrent)",
    memory_complexity="L N",
    summary="Diagonal state space per channel, ZOH-discretized, as a long convolution with its modal (Vandermonde) "
            "kernel; streams through its recurrence with N/2 complex modes per channel.",
)
class S4D(SequenceMixer):
    """y = W_out GELU(K ∗ u + d ⊙ u), K_t = 2 Re Σ_n C_n B̄_n Ā_n^t, Ā = exp(ΔA), B̄ = (exp(ΔA) - 1)/A (B = 1).

    Paper defaults: N = 64 (32 complex modes in conjugate pairs), S4D-Lin initialization A_n = -1/2 + iπn
    (`init="inv"` for S4D-Inv), Δ log-uniform in [1e-3, 1e-1]. `impl`: `reference` (direct convolution),
    `fft`, `recurrent` (the scan); `auto` is `fft` over sequences and the recurrence for one token."""

    def __init__(self, dim: int, *, state_size: int = 64, init: str = "lin", dt_min: float = 1e-3,
                 dt_max: float = 1e-1, impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        if init not in ("lin", "inv"):
            raise self._fail(f"init must be 'lin' or 'inv', got {init!r}")
        self.kernel = ModalKernel(dim, state_size=self._positive_int("state_size", state_size), init=init,
                                  dt_min=dt_min, dt_max=dt_max)
        self.modes = self.kernel.log_decay.shape[-1]
        self.skip = nn.Parameter(torch.randn(dim))
        self.out = nn.Linear(dim, dim)

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        return {"state": torch.zeros(batch_size, self.dim, self.modes, 2, device=device, dtype=dtype)}

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        u = channels_first(x)
        s0 = None if state is None else _complex_state(state["state"].to(compute_dtype(x, self.kernel.log_dt)))
        impl = "fft" if self.impl == "auto" else self.impl
        y, s = diagonal_ssm(u, *self.kernel.discrete(), s0, impl)
        y = self.out(F.gelu(torch.addcmul(y.to(x.dtype), self.skip[:, None], u)).transpose(1, 2))  # one pass
        return y, (None if state is None else {"state": _real_state(s, state["state"].dtype)})

    def _step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        s0 = _complex_state(state["state"].to(compute_dtype(x_t, self.kernel.log_dt)))
        y, s = diagonal_ssm(x_t[..., None], *self.kernel.discrete(), s0, "recurrent")
        y = self.out(F.gelu(y[..., 0].to(x_t.dtype) + self.skip * x_t))
        return y, {"state": _real_state(s, state["state"].dtype)}


@register(
    name="h3",
    family="state_space",
    layout="sequence",
    paper="Hungry Hungry Hippos: Towards Language Modeling with State Space Models",
    arxiv="2212.14052",
    impls=SSM_IMPLS,
    causal="always",
    state="fixed",
    time_complexity="L log L (fft) / L N (recurrent)",
    memory_complexity="L d N",
    summary="q ⊙ SSM_diag(SSM_shift(k) ⊙ v): a shift SSM (short causal filter) on keys, a diagonal SSM over the "
            "per-head key-value outer products, read out by the queries.",
)
class H3(SequenceMixer):
    """H3, per head h of dimension d:

        (q, k, v) = W_qkv u,   k̄ = SSM_shift(k)   (the shift SSM: a learned causal filter of `shift_size` taps)
        z_{h,i,j} = SSM_diag(k̄_{h,i} v_{h,j}) + d_{h,i} k̄_{h,i} v_{h,j}   (over the d×d key-value outer products;
                                                                            one SSM per key channel)
        y = W_out concat_h (Σ_i q_{h,i} z_{h,i,j})_j

    `num_heads=None` gives head dimension 1, the elementwise form q ⊙ SSM_diag(k̄ ⊙ v). Paper defaults: diagonal
    SSM with N = 64 (S4D-Lin), shift SSM of state size 4 here."""

    GROUP_CHANNELS = 4096  # outer-product channels (d² per head) processed together

    def __init__(self, dim: int, *, num_heads: int | None = None, shift_size: int = 4, state_size: int = 64,
                 impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.num_heads = dim if num_heads is None else num_heads
        self.head_dim = check_heads(self.spec.name, dim, self.num_heads)
        self.shift_size = self._positive_int("shift_size", shift_size)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.shift = ShortConv(dim, shift_size)
        nn.init.normal_(self.shift.weight, std=shift_size ** -0.5)
        self.kernel = ModalKernel(dim, state_size=self._positive_int("state_size", state_size))
        self.modes = self.kernel.log_decay.shape[-1]
        self.skip = nn.Parameter(torch.randn(dim))
        self.out = nn.Linear(dim, dim)

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        h, d = self.num_heads, self.head_dim
        return {"keys": torch.zeros(batch_size, self.dim, self.shift_size - 1, device=device, dtype=dtype),
                "state": torch.zeros(batch_size, h, d, d, self.modes, 2, device=device, dtype=dtype)}

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        h, d, length = self.num_heads, self.head_dim, x.shape[1]
        q, k, v = channels_first_linear(self.qkv, x).chunk(3, dim=1)               # (B, D, L) each
        k_shift, keys = self.shift(k, None if state is None else state["keys"], channels_first=True,
                                   impl="reference" if self.impl == "reference" else "direct")
        q, k_shift, v = (t.unflatten(1, (h, d)) for t in (q, k_shift, v))            # (B, H, d, L)
        dt_a, b_bar, c = (p.unflatten(0, (h, d))[:, :, None] for p in self.kernel.discrete())   # (H, d, 1, N)
        s0 = None if state is None else _complex_state(state["state"].to(compute_dtype(x, dt_a.real)))
        impl = ("recurrent" if length == 1 else "fft") if self.impl == "auto" else self.impl
        # Heads in groups of about GROUP_CHANNELS outer-product channels (one head at d = 64): a group's
        # (B, g, d, d, L) outer products and their spectra are the working set, and the queries' readout
        # Σ_i q_i z_ij is one multiply-reduce over them. The skip term needs no outer product:
        # Σ_i q_i d_i k̄_i v_j = (q · (d ⊙ k̄)) v_j.
        skip = (q * self.skip.view(h, d, 1) * k_shift).sum(2, keepdim=True) * v      # (B, H, d, L)
        group = max(1, self.GROUP_CHANNELS // (d * d))
        heads, finals = [], []
        for m in range(0, h, group):
            g = slice(m, m + group)
            kv = k_shift[:, g, :, None] * v[:, g, None]                                 # (B, g, d, d, L)
            w, s = diagonal_ssm(kv, dt_a[g], b_bar[g], c[g], None if s0 is None else s0[:, g], impl)
            heads.append((q[:, g, :, None] * w.to(x.dtype)).sum(2))                    # (B, g, d, L)
            finals.append(s)
        y = self.out((torch.cat(heads, dim=1) + skip).flatten(1, 2).transpose(1, 2))
        if state is None:
            return y, None
        return y, {"keys": keys, "state": _real_state(torch.cat(finals, dim=1), state["state"].dtype)}
