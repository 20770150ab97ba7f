"""The operator backbone: any grid (or sequence) mixer, coordinates appended, and a tiny Burgers training run."""

from __future__ import annotations

import pytest
import torch

import tokenmix
from tokenmix import MixerInputError
from tokenmix.models.operator import OperatorModel, grid_coordinates
from tokenmix.tasks import create_task
from tokenmix.tasks.burgers import relative_l2


def test_coordinates_are_a_periodic_unit_grid():
    c = grid_coordinates((4, 3))
    assert c.shape == (2, 4, 3)
    torch.testing.assert_close(c[0, :, 0], torch.tensor([0.0, 0.25, 0.5, 0.75]))
    torch.testing.assert_close(c[1, 0], torch.tensor([0.0, 1 / 3, 2 / 3]))


@pytest.mark.parametrize("mixer", ["fno", "ffno", "galerkin_attention", "depthwise_conv"])
def test_any_grid_mixer_in_2d(mixer):
    model = OperatorModel(mixer, in_channels=2, out_channels=3, spatial_dims=2, width=8, depth=2, projection_width=8,
                          mixer_options={"num_heads": 2} if "attention" in mixer else None)
    y = model(torch.randn(2, 2, 9, 10))
    assert y.shape == (2, 3, 9, 10) and torch.isfinite(y).all()


def test_a_sequence_mixer_runs_over_the_flattened_grid():
    name = next(n for n in tokenmix.available("sequence") if tokenmix.spec(n).causal != "always")
    model = OperatorModel(name, width=8, depth=1, projection_width=8,
                          mixer_options={"num_heads": 2} if "num_heads" in tokenmix.spec(name).options else None)
    assert model(torch.randn(2, 1, 12)).shape == (2, 1, 12)


def test_bad_arguments_raise():
    with pytest.raises(MixerInputError):
        OperatorModel("fno", spatial_dims=4)
    with pytest.raises(MixerInputError):
        OperatorModel("fno", width=0)
    with pytest.raises(MixerInputError):
        OperatorModel("fno", in_channels=2)(torch.randn(1, 1, 8))


def test_fno_learns_burgers_at_s64_and_evaluates_at_twice_the_resolution():
    task = create_task("burgers", resolution=64, solver_resolution=256, num_train_examples=64, num_test_examples=16)
    train, test = task.split("train"), task.split("test")
    torch.manual_seed(0)
    model = OperatorModel("fno", width=16, depth=2, projection_width=32, mixer_options={"modes": 8})
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = relative_l2(model(test.inputs), test.targets).mean().item()
    for _ in range(150):
        batch = torch.randint(0, len(train), (16,))
        loss = task.loss(model(train.inputs[batch]), train.targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = relative_l2(model(test.inputs), test.targets).mean().item()
        fine = task.split("test", resolution=128)
        prediction_fine = model(fine.inputs)
        after_fine = relative_l2(prediction_fine, fine.targets).mean().item()
        prediction = model(test.inputs)
    assert after < 0.3 and after < before / 4, (before, after)
    # Resolution invariance of the trained model: the same weights at 2× resolution give a close error and close
    # predictions at the shared points.
    assert torch.isfinite(prediction_fine).all()
    assert after_fine < 1.5 * after, (after, after_fine)
    assert relative_l2(prediction_fine[..., ::2], prediction).mean() < 0.1


def test_burgers_training_script_reports_errors_at_every_resolution():
    from tokenmix.bench.operator_train import train_burgers

    result = train_burgers(resolution=32, solver_resolution=128, num_train=8, num_test=4, width=8, depth=1, modes=4,
                           epochs=2, batch_size=4, step_every=1, eval_resolutions=(64, 128))
    assert set(result["test_relative_l2_at"]) == {"64", "128"}
    assert all(0 < value < 10 for value in result["test_relative_l2_at"].values())
    assert result["parameters"] > 0 and result["epochs"] == 2
