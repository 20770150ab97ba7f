"""Gated, high-order grid mixers: HorNet's recursive gated convolution gⁿConv."""

from __future__ import annotations

from torch import Tensor, nn

from tokenmix.grid._parts import CONV_IMPLS, depthwise_weight, odd_kernel
from tokenmix.mixer import GridMixer
from tokenmix.ops.conv import conv
from tokenmix.registry import register


@register(
    name="hornet_gnconv",
    family="gated",
    layout="grid",
    paper="HorNet: Efficient High-Order Spatial Interactions with Recursive Gated Convolutions",
    arxiv="2207.14284",
    impls=CONV_IMPLS,
    causal="never",
    state="none",
    time_complexity="N (D + D k^2)",
    memory_complexity="N D",
    spatial_dims=(2,),
    summary="HorNet gⁿConv: n-th order spatial interactions by recursive gating with a depthwise 7×7 conv.",
)
class RecursiveGatedConvolution(GridMixer):
    """Recursive gated convolution gⁿConv (Rao et al., arXiv 2207.14284), eq. (3.3)-(3.5):

        [p_0, q_0, ..., q_{n-1}] = φ_in(x)                       (1×1 conv, C → 2C)
        p_{k+1} = f_k(q_k) ⊙ g_k(p_k) / α,   k = 0 .. n-1
        y = φ_out(p_n)                                           (1×1 conv, C → C)

    with channel widths C_k = C / 2^{n-k-1} (so q_{n-1} and p_n have C channels), f_k a depthwise
    `kernel_size`² convolution (all q_k convolved at once), g_0 the identity and g_k a 1×1 conv C_{k-1} → C_k.
    `scale` is 1/α (the paper's models use 1/3). `order` n is 1 to 5 (HorNet uses 2-5); `dim` must be divisible by 2^{n-1}."""

    def __init__(self, dim: int, *, order: int = 3, kernel_size: int = 7, scale: float = 1 / 3, **base) -> None:
        super().__init__(dim, **base)
        if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 5:
            raise self._fail(f"order must be an integer from 1 to 5, got {order!r}")
        if dim % 2 ** (order - 1):
            raise self._fail(f"dim {dim} must be divisible by 2^(order-1) = {2 ** (order - 1)} for order {order}")
        self.order = order
        self.kernel_size = odd_kernel(self, "kernel_size", kernel_size)
        self.scale = float(scale)
        self.widths = [dim // 2 ** (order - k - 1) for k in range(order)]  # C_0 .. C_{n-1}
        self.project_in = nn.Conv2d(dim, 2 * dim, 1)
        self.depthwise_weight = depthwise_weight(sum(self.widths), kernel_size)
        self.depthwise_bias = nn.Parameter(nn.init.zeros_(self.depthwise_weight.new_empty(sum(self.widths))))
        self.gates = nn.ModuleList(nn.Conv2d(self.widths[k - 1], self.widths[k], 1) for k in range(1, order))
        self.project_out = nn.Conv2d(dim, dim, 1)

    def _mix(self, x: Tensor) -> Tensor:
        p, q = self.project_in(x).split([self.widths[0], sum(self.widths)], dim=1)
        q = conv(q, self.depthwise_weight, self.depthwise_bias, groups=q.shape[1], impl=self.impl) * self.scale
        q = q.split(self.widths, dim=1)
        p = p * q[0]                                             # p_1 = f_0(q_0) ⊙ p_0 / α
        for k, gate in enumerate(self.gates, start=1):
            p = gate(p) * q[k]                                   # p_{k+1} = f_k(q_k) ⊙ g_k(p_k) / α
        return self.project_out(p)
