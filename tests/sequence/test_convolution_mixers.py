"""Hand-checked cases of the convolutional and spectral mixers: each mixer's operator written out directly,
and the properties its paper states (normalized kernels, receptive fields, ZOH discretization)."""

from __future__ import annotations

import math

import torch

import tokenmix
from tokenmix.ops.kernels import ModalKernel, MultiscaleKernel


def _double(name: str, **options):
    return tokenmix.create(name, 6, **options).double()


def test_hyena_is_the_gated_recurrence_of_its_filters():
    mixer = _double("hyena", order=2, short_kernel=2, filter_width=8, positional_bands=2)
    x = torch.randn(1, 5, 6, dtype=torch.float64)
    u = mixer.in_proj(x)[0].T                                                  # (3D, L)
    w = mixer.short.weight[:, 0].flip(-1)                                     # tap j = lag j
    u = torch.stack([w[:, 0] * u[:, t] + (w[:, 1] * u[:, t - 1] if t else 0) for t in range(5)], 1)
    u = u + mixer.short.bias[:, None]
    v, x1, x2 = u.split(6)
    h = mixer.filters(5)
    z = v
    for n, gate in enumerate((x1, x2)):
        conv = torch.stack([sum(h[n, :, j] * z[:, t - j] for j in range(t + 1)) for t in range(5)], 1)
        z = gate * (conv + mixer.skip[n, :, None] * z)
    torch.testing.assert_close(mixer(x)[0], mixer.out(z.T))


def test_hyena_streams_exactly_past_its_kernel_length():
    mixer = _double("hyena", kernel_length=4, filter_width=8)
    x = torch.randn(2, 11, 6, dtype=torch.float64)
    y, state = mixer(x[:, :3], return_state=True)
    outputs = [y]
    for t in range(3, 11):
        y_t, state = mixer.step(x[:, t], state)
        outputs.append(y_t[:, None])
    torch.testing.assert_close(torch.cat(outputs, 1), mixer(x), rtol=1e-10, atol=1e-10)
    assert state["history"].shape[-1] == 11


def test_modal_kernel_is_the_zoh_impulse_response():
    kernel = ModalKernel(1, state_size=2).double()
    with torch.no_grad():
        kernel.log_dt.fill_(math.log(0.1))
        kernel.log_decay.fill_(math.log(0.5))
        kernel.frequency.fill_(2.0)
        kernel.output.copy_(torch.tensor([[[0.3, -0.7]]]))
    a, c, dt = complex(-0.5, 2.0), complex(0.3, -0.7), 0.1
    a_bar = torch.exp(torch.tensor(dt * a, dtype=torch.complex128))
    b_bar = (a_bar - 1) / a
    want = torch.stack([2 * (c * b_bar * a_bar ** t).real for t in range(6)])
    torch.testing.assert_close(kernel(6)[0], want)


def test_s4d_recurrence_equals_its_convolution():
    mixer = _double("s4d", state_size=8, impl="recurrent")
    fast = _double("s4d", state_size=8, impl="fft")
    fast.load_state_dict(mixer.state_dict())
    x = torch.randn(2, 13, 6, dtype=torch.float64)
    torch.testing.assert_close(mixer(x), fast(x), rtol=1e-10, atol=1e-10)


def test_sgconv_kernel_scales_and_norm():
    kernel = MultiscaleKernel(3, kernel_length=100, sub_kernel=8).double()
    assert kernel.scales == 5 and kernel.length == 8 * 2 ** 4  # 8·16 = 128 ≥ 100
    k = kernel(kernel.length)
    torch.testing.assert_close(k.norm(dim=-1), torch.ones(3, dtype=torch.float64))
    # the third sub-kernel (i = 2) is upsampled ×2 and scaled by α² before normalization
    raw = torch.cat([0.5 ** i * torch.nn.functional.interpolate(w[None], scale_factor=2 ** max(i - 1, 0),
                                                                 mode="linear")[0] for i, w in
                     enumerate(kernel.sub_kernels)], -1)
    torch.testing.assert_close(k, raw / raw.norm(dim=-1, keepdim=True))


def test_lightconv_kernels_are_normalized_and_shared_per_head():
    mixer = _double("lightconv", num_heads=2, kernel_size=3)
    k = mixer.kernel()
    torch.testing.assert_close(k.sum(-1), torch.ones(6, dtype=torch.float64))
    assert torch.equal(k[0], k[2]) and torch.equal(k[3], k[5]) and not torch.equal(k[0], k[3])


def test_dynamicconv_with_a_constant_kernel_is_lightconv():
    dynamic = _double("dynamicconv", num_heads=2, kernel_size=3)
    light = _double("lightconv", num_heads=2, kernel_size=3)
    with torch.no_grad():
        dynamic.predict.weight.zero_()                 # softmax of zeros: uniform 1/3 kernel everywhere
        light.weight.zero_()
        light.in_proj.load_state_dict(dynamic.in_proj.state_dict())
        light.out.load_state_dict(dynamic.out.state_dict())
    x = torch.randn(2, 7, 6, dtype=torch.float64)
    torch.testing.assert_close(dynamic(x), light(x))


def test_lightconv_encoder_form_is_a_centered_window():
    mixer = _double("lightconv", num_heads=2, kernel_size=4, causal=False)       # ahead = ⌊(4-1)/2⌋ = 1 token
    x = torch.randn(2, 6, 6, dtype=torch.float64)
    u = torch.nn.functional.glu(mixer.in_proj(x), dim=-1)                       # (B, L, D)
    k = mixer.kernel()                                                          # (D, 4), tap j = lag j - 1
    want = torch.stack([sum(k[:, j] * u[:, i + 1 - j] for j in range(4) if 0 <= i + 1 - j < 6)
                        for i in range(6)], 1)
    torch.testing.assert_close(mixer(x), mixer.out(want))


def test_dynamicconv_encoder_form_is_a_centered_window():
    mixer = _double("dynamicconv", num_heads=2, kernel_size=3, causal=False)    # ahead = 1 token
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    u = torch.nn.functional.glu(mixer.in_proj(x), dim=-1)
    w = mixer.predict(u).unflatten(-1, (2, 3)).softmax(-1).repeat_interleave(3, dim=2)   # (B, L, D, 3)
    want = torch.stack([sum(w[:, i, :, j] * u[:, i + 1 - j] for j in range(3) if 0 <= i + 1 - j < 5)
                        for i in range(5)], 1)
    torch.testing.assert_close(mixer(x), mixer.out(want))


def test_receptive_fields_of_the_dilated_mixers():
    cases = {"multires_conv": (dict(depth=3, kernel_size=2), 8), "bytenet": (dict(num_blocks=3, kernel_size=3), 15)}
    for name, (options, field) in cases.items():
        mixer = _double(name, **options)
        x = torch.randn(1, 20, 6, dtype=torch.float64)
        changed = x.clone()
        changed[:, 0] += 1.0
        moved = (mixer(x) - mixer(changed)).abs().amax(-1)[0] > 1e-12
        assert moved[0] and not moved[field:].any(), name  # position 0 reaches no output past its field
    # MultiresConv is linear before its GELU, so its field's edge is reached exactly
    mixer = _double("multires_conv", depth=3, kernel_size=2)
    x = torch.randn(1, 20, 6, dtype=torch.float64)
    changed = x.clone()
    changed[:, 0] += 1.0
    assert ((mixer(x) - mixer(changed)).abs().amax(-1)[0] > 1e-12)[7]


def test_fnet_of_an_impulse_is_all_ones():
    mixer = _double("fnet")
    assert not list(mixer.parameters())                                       # the paper's operator has none
    x = torch.zeros(1, 5, 6, dtype=torch.float64)
    x[0, 0, 0] = 1.0
    for impl in ("reference", "fft"):
        mixer.impl = impl
        torch.testing.assert_close(mixer(x), torch.ones_like(x))
    x = torch.randn(1, 5, 6, dtype=torch.float64)
    mixer.impl = "reference"
    torch.testing.assert_close(mixer(x), torch.fft.fftn(x.to(torch.complex128), dim=(1, 2)).real)


def test_token_mlp_short_input_is_zero_padded():
    mixer = _double("token_mlp", max_length=8, hidden_dim=4)
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    padded = torch.cat([x, torch.zeros(2, 3, 6, dtype=torch.float64)], 1)
    torch.testing.assert_close(mixer(x), mixer(padded)[:, :5])


def test_modal_sum_blocks_equal_the_full_vandermonde(monkeypatch):
    from tokenmix.ops import kernels
    weights = torch.randn(2, 3, 4, dtype=torch.complex128)
    dt_a = torch.complex(-torch.rand(3, 4), 3 * torch.randn(3, 4)).to(torch.complex128) * 0.1
    t = torch.arange(23, dtype=torch.float64)
    want = 2 * torch.einsum("bcn,cnt->bct", weights, torch.exp(dt_a[..., None] * t)).real
    for block in (1, 5, 23, 64):
        monkeypatch.setattr(kernels, "MODAL_CHUNK", block)
        torch.testing.assert_close(kernels.modal_sum(weights, dt_a, 23), want, rtol=1e-12, atol=1e-12)


def test_hyena_filter_cache_never_serves_stale_taps():
    mixer = _double("hyena", filter_width=8)
    with torch.no_grad():
        first = mixer.filters(10).clone()
        torch.testing.assert_close(mixer.filters(4), first[..., :4])     # a prefix of the cached filter
        mixer.filter.ffn[0].weight.add_(0.5)                               # an in-place update of the weights
        changed = mixer.filters(10)
    assert not torch.allclose(changed, first)
    torch.testing.assert_close(changed, mixer.filters(10).detach())
    torch.testing.assert_close(mixer.filters(7), mixer.filter._filter(7).unflatten(0, (2, 6)))
