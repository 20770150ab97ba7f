"""Effective receptive fields: a convolution's ERF is its kernel footprint; a causal mixer never looks ahead."""

import pytest
import torch

import tokenmix
from tokenmix.analysis.receptive_field import (
    effective_receptive_field, erf_rows, erf_table, mass_radius, mixer_receptive_field, plot_erf, support)
from tokenmix.models.vision import VisionModel


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_depthwise_convolution_reaches_exactly_its_kernel(kernel_size):
    erf = mixer_receptive_field("depthwise_conv", dim=4, size=15, kernel_size=kernel_size, impl="direct")
    reached = support(erf)
    assert reached.sum() == kernel_size ** 2
    rows, columns = reached.nonzero().T
    assert rows.min() == 7 - kernel_size // 2 and rows.max() == 7 + kernel_size // 2
    assert columns.min() == 7 - kernel_size // 2 and columns.max() == 7 + kernel_size // 2


def test_depthwise_erf_is_the_absolute_kernel_flipped_and_summed_over_channels():
    torch.manual_seed(0)
    mixer = tokenmix.create("depthwise_conv", 2, kernel_size=3, impl="reference").double()
    erf = effective_receptive_field(mixer, (2, 7, 7), samples=2, dtype=torch.float64)
    # y[c, i] = Σ_p w[c, p] x[c, i + p - 1]: ∂y(centre)/∂x(centre + p - 1) = w[c, p], input independent
    expected = mixer.weight.detach()[:, 0].abs().sum(0)
    torch.testing.assert_close(erf[2:5, 2:5], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["gla", "short_conv", "attention"])
def test_causal_sequence_mixer_has_zero_gradient_on_the_future(name):
    options = {"causal": True} if tokenmix.spec(name).causal == "optional" else {}
    erf = mixer_receptive_field(name, dim=16, size=4, **options)                 # 16 positions, centre 8
    assert erf.shape == (16,)
    assert torch.all(erf[9:] == 0)
    assert erf[:9].sum() > 0 and erf[8] > 0


@pytest.mark.parametrize("name", ["hyena", "s4d"])
def test_fft_convolution_mixers_reach_only_the_past_above_round_off(name):
    # their FFT convolution leaks round-off into the future; the support ignores it
    erf = mixer_receptive_field(name, dim=8, size=8)                            # 64 positions, centre 32
    assert erf.dtype == torch.float64
    assert float(erf[33:].max()) < 1e-14 * float(erf.max())   # round-off: a few float64 epsilons, not a tap
    erf32 = effective_receptive_field(tokenmix.create(name, 8), (64, 8), layout="sequence")
    assert erf32.dtype == torch.float32 and float(erf32[33:].max()) < 1e-6 * float(erf32.max())
    assert not support(erf)[33:].any() and support(erf)[:33].sum() > 16


def test_short_convolution_reaches_its_kernel_into_the_past():
    erf = mixer_receptive_field("short_conv", dim=8, size=4, kernel_size=4)
    assert support(erf).nonzero().flatten().tolist() == [5, 6, 7, 8]


def test_mass_radius_of_hand_made_maps():
    erf = torch.zeros(5, 5)
    erf[2, 2] = 1.0
    assert mass_radius(erf, 0.5) == 0.0
    erf[2, 3] = erf[2, 1] = erf[1, 2] = erf[3, 2] = 1.0      # 1/5 of the mass at distance 0, 4/5 at 1
    assert mass_radius(erf, 0.2) == 0.0 and mass_radius(erf, 0.21) == 1.0 and mass_radius(erf, 1.0) == 1.0
    assert mass_radius(torch.tensor([0.0, 1.0, 1.0, 2.0]), 0.75) == 1.0   # 1D: centre index 2


def test_backbone_receptive_field_grows_with_depth():
    torch.manual_seed(0)
    options = {"kernel_size": 3, "impl": "direct"}
    shallow = VisionModel("depthwise_conv", depths=(1,), dims=(8,), patch_size=1, mixer_options=options).double()
    deep = VisionModel("depthwise_conv", depths=(3,), dims=(8,), patch_size=1, mixer_options=options).double()
    sizes = [int(support(effective_receptive_field(m.forward_features, (3, 15, 15), samples=2)).sum())
             for m in (shallow, deep)]
    assert sizes == [9, 49]   # one 3×3 mixer; three: 7×7 (the 1×1 MLPs and LayerNorms stay per position)


def test_table_and_plots(tmp_path):
    rows = erf_rows(["depthwise_conv", "short_conv"], dim=8, size=9, samples=1)
    assert [row["mixer"] for row in rows] == ["depthwise_conv", "short_conv"]
    assert rows[0]["reached"] == pytest.approx(49 / 81)          # the default 7×7 kernel on a 9×9 grid
    table = erf_table(rows)
    assert table.count("\n") == 4 and "r(90%)" in table
    for name in ("depthwise_conv", "short_conv"):
        path = plot_erf(mixer_receptive_field(name, dim=4, size=9, samples=1), tmp_path / f"{name}.png")
        assert path.stat().st_size > 1000
