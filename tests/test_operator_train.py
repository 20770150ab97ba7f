"""The operator training script on the 2D tasks: presets, normalization, and errors at other resolutions."""

from __future__ import annotations

import json

import torch

from tokenmix.bench.operator_train import PRESETS, Normalized, main, train_operator


def test_darcy_training_runs_and_reports_errors_at_every_resolution():
    result = train_operator(task="darcy", resolution=5, solver_resolution=9, num_train=4, num_test=2, width=4,
                            depth=1, modes=2, epochs=2, batch_size=2, step_every=1, normalize=True,
                            eval_resolutions=(9,))
    assert result["task"] == "darcy" and set(result["test_relative_l2_at"]) == {"9"}
    assert result["coordinates"] == "nodes"  # the task's choice, passed to the model
    assert all(0 < result[key] < 10 for key in ("initial_test_relative_l2", "test_relative_l2"))


def test_navier_stokes_training_maps_input_times_to_output_times():
    result = train_operator(task="navier_stokes", resolution=8, solver_resolution=8, num_train=2, num_test=2,
                            width=4, depth=1, modes=2, epochs=1, batch_size=2, normalize=True)
    assert 0 < result["test_relative_l2"] < 10


def test_normalized_model_decodes_to_the_target_statistics():
    inputs = 3 + 2 * torch.randn(8, 1, 6, 6)
    targets = 0.01 + 0.005 * torch.randn(8, 1, 6, 6)
    model = Normalized(torch.nn.Identity(), inputs, targets)
    # the identity maps normalized inputs to normalized outputs: decoding rescales them to the targets' statistics
    out = model(inputs)
    torch.testing.assert_close(out.mean(), targets.mean(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.std(), targets.std(), rtol=1e-4, atol=1e-6)


def test_cli_preset_with_overrides(capsys):
    assert PRESETS["darcy-paper"]["solver_resolution"] == 421 and PRESETS["darcy-paper"]["resolution"] == 85
    main(["--preset", "darcy-quick", "--resolution", "5", "--solver-resolution", "9", "--num-train", "2",
          "--num-test", "2", "--width", "4", "--depth", "1", "--modes", "2", "--epochs", "1",
          "--eval-resolutions"])
    result = json.loads(capsys.readouterr().out)
    assert result["resolution"] == 5 and result["normalize"] is True and result["test_relative_l2_at"] == {}
