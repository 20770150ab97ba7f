"""The operator table at a tiny size: every model trains, rows are resumable, the Markdown table lists them."""

from __future__ import annotations

import json

import torch

from tokenmix.bench.operator_table import main, markdown, run_table, table_models
from tokenmix.models.deeponet import DeepONetOnGrid

# normalized, so that an untrained model's error is O(1) against the small zero-mean Burgers targets
TINY = {
    "burgers": dict(task="burgers", resolution=16, solver_resolution=64, num_train=4, num_test=2, width=8, depth=1,
                    modes=3, epochs=1, step_every=1, batch_size=4, normalize=True, eval_resolutions=(32,)),
    "darcy": dict(task="darcy", resolution=5, solver_resolution=9, num_train=4, num_test=2, width=8, depth=1,
                  modes=2, epochs=1, step_every=1, batch_size=4, normalize=True, eval_resolutions=(9,)),
}


def test_every_model_trains_on_both_tasks_and_rows_are_skipped_when_done(tmp_path):
    models = table_models()
    assert {"fno", "lsm", "gno", "deeponet"} <= set(models)
    results = tmp_path / "rows.jsonl"
    rows = run_table(tasks=["burgers", "darcy"], models=models, results=results, protocols=TINY)
    assert len(rows) == 2 * len(models)
    for row in rows:
        assert 0 < row["test_relative_l2"] < 10 and len(row["test_relative_l2_at"]) == 1, row["mixer"]
        assert row["seconds_per_epoch"] > 0 and row["parameters"] > 0
    assert {row["coordinates"] for row in rows if row["task"] == "darcy"} == {"nodes"}
    before = results.read_text()
    run_table(tasks=["burgers", "darcy"], models=models, results=results, protocols=TINY)  # nothing left to do
    assert results.read_text() == before
    table = markdown(rows)
    assert table.count("| lsm | depth=1, levels=3") == 2 and "zero-shot @32" in table and "zero-shot @9" in table


def test_cli_writes_the_markdown_table(tmp_path, monkeypatch):
    monkeypatch.setattr("tokenmix.bench.operator_table.PROTOCOLS", TINY)
    main(["--tasks", "burgers", "--mixers", "fno", "deeponet", "--results", str(tmp_path / "r.jsonl"),
          "--markdown", str(tmp_path / "t.md")])
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [row["mixer"] for row in rows] == ["fno", "deeponet"]
    assert "| fno |" in (tmp_path / "t.md").read_text()


def test_deeponet_on_a_finer_grid_reads_the_same_sensors_and_answers_at_the_finer_points():
    torch.manual_seed(0)
    model = DeepONetOnGrid((5, 5), coordinates="nodes", basis_size=4, branch_widths=(8,), trunk_widths=(8,))
    fine = torch.randn(2, 1, 9, 9)
    coarse = fine[..., ::2, ::2]
    # nodes i/4 of the coarse grid are the even nodes i/8 of the fine one: same branch input, same values there
    torch.testing.assert_close(model(fine)[..., ::2, ::2], model(coarse))
    periodic = DeepONetOnGrid((4,), basis_size=4, branch_widths=(8,), trunk_widths=(8,))
    line = torch.randn(1, 1, 8)
    torch.testing.assert_close(periodic(line)[..., ::2], periodic(line[..., ::2]))
