"""`python -m tokenmix.bench.linear_attention_targets`: the report's structure at tiny sizes (no assertion on a
wall-clock time: benchmarks are not tests), and the flags."""

from __future__ import annotations

import re

import tokenmix.bench.linear_attention_targets as targets

TINY = targets.Sizes(batch=1, dim=16, heads=2, ratio_length=16, forward_lengths=(8, 16), crossover_length=8,
                     long_length=16, step_positions=(4, 16), efficiency_length=16, chunk_sizes=(4, 8), matmul_size=64)


def test_report_has_every_target_with_a_positive_value():
    report = targets.run(TINY, threads=1, min_run_time=0.001)
    lines = report.splitlines()
    header = lines.index("| target | measured | goal | result | detail |")
    rows = []
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    members = targets.MEMBERS
    # per member: chunk vs recurrent, forward from the crossover length, forward at the longest length, step, efficiency
    assert len(rows) == 5 * len(members)
    for target, measured, goal, result, detail in rows:
        number = re.fullmatch(r"(\d+\.\d+(?:e[-+]\d+)?)(×|%)", measured)
        assert number, measured
        assert float(number.group(1)) > 0
        assert result in ("pass", "fail") and goal and detail
        assert any(target.endswith(f": {member}") for member in members)
    assert sum("chunk vs recurrent, fwd+bwd, L=16" in row[0] for row in rows) == len(members)
    assert sum("step at position 16 / at 4" in row[0] for row in rows) == len(members)
    # the forward times and the efficiency per chunk size follow the targets
    assert "| forward, ms | 8 | 16 |" in report
    assert "| chunk efficiency (% of fp32 matmul) | C=4 | C=8 |" in report
    assert "fp32 matmul" in lines[0] and "load average" in lines[0]


def test_quick_flag_selects_small_sizes(monkeypatch, capsys):
    seen = {}

    def fake_run(sizes, *, threads, min_run_time):
        seen.update(sizes=sizes, threads=threads, min_run_time=min_run_time)
        return "report\n"

    monkeypatch.setattr(targets, "run", fake_run)
    targets.main(["--quick", "--threads", "1"])
    assert capsys.readouterr().out == "report\n"
    assert seen["sizes"] == targets.Sizes.quick() and seen["threads"] == 1 and seen["min_run_time"] == 0.05
    targets.main([])
    full = seen["sizes"]
    assert (full.batch, full.dim, full.heads, full.ratio_length, full.long_length) == (2, 512, 8, 4096, 16384)
    assert full.step_positions == (1024, 16384) and full.crossover_length == 2048
