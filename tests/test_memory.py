"""Peak memory of a call, checked against allocations of known size (within 10%)."""

from __future__ import annotations

import pytest
import torch

from tokenmix.bench.memory import CPU_METHOD, CUDA_METHOD, peak_memory, replay_peak

MIB = 1 << 20


def within(measured: int, expected: int, tolerance: float = 0.10) -> bool:
    return abs(measured - expected) <= tolerance * expected


def test_a_tensor_of_known_size():
    result = peak_memory(lambda: torch.ones(4 * MIB // 4))
    assert result.method == CPU_METHOD
    assert within(result.peak_bytes, 4 * MIB)


def test_sequential_allocations_count_their_maximum_not_their_sum():
    def call():
        first = torch.ones(2 * MIB // 4)
        del first
        return torch.ones(3 * MIB // 4)

    assert within(peak_memory(call).peak_bytes, 3 * MIB)


def test_live_temporaries_add_up():
    x = torch.randn(256, 256)

    def call():
        a = x @ x  # 256 KiB, alive while b is made
        b = a @ x  # 256 KiB
        return (a + b).sum()  # one more 256 KiB temporary, with a and b still alive

    assert within(peak_memory(call).peak_bytes, 3 * 256 * 256 * 4)


def test_memory_allocated_before_the_call_is_not_counted_and_its_free_is_not_seen_on_cpu():
    existing = [torch.ones(8 * MIB // 4)]

    def call():
        existing.clear()  # frees 8 MiB that the call did not allocate
        return torch.ones(MIB // 4)

    assert within(peak_memory(call).peak_bytes, MIB)


def test_multithreaded_kernels_and_autograd():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a = torch.randn(512, 512)
        assert within(peak_memory(lambda: a @ a).peak_bytes, 512 * 512 * 4)
        weight = torch.randn(512, 512, requires_grad=True)

        def forward_backward():
            (a @ weight).sum().backward()
            weight.grad = None

        # the product (1 MiB) is saved for nothing, ones_like(out) (1 MiB) flows back, weight.grad (1 MiB) is made
        measured = peak_memory(forward_backward).peak_bytes
        assert 2 * MIB * 0.9 <= measured <= 3 * MIB * 1.1
    finally:
        torch.set_num_threads(previous)


def test_replay_peak():
    assert replay_peak([]) == 0
    assert replay_peak([(0, 10), (1, 5), (2, -10), (3, 2)]) == 15
    assert replay_peak([(0, -10), (1, 4)]) == 0  # the running total starts at 0 and the peak is never below it


def test_unsupported_device():
    with pytest.raises(ValueError, match="cpu"):
        peak_memory(lambda: None, "meta")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensor_of_known_size():
    result = peak_memory(lambda: torch.ones(4 * MIB // 4, device="cuda"), "cuda")
    assert result.method == CUDA_METHOD
    assert within(result.peak_bytes, 4 * MIB)
