"""Power-law fits, declared complexities and crossovers, on synthetic curves with known answers."""

from __future__ import annotations

import math

import pytest

import tokenmix
from tokenmix.bench.complexity import (DeclaredComplexity, PowerFit, contradiction, crossover, expected_complexity,
                                       fit_power_law, long_length_fit, parse_complexity)

LENGTHS = [256, 512, 1024, 2048, 4096]


def test_exact_power_law():
    fit = fit_power_law(LENGTHS, [3e-9 * n ** 2 for n in LENGTHS])
    assert fit.exponent == pytest.approx(2.0)
    assert fit.coefficient == pytest.approx(3e-9)
    assert fit.residual == pytest.approx(0.0, abs=1e-9)
    assert (fit.points, fit.shortest, fit.longest) == (5, 256, 4096)
    assert fit.predict(8192) == pytest.approx(3e-9 * 8192 ** 2)


def test_residual_measures_the_scatter():
    wobble = [1.1, 0.9, 1.1, 0.9, 1.1]
    fit = fit_power_law(LENGTHS, [n * w for n, w in zip(LENGTHS, wobble)])
    assert fit.exponent == pytest.approx(1.0, abs=0.05)
    assert 0.05 < fit.residual < 0.15


def test_fit_needs_two_lengths_and_skips_missing_points():
    assert fit_power_law([1024], [1.0]) is None
    assert fit_power_law([1024, 1024], [1.0, 2.0]) is None
    assert fit_power_law([], []) is None
    fit = fit_power_law([256, 512, 1024], [256.0, float("nan"), 1024.0])
    assert fit.points == 2 and fit.exponent == pytest.approx(1.0)
    assert fit_power_law([256, 512, 1024], [1.0, 0.0, None]) is None


def test_long_length_fit_sees_the_asymptote_that_fixed_costs_hide():
    lengths = [2 ** k for k in range(6, 14)]
    times = [1e-3 + 1e-9 * n ** 2 for n in lengths]  # a fixed cost, then quadratic
    everything = fit_power_law(lengths, times)
    tail = long_length_fit(lengths, times)
    assert tail.points == 4 and tail.shortest == 1024
    assert everything.exponent < 1.5 < tail.exponent < 2.0
    assert long_length_fit(lengths[:3], times[:3]).points == 3  # fewer than six points: at least three


@pytest.mark.parametrize("text, variable, expected", [
    ("L", "L", [(1, 0)]),
    ("L^2", "L", [(2, 0)]),
    ("L²", "L", [(2, 0)]),
    ("L log L", "L", [(1, 1)]),
    ("L·n_h", "L", [(1, 0)]),
    ("L k d²", "L", [(1, 0)]),
    ("L log L (fft) / L N (recurrent)", "L", [(1, 1), (1, 0)]),
    ("L (sdpa) / L^2 (reference)", "L", [(1, 0), (2, 0)]),
    ("N k^d", "N", [(1, 0)]),
    ("k d", "L", []),
])
def test_parse_complexity(text, variable, expected):
    parsed = parse_complexity(text, variable)
    assert [(d.power, d.log_power) for d in parsed] == expected


def test_every_registered_spec_declares_a_checkable_complexity():
    for name in tokenmix.available():
        spec = tokenmix.spec(name)
        variable = "N" if spec.layout == "grid" else "L"
        assert parse_complexity(spec.time_complexity, variable), (name, spec.time_complexity)
        assert parse_complexity(spec.memory_complexity, variable), (name, spec.memory_complexity)


def test_local_exponent_of_l_log_l():
    declared = DeclaredComplexity("L log L", 1.0, 1)
    expected = 1 + (math.log(math.log(4096)) - math.log(math.log(1024))) / (math.log(4096) - math.log(1024))
    assert declared.local_exponent(1024, 4096) == pytest.approx(expected)
    assert 1.1 < expected < 1.2
    assert declared.local_exponent(1024, 1024) == pytest.approx(1 + 1 / math.log(1024))
    assert DeclaredComplexity("L^2", 2.0).local_exponent(256, 4096) == 2.0


def test_expected_complexity_per_mode():
    time, memory = expected_complexity("L^2", "L", mode="fwd", state="growing")
    assert [d.power for d in time] == [2.0] and [d.power for d in memory] == [1.0]
    time, memory = expected_complexity("L", "L", mode="step", state="fixed")
    assert [d.power for d in time] == [0.0] and [d.power for d in memory] == [0.0]
    time, memory = expected_complexity("L^2", "L", mode="step", state="growing")
    assert [d.power for d in time] == [1.0] and [d.power for d in memory] == [1.0]


def _fit(exponent: float, points: int = 3) -> PowerFit:
    return PowerFit(exponent, 1.0, 0.01, points, 1024, 4096)


def test_contradiction_warns_only_when_no_alternative_fits():
    linear, quadratic = parse_complexity("L"), parse_complexity("L^2")
    assert "contradicts the declared 'L'" in contradiction(_fit(1.95), linear)
    assert contradiction(_fit(1.05), linear) is None
    assert contradiction(_fit(1.9), quadratic) is None
    assert contradiction(_fit(1.0), quadratic) is not None
    assert contradiction(_fit(1.15), parse_complexity("L log L")) is None
    assert contradiction(_fit(2.0), parse_complexity("L (sdpa) / L^2 (reference)")) is None
    assert contradiction(_fit(1.95, points=2), linear) is None  # two points say too little
    assert contradiction(None, linear) is None and contradiction(_fit(3.0), []) is None


def test_crossover_of_two_power_laws_is_found_exactly():
    quadratic = [1e-6 * n ** 2 for n in LENGTHS]  # equal to the linear one at L = 1000
    linear = [1e-3 * n for n in LENGTHS]
    found = crossover("attention", LENGTHS, quadratic, "gla", LENGTHS, linear)
    assert found.length == pytest.approx(1000.0)
    assert found.faster == "gla" and found.crossings == 1
    assert found.ratio_at_longest == pytest.approx(4.096)
    assert "gla is faster than attention from L ≈ 1,000" in found.describe()


def test_no_crossover_in_range():
    found = crossover("a", LENGTHS, [2.0 * n for n in LENGTHS], "b", LENGTHS, [1.0 * n for n in LENGTHS])
    assert found.length is None and found.faster == "b"
    assert found.ratio_at_longest == pytest.approx(2.0)
    assert "none in range" in found.describe()


def test_crossover_uses_common_lengths_and_the_last_sign_change():
    a = [1.0, 3.0, 1.0, 3.0]
    b = [2.0, 2.0, 2.0, 2.0]
    lengths = [256, 512, 1024, 2048]
    found = crossover("a", lengths, a, "b", lengths, b)
    assert found.crossings == 3 and 1024 < found.length < 2048 and found.faster == "b"
    assert crossover("a", [256], [1.0], "b", [512], [1.0]) is None
    partial = crossover("a", [256, 512, 1024], [1.0, 1.0, 4.0], "b", [512, 1024], [2.0, 2.0])
    assert partial.shortest == 512 and 512 < partial.length < 1024
