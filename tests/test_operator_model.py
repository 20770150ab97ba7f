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


def test_node_coordinates_include_both_ends():
    c = grid_coordinates((5, 2), kind="nodes")
    torch.testing.assert_close(c[0, :, 0], torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(c[1, 0], torch.tensor([0.0, 1.0]))
    assert grid_coordinates((1,), kind="nodes").tolist() == [[0.0]]
    with pytest.raises(MixerInputError):
        grid_coordinates((4,), kind="cell_centres")


def test_node_coordinates_agree_at_the_shared_nodes_of_a_subsampled_grid():
    # Darcy's grids: s = 85 subsampled by r = 4 is s' = 22 (nodes i·4/84 = i/21); the coordinate channel must be
    # the same at the same physical point. The periodic grid's i/n does not (that was the shift at 85 → 22).
    fine, coarse = grid_coordinates((85, 85), kind="nodes"), grid_coordinates((22, 22), kind="nodes")
    torch.testing.assert_close(fine[:, ::4, ::4], coarse, rtol=0, atol=1e-7)
    periodic_fine, periodic_coarse = grid_coordinates((85,)), grid_coordinates((22,))
    assert (periodic_fine[:, ::4] - periodic_coarse).abs().max() > 0.03  # 84/85 − 21/22 = 0.034 at the last node


def test_model_appends_the_coordinates_it_was_built_with():
    torch.manual_seed(0)
    model = OperatorModel("fno", width=4, depth=1, projection_width=4, mixer_options={"modes": 2},
                          coordinates="nodes")
    captured = []
    model.lift.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    model(torch.zeros(1, 1, 5))
    torch.testing.assert_close(captured[0][0, :, 1], torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    with pytest.raises(MixerInputError):
        OperatorModel("fno", coordinates="cells")


def test_tasks_declare_their_coordinates():
    assert create_task("darcy").coordinates == "nodes"
    assert create_task("burgers").coordinates == "periodic"
    assert create_task("navier_stokes").coordinates == "periodic"


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
    with pytest.raises(MixerInputError, match="pointwise_skip"):
        OperatorModel("fno", pointwise_skip=1)


def test_pointwise_skip_adds_a_linear_map_of_each_layers_input():
    # v ← σ(mixer(v) + W v + b) after every layer but the last, which has no σ (the neural-operator layer).
    torch.manual_seed(0)
    model = OperatorModel("gnot_attention", width=8, depth=2, spatial_dims=2, pointwise_skip=True,
                          coordinates="nodes").double()
    a = torch.randn(2, 1, 5, 6, dtype=torch.float64)
    x = torch.cat([a, grid_coordinates((5, 6), kind="nodes", dtype=torch.float64).expand(2, 2, 5, 6)], dim=1)
    v = model.lift(x.movedim(1, -1)).movedim(-1, 1)

    def pointwise(layer, v):
        return layer(v.movedim(1, -1)).movedim(-1, 1)

    v = torch.nn.functional.gelu(model.layers[0](v) + pointwise(model.skips[0], v))
    v = model.layers[1](v) + pointwise(model.skips[1], v)
    expected = pointwise(model.project, v)
    torch.testing.assert_close(model(a), expected, rtol=1e-12, atol=1e-12)
    assert OperatorModel("gnot_attention", width=8, spatial_dims=2).skips is None


def test_fno_learns_burgers_at_s64_and_evaluates_at_twice_the_resolution():
    task = create_task("burgers", resolution=64, solver_resolution=256, num_train_examples=64, num_test_examples=16)
    train, test = task.split("train"), task.split("test")
    torch.manual_seed(0)
    model = OperatorModel("fno", width=16, depth=2, projection_width=32, mixer_options={"modes": 8})
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
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
