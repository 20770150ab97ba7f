"""Forward throughput of image runs: measured once per run, stored in its metrics, restores the training mode."""

from __future__ import annotations

import torch

from tokenmix.bench.throughput import forward_throughput
from tokenmix.bench.train import train
from tokenmix.models import VisionModel

from test_train_input_kinds import config


def test_forward_throughput_counts_images_per_second_and_keeps_the_mode():
    model = VisionModel("depthwise_conv", in_channels=1, num_classes=2, depths=(1,), dims=(8,), patch_size=1)
    model.train()
    result = forward_throughput(model, torch.randn(12, 1, 6, 6), repeats=2)
    assert result["throughput_batch"] == 12 and result["throughput_clock"] == "process cpu"
    assert result["forward_images_per_second"] > 0 and model.training


def test_an_image_run_records_its_throughput_and_a_sequence_run_does_not():
    image = train(config("test_bar_direction", "depthwise_conv", steps=2), progress=False).metrics
    assert image["forward_images_per_second"] > 0 and image["throughput_batch"] == 64  # eval_batch_size
    values = train(config("test_sum_sign", "gla", steps=2), progress=False).metrics
    assert "forward_images_per_second" not in values
