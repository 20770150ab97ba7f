"""Hyena with modal (diagonal state-space) long filters: the recurrent form a trained Hyena is distilled into
(`Hyena.to_recurrent(order)`), streaming at O(order) per token instead of the cached-input O(t)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tokenmix.mixer import State
from tokenmix.ops._checks import compute_dtype
from tokenmix.ops.kernels import KernelGenerator
from tokenmix.ops.modal_fit import fit_modal
from tokenmix.registry import register
from tokenmix.sequence._short_conv import ShortConv
from tokenmix.sequence.long_convolution import LongConvMixer
from tokenmix.sequence.state_space import SSM_IMPLS, _complex_state, _real_state, diagonal_ssm


class ModalFilters(KernelGenerator):
    """The modes of N·D filters: log λ = -exp(a) + iθ and C, complex `(N, D, d)`; kept in full precision under
    half casts (a pole's phase rounded to 8 bits drifts by O(1) within tens of steps)."""

    def __init__(self, order: int, dim: int, state_size: int) -> None:
        super().__init__()
        radius = torch.empty(order, dim, state_size).uniform_(0.5, 0.99)
        self.log_decay = nn.Parameter(torch.log(-torch.log(radius)))
        self.angle = nn.Parameter(torch.rand(order, dim, state_size) * math.pi)
        self.output = nn.Parameter(torch.randn(order, dim, state_size, 2) / (2 * state_size) ** 0.5)

    def forward(self) -> tuple[Tensor, Tensor]:
        return torch.complex(-torch.exp(self.log_decay), self.angle), torch.view_as_complex(self.output.contiguous())


@register(
    name="laughing_hyena",
    family="long_convolution",
    layout="sequence",
    paper="Laughing Hyena Distillery: Extracting Compact Recurrences From Convolutions",
    arxiv="2310.18780",
    impls=SSM_IMPLS,
    causal="always",
    state="fixed",
    time_complexity="L log L (fft) / L d (recurrent)",
    memory_complexity="L",
    summary="Hyena whose long filters are modal sums ĥ_t = Re Σ_k R_k λ_k^{t-1} plus a direct tap: the "
            "distilled, recurrent form of a Hyena (O(d) state and work per token).",
)
class LaughingHyena(LongConvMixer):
    """Order-N Hyena (`hyena`'s projections, short convolution and gates) with each long filter a direct tap and
    a diagonal state space of d complex modes per channel:

        z^{n+1}_t = x^n_t · (e^n ⊙ z^n_t + Σ_{j≥1} K^n_j z^n_{t-j}),   K_j = 2 Re Σ_k C_k λ_k^{j-1},
        λ_k = exp(-exp(a_k) + iθ_k)  (|λ| < 1: stable by construction)

    It streams through the recurrence s_t = λ s_{t-1} + z_{t-1} (the input one step late), output
    2 Re(C s_t) + e z_t. `Hyena.to_recurrent` fills λ, C = R/2, e = h_0 from a modal fit of a Hyena's filters;
    built directly, the modes start at random stable poles."""

    def __init__(self, dim: int, *, order: int = 2, short_kernel: int = 3, state_size: int = 16,
                 impl: str = "auto", causal: bool | None = None) -> None:
        super().__init__(dim, impl=impl, causal=causal)
        self.order = self._positive_int("order", order)
        self.short_kernel = self._positive_int("short_kernel", short_kernel)
        self.state_size = self._positive_int("state_size", state_size)
        width = (order + 1) * dim
        self.in_proj = nn.Linear(dim, width)
        self.short = ShortConv(width, self.short_kernel, bias=True)
        self.modes = ModalFilters(order, dim, state_size)
        self.direct = nn.Parameter(torch.randn(order, dim) * 0.02)
        self.out = nn.Linear(dim, dim)
        self.filter_error: Tensor | None = None  # set by Hyena.to_recurrent: relative L2 error per filter

    def _init_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        width = (self.order + 1) * self.dim
        return {"short": torch.zeros(batch_size, width, self.short_kernel - 1, device=device, dtype=dtype),
                "modes": torch.zeros(batch_size, self.order, self.dim, self.state_size, 2, device=device,
                                     dtype=dtype),
                "last": torch.zeros(batch_size, self.order, self.dim, 1, device=device, dtype=dtype)}

    def _mix(self, x: Tensor, state: State | None) -> tuple[Tensor, State | None]:
        u = self.in_proj(x).transpose(1, 2).contiguous()
        u, short = self.short(u, None if state is None else state["short"], channels_first=True, impl=self.short_impl)
        v, *gates = u.split(self.dim, dim=1)
        log_pole, c = self.modes()
        modes = None if state is None else _complex_state(state["modes"].to(compute_dtype(x, log_pole.real)))
        impl = ("recurrent" if x.shape[1] == 1 else "fft") if self.impl == "auto" else self.impl
        z, finals, lasts = v, [], []
        for n, gate in enumerate(gates):
            previous = z.new_zeros(*z.shape[:-1], 1) if state is None else state["last"][:, n].to(z.dtype)
            delayed = torch.cat([previous, z[..., :-1]], dim=-1)                    # z_{t-1}
            y, final = diagonal_ssm(delayed, log_pole[n], torch.ones_like(log_pole[n]), c[n],
                                    None if modes is None else modes[:, n], impl)
            lasts.append(z[..., -1:])
            z = gate * (y.to(x.dtype) + self.direct[n, :, None] * z)
            finals.append(final)
        y = self.out(z.transpose(1, 2))
        if state is None:
            return y, None
        return y, {"short": short, "modes": _real_state(torch.stack(finals, dim=1), state["modes"].dtype),
                   "last": torch.stack(lasts, dim=1).to(state["last"].dtype)}


def distill(hyena, order: int, length: int | None = None, refine: int = 0) -> LaughingHyena:
    """A `LaughingHyena` with `hyena`'s projections and each long filter (skip folded into tap 0) fitted by
    `order` modes over its first `length` taps (default: the Hyena's `kernel_length`), then `refine` L-BFGS
    iterations (`fit_modal`). The fit's relative L2 error per filter is in `.filter_error`, shape
    `(hyena.order, dim)`."""
    from tokenmix.sequence.long_convolution import with_skip

    length = hyena.kernel_length if length is None else length
    with torch.no_grad():
        filters = with_skip(hyena.filters(length), hyena.skip)                          # (N, D, L)
    poles, residues, direct, error = fit_modal(filters, order, refine=refine)
    poles = torch.polar(poles.abs().clamp_min(1e-12), poles.angle())                  # log λ must exist
    c, e = residues / 2, direct                   # ĥ_t = Re Σ R λ^{t-1} = 2 Re Σ C λ^{t-1} (t ≥ 1), ĥ_0 = e
    mixer = LaughingHyena(hyena.dim, order=hyena.order, short_kernel=hyena.short_kernel, state_size=order,
                          impl=hyena.impl)
    reference = next(hyena.parameters())
    mixer.to(device=reference.device, dtype=reference.dtype)
    with torch.no_grad():
        for name in ("in_proj", "out"):
            getattr(mixer, name).load_state_dict(getattr(hyena, name).state_dict())
        mixer.short.load_state_dict(hyena.short.state_dict())
        mixer.modes.log_decay.copy_(torch.log(-torch.log(poles.abs())))
        mixer.modes.angle.copy_(poles.angle())
        mixer.modes.output.copy_(torch.view_as_real(c))
        mixer.direct.copy_(e)
    mixer.filter_error = error
    return mixer
