"""Linear attention for images: global, non-causal forms over the h·w flattened positions of a `(B, D, H, W)` grid.

FLatten, SLAB, RALA and EfficientViT are a feature map over the one decayed linear-attention op
(`tokenmix.ops.linear_attention`, its `causal=False` global form with the denominator); InLine uses the same op
without a denominator; Agent attention is two softmax attentions (`tokenmix.ops.attention`). Each adds its paper's
local term (a depthwise convolution of V, or InLine's predicted 3×3 residual).

`impl`: `reference` materializes the (h·w)×(h·w) weights (the equation as written), `factored` computes
φ(K)ᵀV first (linear in h·w); Agent attention's `sdpa` uses PyTorch's fused attention for both softmaxes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.grid._parts import odd_kernel
from tokenmix.mixer import GridMixer
from tokenmix.ops.attention import softmax_attention
from tokenmix.ops.feature_maps import elu_plus_one, focused
from tokenmix.ops.linear_attention import linear_attention
from tokenmix.registry import register
from tokenmix.sequence._heads import check_heads

LINEAR_GRID_IMPLS = ("reference", "factored")


def to_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, H·K, *spatial) -> (B, H, N, K) over the N flattened positions (row-major)."""
    return x.flatten(2).unflatten(1, (num_heads, -1)).transpose(-1, -2)


def from_heads(o: Tensor, like: Tensor) -> Tensor:
    """(B, H, N, K) -> (B, H·K, *spatial) in the shape of `like`."""
    return o.transpose(-1, -2).flatten(1, 2).reshape(like.shape[0], -1, *like.shape[2:])


class _GridHeads(GridMixer):
    """Heads over the channels; 1×1 projections to q, k, v (and more), a depthwise conv on V, an output 1×1."""

    # Positional parameters, so they are not user options of the subclasses (the registry lists keyword-only ones).
    def __init__(self, dim: int, num_heads: int, projections: int = 3, kernel_size: int | None = 5,
                 bias: bool = False, *, impl: str = "auto", **base) -> None:
        super().__init__(dim, impl=impl, **base)
        self.num_heads = num_heads
        self.head_dim = check_heads(self.spec.name, dim, num_heads)
        self.projections = nn.Conv2d(dim, projections * dim, 1, bias=bias)
        self.local = None
        if kernel_size is not None:
            self.kernel_size = odd_kernel(self, "kernel_size", kernel_size)
            self.local = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.out = nn.Conv2d(dim, dim, 1)

    @property
    def op_impl(self) -> str:
        return "reference" if self.impl == "reference" else "chunk"  # any non-reference impl: q (kᵀ v)

    def normalized(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Σ_j φq_i·φk_j v_j / Σ_j φq_i·φk_j over head tensors (the op's global form)."""
        return linear_attention(q, k, v, causal=False, normalize=True, scale=1.0, impl=self.op_impl)


@register(
    name="flatten_grid",
    family="linear_attention",
    layout="grid",
    paper="FLatten Transformer: Vision Transformer using Focused Linear Attention",
    arxiv="2308.00442",
    impls=LINEAR_GRID_IMPLS,
    causal="never",
    state="none",
    time_complexity="N D",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="Focused linear attention over all pixels (focusing map f_p with a learned scale) + a 5×5 depthwise "
            "conv of V to restore rank.",
)
class FocusedLinearAttention2d(_GridHeads):
    """FLatten (Han et al., arXiv 2308.00442), eq. (6)-(8):

        f_p(x) = ‖x‖/‖x^{∘p}‖ · x^{∘p},  φ_p(x) = f_p(ReLU(x)/s)      (s = softplus of a learned per-channel scale)
        O_i = φ_p(Q_i)(Σ_j φ_p(K_j)ᵀ V_j) / (φ_p(Q_i) Σ_j φ_p(K_j)ᵀ) + DWC(V)_i

    over the h·w positions, p = `focusing_power` (3), DWC a `kernel_size`×`kernel_size` depthwise conv (5)."""

    def __init__(self, dim: int, *, num_heads: int = 4, focusing_power: float = 3.0, kernel_size: int = 5,
                 **base) -> None:
        super().__init__(dim, num_heads, kernel_size=kernel_size, **base)
        self.focusing_power = float(focusing_power)
        self.scale = nn.Parameter(torch.zeros(dim, 1, 1))

    def _mix(self, x: Tensor) -> Tensor:
        q, k, v = self.projections(x).chunk(3, dim=1)
        scale = F.softplus(self.scale)
        q, k = (focused(to_heads(t / scale, self.num_heads), self.focusing_power) for t in (q, k))
        o = self.normalized(q, k, to_heads(v, self.num_heads))
        return self.out(from_heads(o, x) + self.local(v))


@register(
    name="slab",
    family="linear_attention",
    layout="grid",
    paper="SLAB: Efficient Transformers with Simplified Linear Attention and Progressive Re-parameterized Batch "
          "Normalization",
    arxiv="2405.11582",
    impls=LINEAR_GRID_IMPLS,
    causal="never",
    state="none",
    time_complexity="N D",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="Simplified linear attention: ReLU kernel, normalized, plus a depthwise conv of V.",
)
class SimplifiedLinearAttention(_GridHeads):
    """SLA of SLAB (Guo et al., arXiv 2405.11582), eq. (6):

        O_i = ReLU(Q_i)(Σ_j ReLU(K_j)ᵀ V_j) / (ReLU(Q_i) Σ_j ReLU(K_j)ᵀ) + DWC(V)_i

    over the h·w positions (the paper's PRepBN is a normalization of the block, not of the mixer)."""

    def __init__(self, dim: int, *, num_heads: int = 4, kernel_size: int = 5, **base) -> None:
        super().__init__(dim, num_heads, kernel_size=kernel_size, **base)

    def _mix(self, x: Tensor) -> Tensor:
        q, k, v = self.projections(x).chunk(3, dim=1)
        q, k = (to_heads(F.relu(t), self.num_heads) for t in (q, k))
        o = self.normalized(q, k, to_heads(v, self.num_heads))
        return self.out(from_heads(o, x) + self.local(v))


@register(
    name="inline_attention",
    family="linear_attention",
    layout="grid",
    paper="Bridging the Divide: Reconsidering Softmax and Linear Attention",
    arxiv="2412.06590",
    impls=LINEAR_GRID_IMPLS,
    causal="never",
    state="none",
    time_complexity="N D",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="InLine injective linear attention: weights q·k - mean_s q·k_s + 1/N sum to one without a "
            "denominator; plus a 3×3 local residual on V with weights predicted from the image mean.",
)
class InjectiveLinearAttention(_GridHeads):
    """InLine attention (Han et al., arXiv 2412.06590), eq. (5) and the local attention residual:

        w_ij = c·φ(Q_i)ᵀφ(K_j) - (c/N)Σ_s φ(Q_i)ᵀφ(K_s) + 1/N,   Σ_j w_ij = 1,   c = d^{-1/2}/N
        O_i = Σ_j w_ij V_j + Σ_{t ∈ 3×3} r_t V_{i+t},            r = MLP(mean_i x_i) (9 weights per channel)

    φ = identity (the paper's choice; injectivity needs no positivity), N = h·w, d the head dim; the MLP is a
    per-head 1×1 → GELU → 1×1 to 9 weights per channel. The factored form is
    O_i = c·φ(Q_i)(Σ_j φ(K_j)ᵀV_j) + (1 - c·N·φ(Q_i)ᵀ mean_s φ(K_s)) · mean_j V_j."""

    def __init__(self, dim: int, *, num_heads: int = 4, **base) -> None:
        super().__init__(dim, num_heads, kernel_size=None, **base)
        self.residual = nn.Sequential(nn.Conv1d(dim, dim, 1, groups=num_heads), nn.GELU(),
                                      nn.Conv1d(dim, 9 * dim, 1, groups=num_heads))

    def weights(self, q: Tensor, k: Tensor) -> Tensor:
        """The (B, H, N, N) InLine weights of the head tensors (reference form; rows sum to one)."""
        n = q.shape[2]
        c = self.head_dim ** -0.5 / n
        scores = c * q @ k.transpose(-1, -2)
        return scores - scores.mean(-1, keepdim=True) + 1.0 / n

    def _mix(self, x: Tensor) -> Tensor:
        b, d, h, w = x.shape
        q, k, v = (to_heads(t, self.num_heads) for t in self.projections(x).chunk(3, dim=1))
        n = q.shape[2]
        if self.impl == "reference":
            o = self.weights(q, k) @ v
        else:
            c = self.head_dim ** -0.5 / n
            o = linear_attention(q, k, v, causal=False, scale=c, impl="chunk")
            o = o + (1.0 - c * n * q @ k.mean(2, keepdim=True).transpose(-1, -2)) * v.mean(2, keepdim=True)
        r = self.residual(x.mean((2, 3))[..., None]).reshape(b * d, 1, 3, 3)
        values = from_heads(v, x).reshape(1, b * d, h, w)
        local = F.conv2d(values, r, padding=1, groups=b * d).reshape(b, d, h, w)
        return self.out(from_heads(o, x) + local)


@register(
    name="rala",
    family="linear_attention",
    layout="grid",
    paper="Breaking the Low-Rank Dilemma of Linear Attention",
    arxiv="2411.07635",
    impls=LINEAR_GRID_IMPLS,
    causal="never",
    state="none",
    time_complexity="N D",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="Rank-augmented linear attention: keys reweighted by a softmax against the mean query (KV buffer), "
            "+ a 5×5 depthwise conv of V, the output modulated elementwise by a linear gate.",
)
class RankAugmentedLinearAttention(_GridHeads):
    """RALA (Fan et al., arXiv 2411.07635), eq. (9)-(11), φ = elu + 1:

        α_j = softmax_j(d^{-1/2} · mean_i φ(Q_i) · φ(K_j)ᵀ),    K̃_j = N α_j φ(K_j)
        Y_i = [φ(Q_i)(Σ_j K̃_jᵀ V_j) / (φ(Q_i) Σ_j K̃_jᵀ) + DWC(V)_i] ⊙ (X W_g)_i,   out = Y W_o

    (the token-level KV-buffer weighting and the feature-level modulation that raise the output's rank; the
    paper's 2D RoPE on q, k is left out)."""

    def __init__(self, dim: int, *, num_heads: int = 4, kernel_size: int = 5, **base) -> None:
        super().__init__(dim, num_heads, 4, kernel_size, True, **base)

    def _mix(self, x: Tensor) -> Tensor:
        q, k, v, gate = self.projections(x).chunk(4, dim=1)
        q, k = (elu_plus_one(to_heads(t, self.num_heads)) for t in (q, k))
        n = q.shape[2]
        alpha = torch.softmax(self.head_dim ** -0.5 * q.mean(2, keepdim=True) @ k.transpose(-1, -2), dim=-1)
        k = k * (n * alpha.transpose(-1, -2))
        o = self.normalized(q, k, to_heads(v, self.num_heads))
        return self.out((from_heads(o, x) + self.local(v)) * gate)


@register(
    name="efficientvit_attention",
    family="linear_attention",
    layout="grid",
    paper="EfficientViT: Multi-Scale Linear Attention for High-Resolution Dense Prediction",
    arxiv="2205.14756",
    impls=LINEAR_GRID_IMPLS,
    causal="never",
    state="none",
    time_complexity="N D",
    memory_complexity="N",
    spatial_dims=(2,),
    summary="ReLU linear attention over all pixels; multi-scale tokens from small-kernel depthwise + grouped "
            "1×1 convs of q, k, v (scales=() for single-scale).",
)
class ReLULinearAttention(_GridHeads):
    """EfficientViT's multi-scale linear attention (Cai et al., arXiv 2205.14756), eq. (2) and Fig. 3:

        O_i = ReLU(Q_i)(Σ_j ReLU(K_j)ᵀ V_j) / (ReLU(Q_i) Σ_j ReLU(K_j)ᵀ)

    run on the q, k, v tokens and, for each s in `scales`, on tokens aggregated by an s×s depthwise conv and a
    1×1 conv grouped per head (q, k, v kept separate); the heads of all scales are concatenated and projected."""

    def __init__(self, dim: int, *, num_heads: int = 4, scales: tuple[int, ...] = (5,), **base) -> None:
        super().__init__(dim, num_heads, kernel_size=None, **base)
        self.scales = tuple(odd_kernel(self, "scales", s) for s in scales)
        self.aggregations = nn.ModuleList(
            nn.Sequential(nn.Conv2d(3 * dim, 3 * dim, s, padding=s // 2, groups=3 * dim, bias=False),
                          nn.Conv2d(3 * dim, 3 * dim, 1, groups=3 * num_heads, bias=False)) for s in self.scales)
        self.out = nn.Conv2d((1 + len(self.scales)) * dim, dim, 1)

    def _mix(self, x: Tensor) -> Tensor:
        tokens = self.projections(x)
        outputs = []
        for qkv in [tokens, *(aggregate(tokens) for aggregate in self.aggregations)]:
            q, k, v = (to_heads(t, self.num_heads) for t in qkv.chunk(3, dim=1))
            outputs.append(from_heads(self.normalized(F.relu(q), F.relu(k), v), x))
        return self.out(torch.cat(outputs, dim=1))


@register(
    name="agent_attention",
    family="attention",
    layout="grid",
    paper="Agent Attention: On the Integration of Softmax and Linear Attention",
    arxiv="2312.08874",
    impls=("reference", "sdpa"),
    causal="never",
    state="none",
    time_complexity="N n D",
    memory_complexity="N n",
    spatial_dims=(2,),
    summary="Agent attention: n agent tokens pooled from the queries aggregate K, V by softmax, then broadcast to "
            "every query by a second softmax; + a 3×3 depthwise conv of V.",
)
class AgentAttention(_GridHeads):
    """Agent attention (Han et al., arXiv 2312.08874), eq. (3)-(4):

        A = Pool(Q)  (n = `agent_size`² agents, adaptive average pooling of the query map)
        V_A = softmax(A Kᵀ/√d) V,      O = softmax(Q Aᵀ/√d) V_A + DWC(V)

    linear in N = h·w for a fixed n (the paper's agent position biases are left out)."""

    def __init__(self, dim: int, *, num_heads: int = 4, agent_size: int = 7, kernel_size: int = 3, **base) -> None:
        super().__init__(dim, num_heads, kernel_size=kernel_size, **base)
        self.agent_size = self._positive_int("agent_size", agent_size)

    def _mix(self, x: Tensor) -> Tensor:
        q, k, v = self.projections(x).chunk(3, dim=1)
        agents = to_heads(F.adaptive_avg_pool2d(q, self.agent_size), self.num_heads)
        q, k, values = (to_heads(t, self.num_heads) for t in (q, k, v))
        impl = "reference" if self.impl == "reference" else "sdpa"
        agent_values = softmax_attention(agents, k, values, causal=False, impl=impl)
        o = softmax_attention(q, agents, agent_values, causal=False, impl=impl)
        return self.out(from_heads(o, x) + self.local(v))
