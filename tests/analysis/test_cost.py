"""Cost accounting: parameters, FLOPs (2 × MACs), saved activations and streaming state, checked by hand."""

import pytest
import torch
from torch import nn

from tokenmix.analysis.cost import activation_bytes, cost_markdown, cost_rows, flop_count, human, mixer_cost


def test_flops_of_a_linear_layer_are_twice_the_multiply_accumulates():
    assert flop_count(nn.Linear(8, 4, bias=False), torch.randn(3, 8)) == 2 * 3 * 8 * 4


def test_dense_and_depthwise_convolution_costs_by_hand():
    dense = mixer_cost("dense_conv", dim=8, side=6, kernel_size=3, impl="direct")
    assert dense.parameters == 8 * 8 * 9 + 8
    assert dense.flops == 2 * (8 * 8 * 9) * 36           # each output point: C_in k² MACs per output channel
    depthwise = mixer_cost("depthwise_conv", dim=8, side=6, kernel_size=3, impl="direct")
    assert depthwise.parameters == 8 * 9 + 8 and depthwise.flops == 2 * 8 * 9 * 36
    assert dense.state_floats is None and depthwise.state_floats is None


def test_saved_activations_exclude_parameters():
    # y = relu(W x): backward saves x (for W's gradient) and the ReLU output; W itself is not counted
    model = nn.Sequential(nn.Linear(16, 32, bias=False), nn.ReLU())
    assert activation_bytes(model, torch.randn(4, 16)) == 4 * (4 * 16 + 4 * 32)


def test_streaming_state_is_fixed_for_linear_attention_and_grows_for_attention():
    short = mixer_cost("linear_attention", dim=16, length=8, num_heads=2)
    long = mixer_cost("linear_attention", dim=16, length=32, num_heads=2)
    assert short.state_floats == long.state_floats == 2 * 8 * 9   # H · K · (V + 1): the normalizer rides as an extra value column
    attention = [mixer_cost("attention", dim=16, length=n, num_heads=2).state_floats for n in (8, 32)]
    assert attention == [2 * 8 * 16, 2 * 32 * 16]                # keys and values of every token


def test_info_rows_and_markdown_table():
    rows = dict(cost_rows(mixer_cost("depthwise_conv", dim=8, side=8)))   # 7×7 kernel: 8·49 + 8
    assert rows["parameters"] == "400" and rows["streaming state after L tokens"] == "—"
    assert human(1234567) == "1.23 M" and human(2048, "B") == "2.05 kB"
    table = cost_markdown(["depthwise_conv", "short_conv"])
    assert table == cost_markdown(["depthwise_conv", "short_conv"])   # deterministic
    assert "| depthwise_conv | grid | 3.2 k |" in table and "| short_conv | sequence |" in table
