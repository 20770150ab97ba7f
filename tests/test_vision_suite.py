"""The vision suites: every vision grid mixer (no neural operator) with 3 seeds, each one buildable at its options."""

from __future__ import annotations

import torch

import tokenmix
from tokenmix.bench.suites import SUITES, VISION_LAST, vision_options, vision_suite
from tokenmix.bench.train import build_model
from tokenmix.tasks import create_task


def test_the_vision_suite_covers_every_vision_mixer_with_three_seeds_seed_major():
    runs = SUITES["vision"]().runs
    expected = {name for name in tokenmix.available("grid") if tokenmix.spec(name).family != "neural-operator"
                and 2 in tokenmix.spec(name).spatial_dims}
    assert {run.mixer for run in runs} == expected and "fno" not in expected
    per_seed = len(expected)
    assert len(runs) == 3 * per_seed
    for seed in (0, 1, 2):
        block = runs[seed * per_seed:(seed + 1) * per_seed]
        assert {run.training.seed for run in block} == {seed}
        assert [run.mixer for run in block][-len(VISION_LAST):] == list(VISION_LAST)  # the costly ones last
    assert {(run.task, run.task_params["view"], run.training.learning_rate) for run in runs} == {
        ("digits", "image", 3e-3)}


def test_every_vision_suite_model_builds_at_its_options_and_runs_on_digits_images():
    task = create_task("digits", view="image")
    images = torch.rand(2, 1, 8, 8)
    for run in vision_suite().runs[:len(vision_suite().runs) // 3]:
        model = build_model(run, task)
        assert model(images).shape == (2, 10), run.mixer


def test_the_grid_options_fit_kernels_windows_and_resolutions_to_the_grid():
    four, eight = vision_options(4), vision_options(8)
    # the digits suite's options as they were written out before the rule: its runs keep their ids (and results)
    assert four == {
        "replknet": {"kernel_size": 7, "small_kernel_size": 3}, "slak": {"kernel_size": 7, "small_kernel_size": 3},
        "smpconv": {"kernel_size": 7}, "unireplknet": {"kernel_size": 7}, "dcls": {"dilated_kernel_size": 7},
        "gfnet": {"resolution": 4}, "grid_token_mlp": {"resolution": 4}, "gmlp": {"resolution": 4},
        "resmlp": {"resolution": 4}, "levit_attention": {"resolution": 4}, "swin_attention": {"window_size": 2},
        "halo_attention": {"block_size": 2, "halo_size": 1},
        "neighborhood_attention": {"kernel_size": 3, "impl": "reference"}, "ss2d": {"impl": "blocked"}}
    assert eight["replknet"] == {"kernel_size": 15, "small_kernel_size": 5} and eight["levit_attention"] == {
        "resolution": 8}
    assert eight["swin_attention"] == {"window_size": 4} and eight["neighborhood_attention"]["kernel_size"] == 5
    assert eight["unireplknet"] == {"kernel_size": 13}  # its default, already below 2 * 8 - 1


def test_the_shapes_suite_runs_every_vision_mixer_on_an_eight_by_eight_grid():
    runs = SUITES["vision-shapes"]().runs
    assert [run.mixer for run in runs] == [run.mixer for run in vision_suite().runs]
    assert {(run.task, run.task_params["size"], run.model.patch_size) for run in runs} == {("global_shapes", 16, 2)}
    task = create_task("global_shapes", **runs[0].task_params)
    images = torch.rand(2, 1, 16, 16)
    for run in runs[:len(runs) // 3]:
        model = build_model(run, task)
        assert model(images).shape == (2, 2), run.mixer
