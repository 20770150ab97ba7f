"""The conformance suite: every registered mixer, the same checks (DESIGN.md → Testing).

A mixer registered today is tested today: the parameters come from `tokenmix.available()`.
"""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file

import tokenmix
from tokenmix import MixerInputError

DIM = 16
LENGTH = 37  # not a power of two, not a multiple of any chunk size
ALL = tokenmix.available()
SEQUENCE = tokenmix.available(layout="sequence")
STREAMING = [n for n in SEQUENCE if tokenmix.spec(n).streams]
NON_CAUSAL_OK = [n for n in SEQUENCE if tokenmix.spec(n).causal != "always"]  # "optional" and "never"
FAST_IMPLS = [(n, impl) for n in ALL for impl in tokenmix.spec(n).impls if impl != "reference"]


def build(name: str, **options) -> torch.nn.Module:
    spec = tokenmix.spec(name)
    if "num_heads" in spec.options and "num_heads" not in options:
        options["num_heads"] = 2
    if "chunk_size" in spec.options and "chunk_size" not in options:
        options["chunk_size"] = 8  # so LENGTH spans several chunks and a ragged last one
    mixer = tokenmix.create(name, DIM, **options)
    for parameter in mixer.parameters():  # some mixers start at zero (gates, biases): make every path count
        with torch.no_grad():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return mixer


def sample(name: str, batch: int = 2, length: int = LENGTH, dtype=torch.float64) -> torch.Tensor:
    spec = tokenmix.spec(name)
    if spec.layout == "sequence":
        return torch.randn(batch, length, DIM, dtype=dtype)
    spatial = (2 if 2 in spec.spatial_dims else spec.spatial_dims[0])
    return torch.randn(batch, DIM, *[5 + i for i in range(spatial)], dtype=dtype)


def twin(mixer: torch.nn.Module, name: str, **options) -> torch.nn.Module:
    """A second instance with other options and the same weights."""
    reference = next(iter(mixer.state_dict().values()), None)
    other = build(name, **options)
    if reference is not None:
        other = other.to(reference.dtype)
    other.load_state_dict(mixer.state_dict())
    return other


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_dtype_preserved(name, dtype):
    mixer = build(name).to(dtype)
    x = sample(name, dtype=dtype)
    y = mixer(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ALL)
def test_batch_elements_independent(name):
    mixer = build(name).double()
    x = sample(name, batch=3)
    together = mixer(x)
    alone = torch.cat([mixer(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", STREAMING)
def test_causal(name):
    mixer = build(name).double()
    x = sample(name)
    cut = LENGTH // 2
    changed = x.clone()
    changed[:, cut:] = torch.randn_like(changed[:, cut:])
    y, y_changed = mixer(x), mixer(changed)
    torch.testing.assert_close(y[:, :cut], y_changed[:, :cut], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(y[:, cut:], y_changed[:, cut:])  # the future does matter where it should


@pytest.mark.parametrize("name", NON_CAUSAL_OK)
def test_non_causal_sees_the_future(name):
    mixer = build(name, causal=False).double()
    x = sample(name)
    changed = x.clone()
    changed[:, -1] += 1.0
    # a local kernel sees only nearby positions, so ask that some earlier output changes, not the first
    assert not torch.allclose(mixer(x)[:, :-1], mixer(changed)[:, :-1])


@pytest.mark.parametrize("name,impl", FAST_IMPLS)
def test_impl_equals_reference_forward_and_backward(name, impl):
    reference = build(name, impl="reference").double()
    fast = twin(reference, name, impl=impl)
    x = sample(name).requires_grad_()
    x_fast = x.detach().clone().requires_grad_()
    y, y_fast = reference(x), fast(x_fast)
    torch.testing.assert_close(y_fast, y, rtol=1e-9, atol=1e-10)
    weights = torch.randn_like(y)
    (y * weights).sum().backward()
    (y_fast * weights).sum().backward()
    torch.testing.assert_close(x_fast.grad, x.grad, rtol=1e-9, atol=1e-10)
    for (key, p), p_fast in zip(reference.named_parameters(), fast.parameters()):
        torch.testing.assert_close(p_fast.grad, p.grad, rtol=1e-9, atol=1e-10, msg=f"gradient of {key}")


@pytest.mark.parametrize("name,impl", [(n, i) for n in ALL for i in tokenmix.spec(n).impls])
def test_bfloat16_within_bound(name, impl):
    exact = build(name, impl="reference").double()
    low = twin(exact, name, impl=impl).to(torch.bfloat16)
    x = sample(name)
    y, y_low = exact(x), low(x.to(torch.bfloat16)).double()
    # bf16 keeps 8 bits of mantissa (relative step 2^-8 ≈ 0.4%); a few roundings through projections and norms
    # stay within 5% of the output's scale. A wrong algorithm is off by O(100%).
    assert y_low.dtype == torch.float64 and torch.isfinite(y_low).all()
    assert (y_low - y).abs().max() <= 0.05 * y.abs().max()


@pytest.mark.parametrize("name", STREAMING)
def test_streaming_equals_forward(name):
    mixer = build(name).double()
    x = sample(name, length=9)
    full = mixer(x)
    state = mixer.init_state(x.shape[0])
    outputs = []
    for t in range(x.shape[1]):
        y_t, state = mixer.step(x[:, t], state)
        outputs.append(y_t)
    torch.testing.assert_close(torch.stack(outputs, dim=1), full, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", STREAMING)
@pytest.mark.parametrize("impl", ["auto", "reference"])
def test_prefill_then_continue_equals_forward(name, impl):
    mixer = build(name, impl=impl).double()
    x = sample(name, length=LENGTH)
    full = mixer(x)
    prefix, middle = 20, 30
    y1, state = mixer(x[:, :prefix], return_state=True)
    y2, state = mixer(x[:, prefix:middle], state=state, return_state=True)
    steps = []
    for t in range(middle, LENGTH):
        y_t, state = mixer.step(x[:, t], state)
        steps.append(y_t)
    continued = torch.cat([y1, y2, torch.stack(steps, dim=1)], dim=1)
    torch.testing.assert_close(continued, full, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", STREAMING)
def test_state_continues_across_any_split(name):
    # Splits before, at and after chunk boundaries (the mixers run with chunk_size 8), at the first token and at
    # the last: a state passed at any of them continues exactly (a known failure of other libraries).
    mixer = build(name).double()
    x = sample(name, length=LENGTH)
    full = mixer(x)
    for split in (1, 7, 8, 9, 16, 23, LENGTH - 1):
        head, state = mixer(x[:, :split], return_state=True)
        tail = mixer(x[:, split:], state=state)
        torch.testing.assert_close(torch.cat([head, tail], dim=1), full, rtol=1e-10, atol=1e-10,
                                   msg=lambda message: f"{name}, split at {split}: {message}")


@pytest.mark.parametrize("name", STREAMING)
def test_state_is_a_saveable_dict_of_batched_tensors(name, tmp_path):
    mixer = build(name).double()
    state = mixer.init_state(3)
    assert isinstance(state, dict) and state
    assert all(isinstance(v, torch.Tensor) and v.shape[0] == 3 for v in state.values())
    x = sample(name, batch=3, length=12)
    _, state = mixer(x[:, :7], return_state=True)
    path = tmp_path / "state.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    resumed = mixer(x[:, 7:], state=load_file(str(path)))
    torch.testing.assert_close(resumed, mixer(x)[:, 7:], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", STREAMING)
def test_states_of_two_batches_concatenate_into_one(name):
    # What a server that batches requests does: two prompts prefilled apart, their states joined on the batch
    # axis, then continued together, give each prompt's own continuation.
    mixer = build(name).double()
    first, second = sample(name, batch=2, length=15), sample(name, batch=3, length=15)
    _, state_first = mixer(first[:, :9], return_state=True)
    _, state_second = mixer(second[:, :9], return_state=True)
    joined = {key: torch.cat([state_first[key], state_second[key]]) for key in state_first}
    together = mixer(torch.cat([first, second])[:, 9:], state=joined)
    torch.testing.assert_close(together, torch.cat([mixer(first), mixer(second)])[:, 9:], rtol=1e-10, atol=1e-10)


FIXED_STATE = [n for n in STREAMING if tokenmix.spec(n).state == "fixed"]


@pytest.mark.parametrize("name", FIXED_STATE)
def test_fixed_state_after_a_prefill_holds_only_itself(name):
    # A state that is a view into the prompt's activations keeps the whole prompt alive: O(L) memory behind an
    # O(1) state (a short convolution's cache sliced from its full input held 200 MB after a 16k-token prefill).
    mixer = build(name).double()
    sizes = {}
    for length in (12, 36):
        with torch.no_grad():
            _, state = mixer(sample(name, length=length), return_state=True)
        for key, value in state.items():
            held = value.untyped_storage().nbytes()
            assert held == value.numel() * value.element_size(), (
                f"{name}: state[{key!r}] {tuple(value.shape)} holds {held} bytes of storage after a prefill of "
                f"{length} tokens, for {value.numel() * value.element_size()} bytes of its own")
        sizes[length] = {key: tuple(value.shape) for key, value in state.items()}
    assert sizes[12] == sizes[36]


@pytest.mark.parametrize("name", ALL)
def test_gradcheck(name):
    mixer = build(name).double()
    x = sample(name, batch=1, length=4)
    if tokenmix.spec(name).layout == "grid":
        x = x[..., :3, :3]
    x.requires_grad_()
    assert torch.autograd.gradcheck(mixer, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_safetensors_round_trip(name, tmp_path):
    mixer = build(name)
    path = tmp_path / "mixer.safetensors"
    save_file({k: v.contiguous() for k, v in mixer.state_dict().items()}, str(path))
    loaded = build(name)
    loaded.load_state_dict(load_file(str(path)))
    x = sample(name, dtype=torch.float32)
    torch.testing.assert_close(loaded(x), mixer(x), rtol=0, atol=0)


def _raises_naming(name: str, call) -> None:
    with pytest.raises(MixerInputError) as error:
        call()
    assert name in str(error.value)


@pytest.mark.parametrize("name", ALL)
def test_bad_inputs_raise_mixer_input_error(name):
    mixer = build(name)
    x = sample(name, dtype=torch.float32)
    _raises_naming(name, lambda: mixer(x[0]))                        # wrong rank
    _raises_naming(name, lambda: mixer(x.unsqueeze(0)))              # wrong rank
    wrong_channels = x[..., :-1] if tokenmix.spec(name).layout == "sequence" else x[:, :-1]
    _raises_naming(name, lambda: mixer(wrong_channels))              # channel mismatch
    _raises_naming(name, lambda: mixer(x.long()))                    # integer dtype
    _raises_naming(name, lambda: tokenmix.create(name, DIM, no_such_option=1))
    _raises_naming(name, lambda: tokenmix.create(name, DIM, impl="no_such_impl"))
    _raises_naming(name, lambda: tokenmix.create(name, 0))


@pytest.mark.parametrize("name", NON_CAUSAL_OK)
def test_streaming_a_non_causal_mixer_raises(name):
    mixer = build(name, causal=False)
    x = sample(name, dtype=torch.float32)
    _raises_naming(name, lambda: mixer.init_state(2))
    _raises_naming(name, lambda: mixer.step(x[:, 0], {}))
    _raises_naming(name, lambda: mixer(x, return_state=True))


@pytest.mark.parametrize("name", STREAMING)
def test_bad_streaming_inputs_raise(name):
    mixer = build(name)
    x = sample(name, dtype=torch.float32)
    state = mixer.init_state(2)
    _raises_naming(name, lambda: mixer.step(x, state))               # a sequence where one token is expected
    _raises_naming(name, lambda: mixer.step(x[:, 0, :-1], state))    # channel mismatch
    _raises_naming(name, lambda: mixer.step(x[:1, 0], state))        # batch differs from the state's
    _raises_naming(name, lambda: mixer.step(x[:, 0], {"nope": x}))   # not this mixer's state
    _raises_naming(name, lambda: mixer.init_state(0))


@pytest.mark.parametrize("name", [n for n in SEQUENCE if tokenmix.spec(n).causal == "always"])
def test_always_causal_rejects_causal_false(name):
    _raises_naming(name, lambda: tokenmix.create(name, DIM, causal=False))


def test_unknown_mixer_lists_valid_names():
    with pytest.raises(MixerInputError) as error:
        tokenmix.create("nope", DIM)
    for name in ALL:
        assert name in str(error.value)


def test_every_spec_is_complete():
    for name in ALL:
        spec = tokenmix.spec(name)
        assert spec.name == name and spec.paper and spec.arxiv and spec.family
        assert spec.impls[0] == "reference"
        assert "impl" in spec.options
