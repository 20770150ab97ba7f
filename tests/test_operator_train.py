"""The operator training script on the 2D tasks: presets, normalization, and errors at other resolutions."""

from __future__ import annotations

import json

import pytest
import torch

from tokenmix import MixerInputError
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


def test_per_point_normalization_keeps_a_fixed_boundary_and_resamples_at_shared_nodes():
    generator = torch.Generator().manual_seed(0)
    inputs = 3 + 2 * torch.randn(16, 1, 9, 9, generator=generator)
    targets = torch.randn(16, 1, 9, 9, generator=generator)
    targets[..., 0, :] = targets[..., -1, :] = targets[..., :, 0] = targets[..., :, -1] = 0.0  # u = 0 on the boundary
    model = Normalized(torch.nn.Conv2d(1, 1, 1), inputs, targets, per_point=True)
    out = model(inputs)
    # where the targets never vary the decoded output is their mean, whatever the model says
    assert out[..., 0, :].abs().max() < 1e-4 and out[..., :, -1].abs().max() < 1e-4
    # the identity decodes to the targets' per-point statistics
    identity = Normalized(torch.nn.Identity(), targets, targets, per_point=True)
    torch.testing.assert_close(identity(targets), targets, rtol=1e-5, atol=1e-5)
    # at the 5 × 5 subgrid (every other node) the statistics are the subsampled ones, exactly
    mean, std = model._statistics("target", (5, 5))
    torch.testing.assert_close(mean, targets.mean(0, keepdim=True)[..., ::2, ::2], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(std, targets.std(0, keepdim=True).clamp(min=1e-5)[..., ::2, ::2], rtol=1e-6, atol=1e-6)
    assert model(inputs[..., ::2, ::2]).shape == (16, 1, 5, 5)


def test_per_point_normalization_trains_and_bad_values_raise():
    # 64 examples: with a handful, a point where every coefficient sample is equal has a floored input std (1e-5),
    # and an unseen value there is scaled by 1e5 (a small-sample effect the paper's 1000 examples do not have)
    result = train_operator(task="darcy", resolution=5, solver_resolution=9, num_train=64, num_test=2, width=4,
                            depth=1, modes=2, epochs=1, batch_size=16, normalize="point", eval_resolutions=(9,))
    assert result["normalize"] == "point" and 0 < result["test_relative_l2_at"]["9"] < 10
    with pytest.raises(MixerInputError, match="normalize"):
        train_operator(task="darcy", resolution=5, solver_resolution=9, num_train=4, num_test=2, normalize="pixel")


def test_cli_preset_with_overrides(capsys):
    assert PRESETS["darcy-paper"]["solver_resolution"] == 421 and PRESETS["darcy-paper"]["resolution"] == 85
    main(["--preset", "darcy-quick", "--resolution", "5", "--solver-resolution", "9", "--num-train", "2",
          "--num-test", "2", "--width", "4", "--depth", "1", "--modes", "2", "--epochs", "1",
          "--eval-resolutions"])
    result = json.loads(capsys.readouterr().out)
    assert result["resolution"] == 5 and result["normalize"] is True and result["test_relative_l2_at"] == {}
    main(["--preset", "darcy-quick", "--resolution", "5", "--solver-resolution", "9", "--num-train", "2",
          "--num-test", "2", "--width", "4", "--depth", "1", "--modes", "2", "--epochs", "1",
          "--eval-resolutions", "--normalize", "point"])
    assert json.loads(capsys.readouterr().out)["normalize"] == "point"
    main(["--preset", "darcy-quick", "--resolution", "5", "--solver-resolution", "9", "--num-train", "2",
          "--num-test", "2", "--width", "4", "--depth", "1", "--modes", "2", "--epochs", "1",
          "--eval-resolutions", "--no-normalize"])
    assert json.loads(capsys.readouterr().out)["normalize"] is False


@pytest.mark.parametrize("preset", ["burgers-fast", "burgers-coarse"])
def test_the_coarse_burgers_presets_train_the_papers_model_coarser_than_they_evaluate(preset):
    fast, paper = PRESETS[preset], PRESETS["burgers-paper"]
    assert fast["resolution"] < min(fast["eval_resolutions"]) and max(fast["eval_resolutions"]) == 1024
    assert {key: fast[key] for key in ("width", "depth", "modes", "batch_size", "num_train")} == {
        key: paper[key] for key in ("width", "depth", "modes", "batch_size", "num_train")}  # the paper's model
    if preset == "burgers-coarse":  # and the paper's schedule
        assert (fast["epochs"], fast["step_every"]) == (paper["epochs"], paper["step_every"])


def test_the_fast_burgers_preset_runs_from_the_command_line_with_overrides(capsys):
    main(["--preset", "burgers-fast", "--resolution", "16", "--solver-resolution", "64", "--num-train", "4",
          "--num-test", "2", "--width", "4", "--depth", "1", "--modes", "2", "--epochs", "1",
          "--eval-resolutions", "32", "64"])
    result = json.loads(capsys.readouterr().out)
    assert result["resolution"] == 16 and result["step_every"] == 25 and set(result["test_relative_l2_at"]) == {
        "32", "64"}


TINY = dict(task="burgers", resolution=16, solver_resolution=64, num_train=12, num_test=4, width=6, depth=1, modes=3,
            epochs=4, batch_size=4, step_every=1, eval_resolutions=(32,), progress_every=1)


def test_a_killed_run_resumes_and_ends_where_the_uninterrupted_run_ends(tmp_path, monkeypatch, capsys):
    straight = train_operator(**TINY, checkpoint_every=0)          # no checkpoints: the uninterrupted reference
    calls = {"count": 0}
    step = torch.optim.Adam.step

    def step_then_die(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] > 7:                                       # 3 batches per epoch: dies inside epoch 3
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step_then_die)
    try:
        train_operator(**TINY, checkpoint_every=2, checkpoint_dir=tmp_path)
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(torch.optim.Adam, "step", step)
    assert len(list(tmp_path.glob("operator-*.safetensors"))) == 1
    resumed = train_operator(**TINY, checkpoint_every=2, checkpoint_dir=tmp_path)
    assert resumed["resumed_after_epoch"] == 2 and "resumed after epoch 2" in capsys.readouterr().err
    for key in ("train_relative_l2", "test_relative_l2", "test_relative_l2_at", "initial_test_relative_l2"):
        assert resumed[key] == straight[key], key                   # bit-identical, not merely close
    # the finished run is read back, not trained again
    again = train_operator(**TINY, checkpoint_every=2, checkpoint_dir=tmp_path)
    assert again["test_relative_l2"] == straight["test_relative_l2"] and "read_back_from" in again


def test_onecycle_schedule_steps_per_batch_and_resumes_exactly(tmp_path, monkeypatch):
    settings = dict(TINY, schedule="onecycle", max_lr=3e-3)
    straight = train_operator(**settings, checkpoint_every=0)
    assert straight["schedule"] == "onecycle" and straight["max_lr"] == 3e-3
    assert straight["test_relative_l2"] != train_operator(**TINY, checkpoint_every=0)["test_relative_l2"]
    step = torch.optim.Adam.step
    calls = {"count": 0}

    def step_then_die(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] > 10:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step_then_die)
    try:
        train_operator(**settings, checkpoint_every=1, checkpoint_dir=tmp_path)
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(torch.optim.Adam, "step", step)
    resumed = train_operator(**settings, checkpoint_every=1, checkpoint_dir=tmp_path)
    assert resumed["resumed_after_epoch"] == 3 and resumed["test_relative_l2"] == straight["test_relative_l2"]


def test_progress_lines_go_to_stderr(capsys):
    train_operator(**dict(TINY, epochs=2), checkpoint_every=0)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "epoch" in line]
    assert len(lines) == 2 and lines[-1].startswith("burgers fno: epoch 2/2") and " lr " in lines[-1]
    assert captured.out == ""


def test_a_finished_run_evaluates_new_resolutions_without_training_again(tmp_path, monkeypatch):
    trained = train_operator(**TINY, checkpoint_every=2, checkpoint_dir=tmp_path)

    def no_training(self, *args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(torch.optim.Adam, "step", no_training)
    again = train_operator(**dict(TINY, eval_resolutions=(32, 64)), checkpoint_every=2, checkpoint_dir=tmp_path)
    assert set(again["test_relative_l2_at"]) == {"32", "64"} and "read_back_from" in again
    assert again["test_relative_l2_at"]["32"] == trained["test_relative_l2_at"]["32"]  # the same weights
    assert again["test_relative_l2"] == trained["test_relative_l2"]
    # the same test draws solved again at the training data's grid: the same numbers; at a finer grid, new ones
    same = train_operator(**dict(TINY, eval_resolutions=(32,), eval_solver_resolution=64), checkpoint_dir=tmp_path)
    assert same["test_relative_l2_at"] == trained["test_relative_l2_at"] and same["eval_solver_resolution"] == 64
    finer = train_operator(**dict(TINY, eval_resolutions=(32, 128), eval_solver_resolution=128),
                           checkpoint_dir=tmp_path)
    assert set(finer["test_relative_l2_at"]) == {"32", "128"}
    assert all(0 < error < 10 for error in finer["test_relative_l2_at"].values())
    # the stored result now holds the last evaluation, so asking for it again reads it back
    assert train_operator(**dict(TINY, eval_resolutions=(32, 128), eval_solver_resolution=128),
                          checkpoint_dir=tmp_path)["test_relative_l2_at"] == finer["test_relative_l2_at"]


def test_a_run_saved_under_the_key_that_held_its_evaluations_is_found(tmp_path, monkeypatch):
    from tokenmix.bench import operator_train as module
    keyed = []
    real = module.operator_checkpoint_path
    monkeypatch.setattr(module, "operator_checkpoint_path", lambda settings, folder=None: keyed.append(settings)
                        or real(settings, folder))
    trained = train_operator(**TINY, checkpoint_dir=tmp_path)
    current, legacy = keyed[:2]
    assert legacy == {**current, "eval_resolutions": TINY["eval_resolutions"]}  # the old key: evaluations in it
    (saved,) = tmp_path.glob("operator-*.safetensors")
    assert saved == real(current, tmp_path)
    saved.replace(real(legacy, tmp_path))                               # as an older version left it
    again = train_operator(**TINY, checkpoint_dir=tmp_path)
    assert "read_back_from" in again and again["test_relative_l2"] == trained["test_relative_l2"]
    assert list(tmp_path.glob("operator-*.safetensors")) == [saved]     # moved to the current name


def test_gradient_clipping_bounds_each_step_and_keeps_the_unclipped_runs_key(tmp_path, monkeypatch):
    from tokenmix.bench import operator_train as module
    plain = train_operator(**TINY, checkpoint_every=0)
    assert plain["gradient_clip"] is None
    # a norm above every gradient's changes nothing; a tiny one changes the trajectory
    assert train_operator(**TINY, checkpoint_every=0, gradient_clip=1e9)["test_relative_l2"] == plain["test_relative_l2"]
    norms = []
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda parameters, limit: norms.append(
        float(clip(list(parameters), limit))) or None)
    clipped = train_operator(**TINY, checkpoint_every=0, gradient_clip=1e-3)
    assert clipped["gradient_clip"] == 1e-3 and clipped["test_relative_l2"] != plain["test_relative_l2"]
    assert len(norms) == TINY["epochs"] * -(-TINY["num_train"] // TINY["batch_size"]) and min(norms) > 1e-3
    keyed = []
    real = module.operator_checkpoint_path
    monkeypatch.setattr(module, "operator_checkpoint_path", lambda settings, folder=None: keyed.append(settings)
                        or real(settings, folder))
    train_operator(**TINY, checkpoint_dir=tmp_path)
    train_operator(**TINY, checkpoint_dir=tmp_path, gradient_clip=1.0)
    assert "gradient_clip" not in keyed[0] and keyed[2]["gradient_clip"] == 1.0   # [1], [3]: the legacy names
    with pytest.raises(MixerInputError, match="gradient_clip"):
        train_operator(**TINY, gradient_clip=0.0)
