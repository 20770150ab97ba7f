"""Distillation error against order, through the library's own modal fit and Hyena.to_recurrent."""

import torch

import tokenmix
from tokenmix.analysis.distillation import distillation_curve, long_filters, plot_distillation


def test_hyena_curve_falls_with_order_and_matches_to_recurrent(tmp_path):
    torch.manual_seed(0)
    hyena = tokenmix.create("hyena", 8, kernel_length=64)
    rows = distillation_curve(hyena, [1, 4, 12], length=64)
    errors = [row["filter_error_median"] for row in rows]
    assert errors[0] > errors[1] > errors[2]
    assert all(0 <= row["output_error"] < 1.5 for row in rows) and rows[-1]["output_error"] < rows[0]["output_error"]
    direct = hyena.to_recurrent(4, 64).filter_error
    assert rows[1]["filter_error_max"] == float(direct.max())
    assert plot_distillation(rows, tmp_path / "curve.png").stat().st_size > 1000


def test_kernel_mixers_use_the_modal_fit():
    torch.manual_seed(1)
    mixer = tokenmix.create("sgconv", 4, kernel_length=64)
    assert long_filters(mixer, 64).shape == (4, 64)
    rows = distillation_curve(mixer, [2, 16], length=64)
    assert "output_error" not in rows[0]
    assert rows[1]["filter_error_median"] < rows[0]["filter_error_median"]
