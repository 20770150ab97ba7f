"""`tokenmix speed`: parsing, the sweep's rows (resume, failures, modes, grids) and the report. Tiny shapes only,
and no assertion on a wall-clock time: benchmarks are not tests."""

from __future__ import annotations

import pytest
import torch
from rich.console import Console

import tokenmix.bench.speed as speed_module
from tokenmix.bench.machine import MachineLimits
from tokenmix.bench.speed import PointFailed, SpeedSettings, parse_count, parse_lengths, plan, sweep
from tokenmix.bench.speed_point import build_call
from tokenmix.bench.speed_report import load_series, terminal_report, write_speed_report
from tokenmix.bench.store import ResultsStore
from tokenmix.errors import MixerInputError

TINY = dict(lengths=(8, 16, 32), sizes=(4, 8), dim=16, heads=2, device="cpu", threads=1, min_run_time=0.005)


@pytest.fixture(autouse=True)
def _small_machine(monkeypatch):
    """The machine's limits at a size that costs nothing (the real defaults take about a second)."""
    real = speed_module.measure_machine

    def small(device, dtypes, **kwargs):
        return real(device, dtypes, threads=kwargs.get("threads"), min_run_time=0.005, matmul_size=64,
                    copy_bytes=1 << 16)

    monkeypatch.setattr(speed_module, "measure_machine", small)


@pytest.fixture
def store(tmp_path) -> ResultsStore:
    return ResultsStore(tmp_path / "results.sqlite")


def quiet() -> Console:
    return Console(file=open("/dev/null", "w"), width=200)


@pytest.mark.parametrize("text, expected", [
    ("512", 512), ("1k", 1024), ("16K", 16384), ("1m", 1 << 20), (" 3000 ", 3000)])
def test_parse_count(text, expected):
    assert parse_count(text) == expected


def test_parse_lengths():
    assert parse_lengths("512..16k") == (512, 1024, 2048, 4096, 8192, 16384)
    assert parse_lengths("256..4k") == (256, 512, 1024, 2048, 4096)
    assert parse_lengths("1k,3000,1k,512") == (512, 1024, 3000)
    assert parse_lengths("32..256") == (32, 64, 128, 256)
    assert parse_lengths("100..300") == (100, 200)
    for bad in ("", ",", "abc", "0", "-4", "4k..1k", "1.5k", "1k..x"):
        with pytest.raises(MixerInputError):
            parse_lengths(bad)


def test_settings_are_checked():
    with pytest.raises(MixerInputError, match="mode"):
        SpeedSettings(mode="backward")
    with pytest.raises(MixerInputError, match="dtype"):
        SpeedSettings(dtype="int8")
    with pytest.raises(MixerInputError, match="batch"):
        SpeedSettings(batch=0)
    with pytest.raises(MixerInputError, match="unknown mixer"):
        plan(SpeedSettings(mixers=("atention",), **TINY), torch.device("cpu"), 1)
    with pytest.raises(MixerInputError, match="unknown option"):
        plan(SpeedSettings(mixers=("gla",), options={"gla": {"chunk": 4}}, **TINY), torch.device("cpu"), 1)


def test_a_sweep_records_one_row_per_point(store):
    settings = SpeedSettings(mixers=("attention", "gla"), **TINY)
    outcome = sweep(settings, store, console=quiet(), progress=False)
    assert (outcome.measured, outcome.skipped, outcome.failed) == (6, 0, 0)
    assert outcome.machine.matmul_flops["float32"] > 0 and outcome.machine.bandwidth > 0
    rows = [store.get(key) for key in outcome.run_ids]
    assert all(row["status"] == "finished" and row["kind"] == "speed" for row in rows)
    first = rows[0]
    assert first["config"] == {"kind": "speed", "mixer": "attention", "options": {"num_heads": 2}, "dim": 16,
                               "heads": 2, "length": 8, "size": None, "spatial_dims": None, "mode": "fwd",
                               "dtype": "float32", "batch": 1, "device": "cpu",
                               "device_name": first["environment"]["device_name"], "threads": 1}
    assert first["environment"]["threads"] == 1 and first["environment"]["torch"] == torch.__version__
    for row in rows:
        metrics = row["metrics"]
        assert metrics["time_median_s"] > 0 and metrics["time_iqr_s"] >= 0 and metrics["measurements"] >= 1
        assert metrics["peak_memory_bytes"] > 0 and metrics["memory_method"] == "cpu-profiler"
        assert metrics["flops"] > 0 and metrics["matmul_fraction"] > 0
        assert metrics["machine"]["matmul_size"] == 64
    # the output of a forward (1 × L × 16 floats) is part of the peak
    assert all(row["metrics"]["peak_memory_bytes"] >= row["config"]["length"] * 16 * 4 for row in rows)
    assert torch.get_num_threads() >= 1


def test_a_sweep_run_again_skips_finished_points_and_resumes_an_interrupted_one(store, monkeypatch):
    settings = SpeedSettings(mixers=("linear_attention",), **TINY)
    real = speed_module.measure_point
    calls = []

    def interrupted_at_the_second(point, *args, **kwargs):
        calls.append(point.length)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(point, *args, **kwargs)

    monkeypatch.setattr(speed_module, "measure_point", interrupted_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        sweep(settings, store, console=quiet(), progress=False)
    statuses = {row["config"]["length"]: (row["status"], row["error"]) for row in store.rows(kind="speed")}
    assert statuses == {8: ("finished", None), 16: ("failed", "interrupted")}
    monkeypatch.setattr(speed_module, "measure_point", real)
    outcome = sweep(settings, store, console=quiet(), progress=False)
    assert (outcome.measured, outcome.skipped, outcome.failed) == (2, 1, 0)
    again = sweep(settings, store, console=quiet(), progress=False)
    assert (again.measured, again.skipped, again.machine) == (0, 3, None)  # nothing left: the machine is not timed
    assert len(store.rows(kind="speed")) == 3


def test_out_of_memory_is_recorded_and_the_sweep_goes_on(store, monkeypatch):
    real = speed_module.measure_point

    def gla_runs_out(point, *args, **kwargs):
        if point.mixer == "gla" and point.length == 16:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return real(point, *args, **kwargs)

    monkeypatch.setattr(speed_module, "measure_point", gla_runs_out)
    outcome = sweep(SpeedSettings(mixers=("gla", "attention"), **TINY), store, console=quiet(), progress=False)
    assert (outcome.measured, outcome.failed) == (4, 2)
    rows = {(r["config"]["mixer"], r["config"]["length"]): r for r in store.rows(kind="speed")}
    assert rows["gla", 16]["error"].startswith("out of memory")
    assert rows["gla", 32]["error"].startswith("not run: a shorter point (gla L=16) failed")
    assert all(rows["attention", n]["status"] == "finished" for n in (8, 16, 32))


def test_a_call_over_the_time_limit_fails_its_point(store):
    outcome = sweep(SpeedSettings(mixers=("attention",), max_seconds=1e-9, **{**TINY, "lengths": (8, 16)}), store,
                    console=quiet(), progress=False)
    errors = [store.get(key)["error"] for key in outcome.run_ids]
    assert errors[0].startswith("out of time: one call took") and errors[1].startswith("not run")


def test_a_predicted_time_over_the_limit_fails_before_running(store, monkeypatch):
    real = speed_module.measure_point

    def slow(point, *args, **kwargs):
        metrics = real(point, *args, **kwargs)
        return {**metrics, "time_median_s": 1.0 if point.length == 8 else 4.0}  # as if quadratic and slow

    monkeypatch.setattr(speed_module, "measure_point", slow)
    settings = SpeedSettings(mixers=("attention",), max_seconds=10.0, **{**TINY, "lengths": (8, 16, 32)})
    outcome = sweep(settings, store, console=quiet(), progress=False)
    last = store.get(outcome.run_ids[-1])
    assert last["status"] == "failed" and last["error"].startswith("out of time: predicted 16 s")


@pytest.mark.parametrize("mode", ["fwdbwd", "step"])
def test_modes(store, mode):
    settings = SpeedSettings(mixers=("attention", "gla", "fnet"), mode=mode, **{**TINY, "lengths": (8, 16)})
    outcome = sweep(settings, store, console=quiet(), progress=False)
    rows = [store.get(key) for key in outcome.run_ids]
    assert all(row["status"] == "finished" for row in rows)
    mixers = {row["config"]["mixer"] for row in rows}
    if mode == "step":
        assert mixers == {"attention", "gla"} and "fnet" in outcome.notes[0]
        # one token costs what one token costs: far fewer FLOPs than a forward over 16 tokens would
        assert all(row["metrics"]["flops"] < 16 * 6 * 16 * 16 for row in rows)
    else:
        assert mixers == {"attention", "gla", "fnet"}


def test_step_mode_prefills_and_times_one_token():
    settings = SpeedSettings(mixers=("attention",), mode="step", **TINY)
    point = plan(settings, torch.device("cpu"), 1)[0][-1]
    y, state = build_call(point, torch.device("cpu"))()
    assert y.shape == (1, 16) and state["key"].shape[2] == point.length  # L - 1 prefilled, then this token


def test_grid_mixers_sweep_sizes(store):
    outcome = sweep(SpeedSettings(mixers=("depthwise_conv",), **TINY), store, console=quiet(), progress=False)
    configs = [store.get(key)["config"] for key in outcome.run_ids]
    assert [(c["size"], c["spatial_dims"], c["length"]) for c in configs] == [(4, 2, 16), (8, 2, 64)]


def test_fixed_resolution_grid_mixers_are_built_for_each_size(store):
    # gmlp's token weights fit one resolution (a larger grid is refused): the sweep builds it per size
    outcome = sweep(SpeedSettings(mixers=("gmlp",), **TINY), store, console=quiet(), progress=False)
    rows = [store.get(key) for key in outcome.run_ids]
    assert [row["status"] for row in rows] == ["finished", "finished"]
    assert [row["config"]["options"]["resolution"] for row in rows] == [4, 8]


def test_point_failed_is_an_exception_with_its_reason():
    assert str(PointFailed("out of time: x")) == "out of time: x"


def test_report_tables_markdown_and_plot(store, tmp_path):
    outcome = sweep(SpeedSettings(mixers=("attention", "linear_attention", "depthwise_conv"), **TINY), store,
                    console=quiet(), progress=False)
    groups = load_series(store, outcome.run_ids)
    assert len(groups) == 2  # sequence mixers and grid mixers are compared among themselves
    console = Console(record=True, width=220)
    console.print(terminal_report(groups))
    text = console.export_text()
    for expected in ("time per call", "peak memory", "exponent (long L)", "useful GFLOP/s", "float32 matmul",
                     "attention vs linear_attention:", "4^2"):
        assert expected in text, expected
    paths = write_speed_report(store, tmp_path / "out")
    assert paths[0].name == "speed.md" and len(paths) == 3
    markdown = paths[0].read_text()
    assert "| attention |" in markdown and "![time and memory against length](speed-fwd" in markdown
    assert all(path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG" for path in paths[1:])


def test_the_speed_command_and_report_speed(tmp_path):
    from typer.testing import CliRunner

    from tokenmix.cli import app

    runner = CliRunner()
    database, out = tmp_path / "r.sqlite", tmp_path / "out"
    common = ["--db", str(database), "--out", str(out)]
    result = runner.invoke(app, ["speed", "--mixers", "attention,gla", "--lengths", "8..32", "--dim", "16",
                                 "--heads", "2", "--device", "cpu", "--threads", "1", "--min-run-time", "0.005",
                                 "-o", "gla.chunk_size=8", "--pairs", "attention:gla", "--no-progress", *common])
    assert result.exit_code == 0, result.output
    assert "6 points measured, 0 already finished, 0 failed" in result.output
    assert "crossover: attention vs gla" in result.output and "exponent (long L)" in result.output
    assert "gla (chunk_size=8)" in result.output
    assert (out / "speed.md").exists() and "<table>" in (out / "speed.html").read_text()
    rows = ResultsStore(database).rows(kind="speed")
    assert len(rows) == 6 and {r["config"]["options"].get("chunk_size") for r in rows} == {None, 8}

    result = runner.invoke(app, ["report", "--speed", *common])
    assert result.exit_code == 0, result.output
    assert "time per call" in result.output and "speed report written to" in result.output

    # --docs replaces its generated section and keeps the rest of the file
    docs = tmp_path / "performance.md"
    docs.write_text("# Performance\n\nhand-written text\n")
    for _ in range(2):
        result = runner.invoke(app, ["speed", "--mixers", "attention", "--lengths", "8..16", "--dim", "16", "--heads",
                                     "2", "--device", "cpu", "--threads", "1", "--min-run-time", "0.005",
                                     "--no-progress", "--docs", str(docs), *common])
        assert result.exit_code == 0, result.output
    text = docs.read_text()
    assert text.startswith("# Performance\n\nhand-written text\n") and text.count("generated by tokenmix speed") == 2
    assert "Regenerate with `tokenmix speed --mixers attention --lengths 8..16" in text and "| attention |" in text
    assert "\n### " in text and "\n# tokenmix speed" not in text  # headings demoted under the document's own

    for bad, fragment in ((["--mixers", "atention"], "unknown mixer"), (["--lengths", "4k..1k"], "range"),
                          (["--mode", "back"], "unknown mode"), (["-o", "chunk_size=8"], "mixer.key=value"),
                          (["--pairs", "attention"], "a:b")):
        result = runner.invoke(app, ["speed", *bad, *common])
        assert result.exit_code == 2 and result.output.startswith("error: ") and fragment in result.output, bad


def test_a_busy_machine_is_reported(monkeypatch):
    from tokenmix.bench import speed_point

    monkeypatch.setattr(speed_point.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(speed_point.os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    assert "busy: load average 2.0 on 2 CPUs" in speed_point.machine_is_busy(2)
    monkeypatch.setattr(speed_point.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert speed_point.machine_is_busy(2) is None


def test_flop_counts():
    from tokenmix.bench.machine import count_flops

    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    q = k = v = torch.randn(1, 2, 32, 8)
    full = 2 * (2 * 2 * 32 * 32 * 8)  # two products of a (32 × 8)(8 × 32)-sized attention per head
    sdpa = torch.nn.functional.scaled_dot_product_attention
    assert count_flops(lambda: sdpa(q, k, v)) == full
    assert count_flops(lambda: sdpa(q, k, v, is_causal=True)) == full * 33 // 64  # the lower triangle
    # a triangular solve (the delta rule's chunks): n(n - 1)/2 multiply-adds per right-hand side, either side
    triangle, right = torch.eye(5) + torch.randn(3, 5, 5).tril(-1), torch.randn(3, 5, 7)
    solve = torch.linalg.solve_triangular
    assert count_flops(lambda: solve(triangle, right, upper=False)) == 3 * 5 * 4 * 7
    assert count_flops(lambda: solve(triangle.mT, right.mT, upper=True, left=False)) == 3 * 5 * 4 * 7


def test_machine_limits_are_measured():
    from tokenmix.bench.machine import measure_machine

    limits = measure_machine("cpu", (torch.float32, torch.bfloat16), min_run_time=0.005, matmul_size=64,
                             copy_bytes=1 << 16)
    assert set(limits.matmul_flops) == {"float32", "bfloat16"} and all(v > 0 for v in limits.matmul_flops.values())
    assert limits.bandwidth > 0 and limits.as_dict()["matmul_size"] == 64


def test_all_means_every_registered_mixer():
    import tokenmix

    points, _ = plan(SpeedSettings(mixers=("all",), **{**TINY, "lengths": (8,), "sizes": (4,)}), torch.device("cpu"), 1)
    assert {point.mixer for point in points} == set(tokenmix.available())


def test_flop_counts_through_backward_and_modules_that_return_views_of_parameters():
    from tokenmix.bench.machine import count_flops

    layer = torch.nn.Linear(16, 8, bias=False)
    x = torch.randn(4, 16, requires_grad=True)
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 4 * 16 * 8  # forward, grad input, grad weight

    class Parameters(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(16, 8))

        def forward(self) -> torch.Tensor:
            # under no_grad a view of a parameter requires grad and has no grad_fn, which FlopCounterMode's module
            # hooks reject (laughing_hyena's modal filters return such views)
            return self.weight.view(16, 8)

    class User(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.parameters_of = Parameters()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.parameters_of()

    user = User()
    with torch.no_grad():
        assert count_flops(lambda: user(x)) == 2 * 4 * 16 * 8
