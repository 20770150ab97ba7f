"""`tokenmix analyze TOOL --mixer NAME`: run one analysis tool, write PNG figures and a Markdown summary.

TOOL is one of erf, lipschitz, linearize, energy, reparam, cost, distill. `--mixer` takes one name, a comma list, or
`all` (erf and cost only: a table across mixers). Each tool writes `<out>/<tool>.md` and its figures beside it;
the same functions are importable from the tool modules (tokenmix.analysis.*).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console

import tokenmix
from tokenmix.errors import MixerInputError, unknown_name

SMALL_BACKBONE = {"depths": (1, 1), "dims": (16, 32), "num_classes": 10, "mlp_ratio": 2.0}


def _names(mixer: str, many: bool) -> list[str]:
    names = tokenmix.available() if mixer == "all" else [part.strip() for part in mixer.split(",") if part.strip()]
    if not names:
        raise MixerInputError("--mixer needs a mixer name")
    if len(names) > 1 and not many:
        raise MixerInputError("this tool takes one mixer; a list or 'all' works for erf and cost")
    for name in names:
        tokenmix.spec(name)   # unknown names fail here, with a did-you-mean
    return names


def _load_checkpoint(module: torch.nn.Module, checkpoint: Path | None) -> None:
    if checkpoint is None:
        return
    if not checkpoint.exists():
        raise MixerInputError(f"no checkpoint at {checkpoint}")
    if checkpoint.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(checkpoint))
    else:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise MixerInputError(f"checkpoint {checkpoint} does not fit: {str(error).splitlines()[0]}") from None


def _backbone(name: str, options: dict[str, Any], checkpoint: Path | None, in_channels: int = 3) -> torch.nn.Module:
    from tokenmix.models.vision import VisionModel

    torch.manual_seed(0)
    model = VisionModel(name, mixer_options=options, in_channels=in_channels, **SMALL_BACKBONE)
    _load_checkpoint(model, checkpoint)
    return model.eval()


def _mixer(name: str, dim: int, options: dict[str, Any], checkpoint: Path | None) -> torch.nn.Module:
    torch.manual_seed(0)
    mixer = tokenmix.create(name, dim, **options)
    _load_checkpoint(mixer, checkpoint)
    return mixer.eval()


# --- the tools -------------------------------------------------------------------------------------------------
def _erf(names, out, *, dim, size, samples, options, checkpoint, **_) -> list[str]:
    from tokenmix.analysis.receptive_field import (
        effective_receptive_field, erf_table, plot_erf, radius_summary)

    rows, lines = [], []
    for name in names:
        mixer = _mixer(name, dim, options, checkpoint).double() if checkpoint or options else None
        if mixer is None:
            from tokenmix.analysis.receptive_field import mixer_receptive_field
            erf = mixer_receptive_field(name, dim=dim, size=size, samples=samples)
        else:
            spec = tokenmix.spec(name)
            shape = (size * size, dim) if spec.layout == "sequence" else (dim, size, size)
            erf = effective_receptive_field(mixer, shape, layout=spec.layout, samples=samples)
        plot_erf(erf, out / f"erf_{name}.png", f"{name}: effective receptive field")
        summary = radius_summary(erf)
        rows.append({"mixer": name, "layout": tokenmix.spec(name).layout, "positions": erf.numel(), **summary})
    lines.append(f"Effective receptive field (float64): mean |∂y(centre)/∂x| over {samples} random inputs, D = {dim}, "
                 f"grid {size}×{size} (sequence mixers: L = {size * size}, centre {size * size // 2}). "
                 "r(s%): the radius from the centre holding s% of the mass; reached: share of positions "
                 "with a gradient above round-off (100 ε × the peak).\n")
    lines.append(erf_table(rows))
    lines += [f"![{row['mixer']}](erf_{row['mixer']}.png)" for row in rows]
    return lines


def _lipschitz(names, out, *, options, checkpoint, size, **_) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tokenmix.analysis.lipschitz import dense_kernel, exact_spectral_norm, gram_iteration_bound, \
        network_lipschitz

    from tokenmix.analysis.reparameterize import reparameterize_model

    name = names[0]
    model = _backbone(name, options, checkpoint).double()
    reparameterize_model(model)   # large-kernel mixers become one kernel, whose bounds are then listed
    layers, products = network_lipschitz(model, torch.randn(1, 3, size, size, dtype=torch.float64))
    lines = [f"Spectral norms of the convolution and linear layers of a VisionModel with `{name}` "
             f"({SMALL_BACKBONE['depths']} blocks, widths {SMALL_BACKBONE['dims']}, {size}×{size} input). "
             "exact: the FFT value (exact for circular padding; for zero padding the circular value on the "
             "grid grown by the kernel, an upper bound); gram: Gram iteration (6 steps); power: power iteration "
             "(a lower bound); naive: the smallest reshaped-kernel bound. Products over layers ignore residuals "
             "and normalizations.\n",
             "| layer | kind | input | exact | gram | power | naive |", "|---|---|---|---|---|---|---|"]
    for layer in layers:
        lines.append(f"| {layer.name} | {layer.kind} | {'×'.join(map(str, layer.size)) or '—'} | {layer.exact:.4g} "
                     f"| {layer.gram:.4g} | {layer.power:.4g} | {layer.naive:.4g} |")
    lines.append(f"| **product** | | | {products['exact']:.4g} | {products['gram']:.4g} | {products['power']:.4g} "
                 f"| {products['naive']:.4g} |")
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    positions = range(len(layers))
    labels = {"naive": "naive (reshaped kernel)", "gram": "Gram iteration (6)",
              "exact": "FFT (circular, grown grid)", "power": "power iteration (the zero-padded layer)"}
    for column, marker in (("naive", "v"), ("gram", "^"), ("exact", "o"), ("power", "x")):
        left.plot(positions, [getattr(layer, column) for layer in layers], marker, label=labels[column])
    left.set_xticks(list(positions), [layer.name for layer in layers], rotation=60, ha="right", fontsize=7)
    left.set_yscale("log")
    left.set_ylabel("spectral norm bound")
    left.set_title("per-layer bounds")
    left.legend(fontsize=8)
    convs = [layer for layer in layers if layer.kind == "conv"]
    if convs:
        widest = max(convs, key=lambda layer: layer.exact)
        module = dict(model.named_modules())[widest.name]
        from tokenmix.analysis.lipschitz import _conv_like

        conv = _conv_like(module)
        dense = dense_kernel(conv["weight"].detach().double(), conv["groups"], conv["dilation"])
        span = tuple(n + k - 1 for n, k in zip(widest.size, dense.shape[2:]))
        exact = exact_spectral_norm(dense, span)
        steps = list(range(0, 13))
        gaps = [gram_iteration_bound(dense, span, t) / exact - 1 for t in steps]
        right.semilogy(steps, [max(g, 1e-16) for g in gaps], "o-")
        right.set_xlabel("Gram iterations")
        right.set_ylabel("bound / exact − 1")
        right.set_title(f"Gram iteration on {widest.name}")
        lines.append(f"\nGram iteration on `{widest.name}`: relative gap " +
                     ", ".join(f"{g:.2e} after {t}" for t, g in zip(steps, gaps) if t in (0, 2, 4, 8, 12)) + ".")
    figure.tight_layout()
    figure.savefig(out / "lipschitz.png", dpi=110)
    plt.close(figure)
    lines.append("\n![bounds](lipschitz.png)")
    return lines


def _linearize(names, out, *, dim, options, checkpoint, **_) -> list[str]:
    from tokenmix.analysis.linear_interpreter import linearize, plot_linear_system

    name = names[0]
    spec = tokenmix.spec(name)
    small_dim, side = min(dim, 4), 8
    mixer = _mixer(name, small_dim, options, checkpoint).double()
    shape = (side * side, small_dim) if spec.layout == "sequence" else (small_dim, side, side)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    system = linearize(mixer, x)
    with torch.no_grad():
        residual = float((system(x) - mixer(x[None])[0]).abs().max())
    centre = (side * side // 2) * small_dim if spec.layout == "sequence" else (side // 2) * side + side // 2
    plot_linear_system(system, out / "linearize.png", rows=[centre], columns=[centre])
    away = x + 0.1 * torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        error_away = float((system(away) - mixer(away[None])[0]).norm() / mixer(away[None])[0].norm())
    kind = "exact (gated linear copies)" if system.exact else "Jacobian: an approximation away from x"
    return [f"Linear system y = A(x) x + b(x) of `{name}` (D = {small_dim}, input {'×'.join(map(str, shape))}, "
            f"float64) at a random x: {kind}.\n",
            f"- A: {system.matrix.shape[0]}×{system.matrix.shape[1]}, ‖A‖₂ = "
            f"{float(torch.linalg.matrix_norm(system.matrix, ord=2)):.4g}, ‖b‖ = {float(system.offset.norm()):.4g}",
            f"- max |A x + b − f(x)| = {residual:.2e}",
            f"- relative error of the same A, b at x + 0.1·noise: {error_away:.2e} (0 for a linear mixer)",
            "\n![rows and columns of A](linearize.png)"]


def _reparam(names, out, *, dim, size, options, checkpoint, **_) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tokenmix.analysis.reparameterize import benchmark_blocks, speedup

    name = names[0]
    lines = [f"Eval-mode time before / after re-parameterization (torch.utils.benchmark median, float32, batch 1, "
             f"{torch.get_num_threads()} thread(s)); a measurement on this machine, noisy when it is shared.\n",
             "| block | before (ms) | after (ms) | speedup | max abs difference |", "|---|---|---|---|---|"]
    rows = []
    mixer = _mixer(name, dim, options, checkpoint)
    if callable(getattr(mixer, "reparameterize", None)):
        rows.append({"block": f"mixer {name}", **speedup(mixer, torch.randn(1, dim, size, size))})
    else:
        lines.insert(1, f"`{name}` has no `reparameterize()`; the table shows the library's re-parameterizable "
                        "blocks.\n")
    rows += benchmark_blocks(channels=dim, size=size, min_run_time=0.2)
    for row in rows:
        lines.append(f"| {row['block']} | {1e3 * row['before_s']:.3f} | {1e3 * row['after_s']:.3f} | "
                     f"{row['speedup']:.2f}× | {row['max_abs_difference']:.1e} |")
    figure, axes = plt.subplots(figsize=(8, 3.6))
    positions = torch.arange(len(rows)).float()
    axes.barh(positions + 0.2, [1e3 * r["before_s"] for r in rows], 0.4, label="training form")
    axes.barh(positions - 0.2, [1e3 * r["after_s"] for r in rows], 0.4, label="re-parameterized")
    axes.set_yticks(positions.tolist(), [r["block"] for r in rows], fontsize=7)
    axes.set_xlabel(f"milliseconds per call (D = {dim}, {size}×{size})")
    axes.set_xscale("log")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "reparam.png", dpi=110)
    plt.close(figure)
    lines.append("\n![times](reparam.png)")
    return lines


def _cost(names, out, **_) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tokenmix.analysis.cost import Cost, all_costs, cost_markdown

    measured = all_costs(names)
    table = cost_markdown(names, measured)
    if len(names) == len(tokenmix.available()):
        (out / "cost.md").write_text(table)   # `--out docs` regenerates docs/cost.md
    costs = [cost for cost in measured.values() if isinstance(cost, Cost)]
    figure, axes = plt.subplots(figsize=(7, 0.22 * len(costs) + 1.5))
    positions = range(len(costs))
    axes.barh(list(positions), [max(c.flops, 1) for c in costs], color="tab:blue")
    axes.set_yticks(list(positions), [c.mixer for c in costs], fontsize=7)
    axes.set_xscale("log")
    axes.set_xlabel("forward FLOPs (2×MACs, counted matmuls / convs / attention)")
    axes.set_title("cost at the fixed size of docs/cost.md")
    figure.tight_layout()
    figure.savefig(out / "cost.png", dpi=110)
    plt.close(figure)
    return [table.split("\n", 2)[2].strip(), "\n![FLOPs](cost.png)"]


def _energy(names, out, *, options, checkpoint, **_) -> list[str]:
    from tokenmix.analysis.energy import energy_summary

    model = _backbone(names[0], options, checkpoint, in_channels=1)   # the digits images: 1 channel
    return energy_summary(model.stem.weight.detach(), out / "energy.png", trained=checkpoint is not None)


def _distill(names, out, *, dim, options, checkpoint, **_) -> list[str]:
    from tokenmix.analysis.distillation import distillation_curve, plot_distillation

    name, length = names[0], 256
    options = {"kernel_length": length, **options} if "kernel_length" in tokenmix.spec(name).options else options
    rows = distillation_curve(_mixer(name, dim, options, checkpoint), [1, 2, 4, 8, 16, 32], length)
    plot_distillation(rows, out / "distill.png", f"{name}: filter fit by d modes (L = {length})")
    with_output = "output_error" in rows[0]
    lines = [f"Modal fit of the long filters of `{name}` (D = {dim}, L = {length}) by d complex modes "
             "(tokenmix.ops.modal_fit; for Hyena the distilled `laughing_hyena` of `to_recurrent(d)`, whose "
             "output is compared on random inputs).\n",
             "| modes d | filter error (median) | filter error (max) |" + (" output error |" if with_output else ""),
             "|---|---|---|" + ("---|" if with_output else "")]
    for row in rows:
        lines.append(f"| {row['order']} | {row['filter_error_median']:.3e} | {row['filter_error_max']:.3e} |"
                     + (f" {row['output_error']:.3e} |" if with_output else ""))
    return lines + ["\n![error against order](distill.png)"]


TOOLS: dict[str, tuple[Callable[..., list[str]], bool]] = {
    "erf": (_erf, True), "lipschitz": (_lipschitz, False), "linearize": (_linearize, False),
    "energy": (_energy, False), "reparam": (_reparam, False), "cost": (_cost, True), "distill": (_distill, False)}


def run_analysis(tool: str, mixer: str, *, out: Path, checkpoint: Path | None = None, dim: int = 16,
                 size: int = 32, samples: int = 4, options: dict[str, Any] | None = None,
                 console: Console | None = None) -> Path:
    """Run `tool` on `mixer`, write `<out>/<tool>.md` and its figures; returns the summary's path."""
    if tool not in TOOLS:
        raise unknown_name("analysis", tool, TOOLS)
    function, many = TOOLS[tool]
    names = _names(mixer, many)
    for value, what in ((dim, "--dim"), (size, "--size"), (samples, "--samples")):
        if value < 1:
            raise MixerInputError(f"{what} must be positive, got {value}")
    out.mkdir(parents=True, exist_ok=True)
    lines = function(names, out, dim=dim, size=size, samples=samples, options=dict(options or {}),
                     checkpoint=checkpoint)
    summary = out / f"{tool}.md"
    if tool == "cost" and summary.name == "cost.md" and len(names) == len(tokenmix.available()):
        summary = out / "cost_summary.md"   # cost.md is the generated docs table
    summary.write_text(f"# tokenmix analyze {tool} --mixer {mixer}\n\n" + "\n".join(lines) + "\n")
    if console is not None:
        figures = sorted(path.name for path in out.glob("*.png"))
        console.print(f"wrote {summary}" + (f" and {len(figures)} figure(s) in {out}" if figures else ""))
    return summary
