"""ops.conv: every impl equals the reference sum over taps, forward and backward, at awkward sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokenmix import MixerInputError
from tokenmix.ops.conv import conv

CASES = [
    # (channels in, channels out, groups, spatial, kernel, dilation)
    (4, 4, 4, (7, 9), (3, 3), 1),      # depthwise
    (4, 4, 4, (7, 9), (5, 3), 2),      # depthwise, dilated, rectangular kernel
    (4, 6, 2, (7, 9), (3, 5), 1),      # grouped
    (3, 5, 1, (7, 9), (3, 3), 1),      # dense
    (4, 4, 4, (1, 1), (3, 3), 1),      # 1×1 image
    (4, 4, 4, (7, 9), (1, 1), 1),      # 1×1 kernel
    (4, 4, 4, (5, 6), (13, 11), 1),    # kernel larger than the image
    (4, 8, 4, (5, 6), (4, 2), 1),      # even kernels, channel multiplier 2
    (2, 2, 2, (9,), (7,), 1),          # 1D
    (2, 4, 1, (3, 4, 5), (3, 3, 3), 1),  # 3D dense
]


@pytest.mark.parametrize("impl", ["direct", "fft", "auto"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_impl_equals_reference(case, impl):
    c_in, c_out, groups, spatial, kernel, dilation = case
    torch.manual_seed(0)
    x = torch.randn(2, c_in, *spatial, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c_out, c_in // groups, *kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c_out, dtype=torch.float64, requires_grad=True)
    y_ref = conv(x, w, b, groups=groups, dilation=dilation, impl="reference")
    y = conv(x, w, b, groups=groups, dilation=dilation, impl=impl)
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-10)
    g = torch.randn_like(y)
    grads_ref = torch.autograd.grad(y_ref, (x, w, b), g)
    grads = torch.autograd.grad(y, (x, w, b), g)
    for a, r in zip(grads, grads_ref):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-10)


def test_reference_matches_pytorch_same_padding():
    x = torch.randn(1, 3, 7, 9, dtype=torch.float64)
    w = torch.randn(3, 1, 4, 5, dtype=torch.float64)
    expected = F.conv2d(x, w, padding="same", dilation=2, groups=3)
    torch.testing.assert_close(conv(x, w, groups=3, dilation=2, impl="reference"), expected)


@pytest.mark.parametrize("impl", ["reference", "direct", "fft"])
def test_half_precision_computed_in_float32(impl):
    x = torch.randn(1, 4, 6, 7)
    w = torch.randn(4, 1, 5, 5)
    y = conv(x.bfloat16(), w.bfloat16(), groups=4, impl=impl)
    assert y.dtype == torch.bfloat16
    exact = conv(x.bfloat16().float(), w.bfloat16().float(), groups=4, impl="reference")
    # computed in float32, only the final rounding to bf16 remains: at most half a bf16 step, 2^-9 ≈ 0.2% relative
    # (a bf16 accumulation over 25 taps would be off by several steps)
    torch.testing.assert_close(y.float(), exact, rtol=2 ** -8, atol=2 ** -8 * exact.abs().max().item())


def test_bad_inputs():
    x = torch.randn(1, 4, 6, 7)
    with pytest.raises(MixerInputError, match="impl"):
        conv(x, torch.randn(4, 1, 3, 3), groups=4, impl="nope")
    with pytest.raises(MixerInputError, match="groups"):
        conv(x, torch.randn(4, 2, 3, 3), groups=4)
    with pytest.raises(MixerInputError, match="weight"):
        conv(x, torch.randn(4, 1, 3), groups=4)
    with pytest.raises(MixerInputError, match="floating"):
        conv(x.long(), torch.randn(4, 1, 3, 3), groups=4)
    with pytest.raises(MixerInputError, match="bias"):
        conv(x, torch.randn(4, 1, 3, 3), torch.randn(3), groups=4)


def test_crossover_bench_runs_and_reads_its_rows():
    from tokenmix.bench.conv_crossover import crossover, measure

    rows = measure(sizes=(8,), kernels=(3, 5), channels=2, repeats=1)
    assert [(r["size"], r["kernel"]) for r in rows] == [(8, 3), (8, 5)]
    from tokenmix.ops.conv import prefers_fft

    modelled = measure(sizes=(8,), kernels=(3, 5), channels=2, repeats=1, cost_model=True)  # the cost model's pick
    assert [r["auto"] for r in modelled] == ["fft" if prefers_fft((8, 8), (k, k)) else "direct" for k in (3, 5)]
    for r in rows:  # the ratio is the picked form's time over the faster one's: 1 when auto picked the faster
        assert r["auto"] in ("direct", "fft")
        assert r["auto_ratio"] == r[r["auto"]] / min(r["direct"], r["fft"]) >= 1.0
    assert crossover([{"size": 8, "kernel": 3, "direct": 1, "fft": 2}, {"size": 8, "kernel": 5, "direct": 2, "fft": 1}]) == 5
    assert crossover([{"size": 8, "kernel": 3, "direct": 1, "fft": 2}]) is None


def test_auto_rule_follows_the_measured_crossovers():
    from tokenmix.ops.conv import prefers_fft

    # docs/performance.md (issue 7): direct wins below the crossover kernel, the FFT above it, and the crossover
    # falls with resolution (k = 23 is direct at 128 px but FFT at 256 px)
    assert not prefers_fft((32, 32), (7, 7)) and not prefers_fft((256, 256), (7, 7))
    assert not prefers_fft((128, 128), (23, 23)) and prefers_fft((256, 256), (23, 23))
    assert prefers_fft((64, 64), (31, 31)) and prefers_fft((256, 256), (51, 51))
    assert prefers_fft((4096,), (4096,)) and not prefers_fft((4096,), (3,))    # the same rule in 1D


def test_autotune_times_both_forms_and_keeps_the_faster(monkeypatch):
    import time

    from tokenmix.ops import conv_autotune

    calls = {"slow": 0, "fast": 0}

    def slow():
        calls["slow"] += 1
        time.sleep(0.004)

    def fast():
        calls["fast"] += 1

    forms = {"slow": slow, "fast": fast}
    conv_autotune.forget()
    assert conv_autotune.choose(("key",), forms, torch.device("cpu")) == "fast"
    assert calls == {"slow": 1 + conv_autotune.ROUNDS, "fast": 1 + conv_autotune.ROUNDS}  # warm-up, then rounds
    assert conv_autotune.choose(("key",), forms, torch.device("cpu")) == "fast"
    assert calls["slow"] == 1 + conv_autotune.ROUNDS                                      # remembered: not timed again
    monkeypatch.setattr(conv_autotune, "_choices", {})   # a new process on the same machine: read, not timed
    assert conv_autotune.choose(("key",), forms, torch.device("cpu")) == "fast"
    assert calls["slow"] == 1 + conv_autotune.ROUNDS
    conv_autotune.forget()                                # forgotten on disk too: the next choice is timed
    assert conv_autotune.choose(("key",), forms, torch.device("cpu")) == "fast"
    assert calls["slow"] == 2 * (1 + conv_autotune.ROUNDS)
    conv_autotune.forget()


def test_autotune_keeps_choices_per_machine(monkeypatch, tmp_path):
    import json

    from tokenmix.ops import conv_autotune

    monkeypatch.setenv("TOKENMIX_CACHE", str(tmp_path))
    conv_autotune.forget()
    forms = {"direct": lambda: None, "fft": lambda: None}
    monkeypatch.setattr(conv_autotune, "_fastest", lambda forms, device: "fft")
    assert conv_autotune.choose(("key",), forms, torch.device("cpu")) == "fft"
    stored = json.loads((tmp_path / conv_autotune.FILE_NAME).read_text())
    assert stored == {conv_autotune._machine_prefix() + repr(("key",)): "fft"}
    assert f"torch {torch.__version__}" in next(iter(stored))
    # a choice kept on another machine is not this machine's: it is measured here, and the other one stays
    other = {"Another CPU | 64 cores | torch 0.0 | " + repr(("key",)): "direct"}
    (tmp_path / conv_autotune.FILE_NAME).write_text(json.dumps(other))
    monkeypatch.setattr(conv_autotune, "_choices", {})
    monkeypatch.setattr(conv_autotune, "_fastest", lambda forms, device: "direct")
    assert conv_autotune.choose(("key",), forms, torch.device("cpu")) == "direct"
    conv_autotune.forget()
    assert json.loads((tmp_path / conv_autotune.FILE_NAME).read_text()) == other
    # a file cut short, or a cache folder that cannot be written, measures and goes on
    (tmp_path / conv_autotune.FILE_NAME).write_text('{"cut')
    assert conv_autotune.choose(("other key",), forms, torch.device("cpu")) == "direct"
    monkeypatch.setenv("TOKENMIX_CACHE", "/proc/no-such-folder")
    assert conv_autotune.choose(("third key",), forms, torch.device("cpu")) == "direct"
    conv_autotune.forget()


def test_auto_runs_the_measured_form(monkeypatch):
    from tokenmix.ops import conv_autotune
    from tokenmix.ops.conv import conv

    x, w = torch.randn(1, 3, 9, 7), torch.randn(3, 1, 5, 5)
    monkeypatch.setattr(conv_autotune, "_enabled", None)
    monkeypatch.delenv("TOKENMIX_CONV_AUTOTUNE", raising=False)
    for measured in ("direct", "fft"):  # the measurement's verdict, whichever form it is, is the one that runs
        monkeypatch.setattr(conv_autotune, "_fastest", lambda forms, device, measured=measured: measured)
        conv_autotune.forget()
        got = conv(x, w, groups=3, impl="auto")  # measured by default
        assert conv_autotune.choices() == {conv_autotune.problem_key(x, w, 3, 1): measured}
        assert torch.equal(got, conv(x, w, groups=3, impl=measured))
    conv_autotune.forget()
    conv_autotune.enable(False)
    conv(x, w, groups=3, impl="auto")     # off: the cost model decides and nothing is measured or remembered
    assert conv_autotune.choices() == {}
    with conv_autotune.on():
        conv(x, w, groups=3, impl="auto")
    assert list(conv_autotune.choices().values()) == ["fft"]
    assert not conv_autotune.enabled()  # `on()` restores the setting it found
    conv_autotune.forget()


def test_autotune_follows_the_environment(monkeypatch):
    from tokenmix.ops import conv_autotune

    monkeypatch.setattr(conv_autotune, "_enabled", None)
    monkeypatch.delenv("TOKENMIX_CONV_AUTOTUNE", raising=False)
    assert conv_autotune.enabled()          # on by default
    for value, expected in (("1", True), ("0", False), ("off", False)):
        monkeypatch.setattr(conv_autotune, "_enabled", None)
        monkeypatch.setenv("TOKENMIX_CONV_AUTOTUNE", value)
        assert conv_autotune.enabled() is expected


def test_autotune_measures_outside_a_flop_counter_and_not_while_tracing(monkeypatch):
    from torch.utils.flop_counter import FlopCounterMode

    from tokenmix.ops import conv_autotune
    from tokenmix.ops.conv import conv, prefers_fft

    x, w = torch.randn(1, 4, 12, 12), torch.randn(4, 1, 5, 5)
    monkeypatch.setattr(conv_autotune, "_enabled", True)
    conv_autotune.forget()
    with FlopCounterMode(display=False) as first:     # the first call measures both forms
        conv(x, w, groups=4, impl="auto")
    picked = conv_autotune.choices()[conv_autotune.problem_key(x, w, 4, 1)]
    with FlopCounterMode(display=False) as alone:
        conv(x, w, groups=4, impl=picked)
    assert first.get_total_flops() == alone.get_total_flops()   # the counter saw one call of the picked form
    conv_autotune.forget()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)   # tracing: the cost model, nothing kept
    got = conv(x, w, groups=4, impl="auto")
    modelled = "fft" if prefers_fft((12, 12), (5, 5)) else "direct"
    assert torch.equal(got, conv(x, w, groups=4, impl=modelled)) and conv_autotune.choices() == {}
