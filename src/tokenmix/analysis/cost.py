"""Cost accounting of a mixer at a fixed size: parameters, FLOPs, activation memory, streaming state.

* **parameters**: Σ numel of the mixer's parameters.
* **FLOPs** of one forward pass, counted by `torch.utils.flop_counter.FlopCounterMode`, which counts the
  matrix products, convolutions and attention kernels (2 FLOPs per multiply-accumulate: FLOPs = 2 × MACs);
  element-wise work, reductions, scans and FFTs are *not* counted, so FFT-based and recurrent mixers show the
  FLOPs of their projections only.
* **activation memory**: the bytes of the tensors the forward pass saves for backward (captured by
  `torch.autograd.graph.saved_tensors_hooks`, each storage once, parameters excluded), input requiring grad.
* **state**: for causal (streaming) mixers, the floats of the state after a prefill of L tokens, batch 1 — O(1)
  in L for a fixed state (`spec.state == "fixed"`), growing with L otherwise (a KV cache); per streamed token
  this is the memory a decoder carries.

Sizes: sequence mixers at (1, L, D), grid mixers at (1, D, S, S) (the first spatial rank they support: 2D when
they can), float32 on the CPU, the default options and `impl="auto"`, weights from a fixed seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import tokenmix
from tokenmix.errors import MixerInputError

DIM, LENGTH, SIDE = 64, 256, 32   # the fixed size of the docs table


@dataclass
class Cost:
    mixer: str
    layout: str
    input_shape: tuple[int, ...]
    parameters: int
    flops: int
    activation_bytes: int
    state_floats: int | None     # None: the mixer does not stream
    state_kind: str

    def as_dict(self) -> dict:
        return asdict(self)


def _input(name: str, dim: int, length: int, side: int) -> tuple[int, ...]:
    spec = tokenmix.spec(name)
    if spec.layout == "sequence":
        return (1, length, dim)
    spatial = 2 if 2 in spec.spatial_dims else spec.spatial_dims[0]
    return (1, dim, *([side] * spatial))


def fit_size_options(name: str, shape: tuple[int, ...], options: dict) -> dict:
    """Options that size a mixer to its input: `resolution` for grid mixers with position-specific weights,
    `max_length` for sequence mixers with one (unless given)."""
    spec = tokenmix.spec(name)
    options = dict(options)
    if spec.layout == "grid" and "resolution" in spec.options and "resolution" not in options:
        default = spec.options["resolution"]
        options["resolution"] = shape[2] if isinstance(default, int) else tuple(shape[2:])
    if spec.layout == "sequence" and "max_length" in spec.options and "max_length" not in options:
        options["max_length"] = max(shape[1], spec.options["max_length"] or 0)
    return options


def flop_count(module: nn.Module, x: torch.Tensor) -> int:
    """FLOPs (2 × MACs) of `module(x)` as FlopCounterMode counts them."""
    with FlopCounterMode(display=False) as counter:   # (under no_grad its module tracker trips on some mixers)
        module(x)
    return int(counter.get_total_flops())


def activation_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes saved for backward by `module(x)` (each storage once, parameters excluded)."""
    parameters = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters and storage.device.type != "meta":
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        module(x.detach().requires_grad_(True))
    return sum(seen.values())


def state_floats(module: nn.Module, x: torch.Tensor) -> int | None:
    """Floats in the streaming state after a prefill of `x` (None for a mixer that does not stream)."""
    if tokenmix.spec(module.spec.name).layout != "sequence" or not getattr(module, "causal", False):
        return None
    with torch.no_grad():
        _, state = module(x, return_state=True)
    return sum(t.numel() for t in state.values())


def mixer_cost(name: str, *, dim: int = DIM, length: int = LENGTH, side: int = SIDE, seed: int = 0,
               **options) -> Cost:
    """The costs of mixer `name` built with `options` at the given size (see the module docstring)."""
    torch.manual_seed(seed)
    spec = tokenmix.spec(name)
    shape = _input(name, dim, length, side)
    options = fit_size_options(name, shape, options)
    mixer = tokenmix.create(name, dim, **options)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return Cost(
        mixer=name, layout=spec.layout, input_shape=shape,
        parameters=sum(p.numel() for p in mixer.parameters()),
        flops=flop_count(mixer, x), activation_bytes=activation_bytes(mixer, x),
        state_floats=state_floats(mixer, x), state_kind=spec.state)


def human(value: float, unit: str = "") -> str:
    """1234567 → '1.23 M'; deterministic, three significant digits."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".strip()


def cost_rows(cost: Cost) -> list[tuple[str, str]]:
    """(field, value) pairs for `tokenmix info`."""
    state = "—" if cost.state_floats is None else f"{human(cost.state_floats)} floats ({cost.state_kind})"
    return [("cost at", "input " + "×".join(map(str, cost.input_shape)) + ", float32"),
            ("parameters", human(cost.parameters)),
            ("forward FLOPs (2×MACs)", human(cost.flops)),
            ("activations saved for backward", human(cost.activation_bytes, "B")),
            ("streaming state after L tokens", state)]


def all_costs(names: list[str]) -> dict[str, Cost | str]:
    """`mixer_cost` of each name at the fixed size, or the one-line reason it cannot run there."""
    costs: dict[str, Cost | str] = {}
    for name in names:
        try:
            costs[name] = mixer_cost(name)
        except MixerInputError as error:   # e.g. a mixer whose options cannot fit the fixed size
            costs[name] = " ".join(str(error).split())
    return costs


def cost_markdown(names: list[str] | None = None, costs: dict[str, Cost | str] | None = None) -> str:
    """docs/cost.md: one row per registered mixer at the fixed size (DIM, LENGTH, SIDE). `costs` (from
    `all_costs`) avoids measuring twice."""
    names = tokenmix.available() if names is None else names
    costs = all_costs(names) if costs is None else costs
    lines = ["# Cost of each mixer", "",
             "Generated by `tokenmix analyze cost --mixer all --out docs`; do not edit by hand.", "",
             f"Sequence mixers at (1, L={LENGTH}, D={DIM}); grid mixers at (1, D={DIM}, {SIDE}×{SIDE}) (1D-only "
             f"ones at length {SIDE}); float32, default options. FLOPs are those torch.utils.flop_counter counts "
             "(matrix products, convolutions, attention; 2 FLOPs per multiply-accumulate) — element-wise work, "
             "scans and FFTs are not counted. Activations: bytes saved for backward (parameters excluded). "
             "State: floats carried after the prefill, batch 1 (fixed: independent of L).", "",
             "| mixer | layout | parameters | FLOPs | activations | state (floats) |",
             "|---|---|---|---|---|---|"]
    for name in names:
        cost = costs[name]
        if isinstance(cost, str):
            lines.append(f"| {name} | {tokenmix.spec(name).layout} | n/a: {cost} ||||")
            continue
        state = "—" if cost.state_floats is None else f"{human(cost.state_floats)} ({cost.state_kind})"
        lines.append(f"| {name} | {cost.layout} | {human(cost.parameters)} | {human(cost.flops)} | "
                     f"{human(cost.activation_bytes, 'B')} | {state} |")
    return "\n".join(lines) + "\n"
