"""Benchmark suites: training runs (and a speed sweep) that `tokenmix bench --suite NAME` runs, skipping what is done.

- `quick` (the default): about ten minutes on 2 idle CPU cores. MQAR at one small setting for softmax attention,
  the delta rule, a gated linear attention and a gated long convolution, so the zoology ordering shows (attention
  and DeltaNet solve it, GLA without a short convolution and Hyena fall far behind), MNIST-1D with attention, and
  a short forward-time sweep. Measured (2026-11-21, AMD EPYC 2 cores, torch 2.13 CPU): attention 47 s (99.9%),
  deltanet 139 s (99.0%), gla 134 s (0.0%), hyena 84 s (1.5%), attention on MNIST-1D 116 s (89.8%); based
  (99.9%, 221 s) and mamba2 (0.0%, 161 s, then with 4 heads of 32; 99.8% at the paper's head dim 64, seed 0, and
  seed-dependent: docs/quality.md) were dropped from it to keep it near ten minutes.
- `standard`: a few hours on a CPU (`tokenmix bench --suite standard --plan` times it on the machine at hand; here
  4.2 h on 2 idle cores, docs/quality.md). Eight mixers, one or two per family: MQAR at two widths and two learning
  rates, Zoology's (length, pairs) grid up to length 256 tested beyond it, selective copying and induction heads at
  length 128, and MNIST-1D and digits over 3 seeds. (A first cut with 15 mixers and 2,000-step runs was estimated at
  ~28 hours on 2 idle cores.)
- `vision`: every vision grid mixer in the MetaFormer backbone on digits as 8×8 images (patch 2), 3 seeds, with the
  forward throughput of each trained model (issues 7 and 8); see `vision_suite`. `vision-shapes`: the same on the
  global-shapes task (16×16 images, patch 2); see `vision_shapes_suite`.
- `full`: for a GPU or a cluster. Every causal sequence mixer on the full MQAR grid at three widths, four learning
  rates, 3 seeds, and the long-range tasks.

The MQAR setting of `quick` was tuned on a 2-core CPU so that attention solves it (≥ 99%) with margin:
- vocabulary 64: each key and value embedding is trained often enough for attention's recall circuit to form
  within a few hundred steps (with 128 it formed later and plateaued near 97% in the same budget);
- 64,000 training examples, one pass at 1,000 steps × 64, so none is seen twice: with 10,000 examples repeated
  for six epochs the training loss reached 0 while test accuracy stayed at 98.6% (memorization);
- learned absolute positions in the backbone (for every mixer): a noise token can repeat a key after the context,
  and knowing where the context ends settles which occurrence holds the answer (without them attention ended at
  98.6–99.6% depending on the seed; with them 99.9–100% over two seeds);
- 1,000 steps: the recall circuit forms abruptly somewhere between steps 200 and 600 depending on the seed, and
  the rest of the cosine schedule polishes it; with 800 steps, seed 0 formed it late and ended at 99.1%.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console

import tokenmix
from tokenmix.bench.config import ModelSettings, RunConfig, TrainingSettings
from tokenmix.bench.store import ResultsStore
from tokenmix.bench.sweep import expand
from tokenmix.bench.train import RunOutcome, train

DEFAULT_TASK = {"vocab_size": 64, "sequence_length": 64, "num_kv_pairs": (4, 8), "num_train_examples": 64_000,
                "num_test_examples": 1_000, "seed": 0}
DEFAULT_MODEL = ModelSettings(dim=64, depth=2, mlp_ratio=4.0, position_embedding=True)
DEFAULT_TRAINING = TrainingSettings(steps=1000, batch_size=64, learning_rate=3e-3, weight_decay=0.1,
                                    warmup_steps=50, gradient_clip=1.0, seed=0, eval_every=200)

# One main member of four families: softmax attention, a gated linear attention, the delta rule and a gated long
# convolution (see the module's docstring for the times that chose them).
QUICK_MQAR_MIXERS = ("attention", "gla", "deltanet", "hyena")
QUICK_MNIST1D_MIXERS = ("attention",)
QUICK_SPEED_MIXERS = ("attention", "gla", "deltanet", "hyena")
# One or two members of each family, the cheaper where a family has several (a probe of one MQAR step at the quick
# setting, 1 thread, loaded: mamba 875 ms, based 667, mlstm 500, gated_deltanet 476, mamba2 445, deltanet 387,
# sliding_window 280, hyena 267, s4d 232, retnet 226, h3 214, hgrn2 213, gla 192, attention 180, linear_attention 175).
# Based, Zoology's own recall mixer, is left out for its cost: with it in place of linear_attention the suite was
# estimated at 5.3 h on 2 idle cores (`--plan`), 1.7 h of it Based's.
STANDARD_MIXERS = ("attention", "sliding_window", "linear_attention", "gla", "deltanet", "mamba2", "hyena", "s4d")
STANDARD_TRAINING = TrainingSettings(steps=1000, batch_size=64, learning_rate=3e-3, warmup_steps=100, eval_every=500)
STANDARD_CLASSIFICATION = TrainingSettings(steps=1000, batch_size=100, learning_rate=3e-3, weight_decay=0.1,
                                           warmup_steps=100, eval_every=500)
STANDARD_GRID = {"vocab_size": 256, "train_settings": [[64, 4], [128, 8], [256, 16]],
                 "test_settings": [[64, 4], [128, 8], [256, 16], [256, 32], [512, 16]],
                 "num_train_examples": 96_000, "num_test_examples": 1_000}
MNIST1D_TRAINING = TrainingSettings(steps=2000, batch_size=100, learning_rate=3e-3, weight_decay=0.1,
                                    warmup_steps=100, seed=0, eval_every=500)


@dataclass(frozen=True)
class Suite:
    """A suite: its training runs and, optionally, the speed sweep that goes with them."""

    name: str
    runs: list[RunConfig]
    speed: object | None = None  # a `SpeedSettings`; typed loosely so importing suites does not import the sweep
    notes: tuple[str, ...] = field(default=())


def _mqar(mixers, model: ModelSettings = DEFAULT_MODEL, training: TrainingSettings = DEFAULT_TRAINING,
          task: str = "mqar", params: dict | None = None) -> list[RunConfig]:
    return [RunConfig(task=task, mixer=mixer, task_params=dict(DEFAULT_TASK if params is None else params),
                      model=model, training=training) for mixer in mixers]


def _classification(task: str, mixers, training: TrainingSettings, params: dict | None = None,
                    model: ModelSettings = ModelSettings(dim=64, depth=2, position_embedding=True)) -> list[RunConfig]:
    return [RunConfig(task=task, mixer=mixer, task_params=dict(params or {}), model=model, training=training)
            for mixer in mixers]


def quick_suite() -> Suite:
    from tokenmix.bench.speed import SpeedSettings

    runs = _mqar(QUICK_MQAR_MIXERS) + _classification("mnist1d", QUICK_MNIST1D_MIXERS, MNIST1D_TRAINING)
    speed = SpeedSettings(mixers=QUICK_SPEED_MIXERS, lengths=(256, 512, 1024, 2048), dim=128, heads=4, mode="fwd",
                          min_run_time=0.1, max_seconds=10.0)
    return Suite("quick", runs, speed)


def standard_suite() -> Suite:
    from tokenmix.bench.speed import SpeedSettings

    # MQAR at the quick suite's setting, at two widths, over two learning rates (the report takes each mixer's best
    # rate, as Zoology does over its four)
    runs = expand(_mqar(STANDARD_MIXERS) + _mqar(STANDARD_MIXERS, model=ModelSettings(dim=128, depth=2)),
                  (1e-3, 3e-3))
    # Zoology's grid up to length 256, tested beyond it: twice the pairs and twice the length. No learned positions:
    # a learned table has untrained rows past the trained lengths; each mixer's own sense of order (rotary, short
    # convolutions, decays) is what extrapolates
    grid_model = ModelSettings(dim=128, depth=2, position_embedding=False)
    runs += _mqar(STANDARD_MIXERS, grid_model, STANDARD_TRAINING, task="mqar_grid", params=STANDARD_GRID)
    for task in ("selective_copying", "induction_heads"):
        runs += _classification(task, STANDARD_MIXERS, STANDARD_TRAINING, {"sequence_length": 128})
    for task in ("mnist1d", "digits"):  # 3 seeds: the report's intervals
        runs += expand(_classification(task, STANDARD_MIXERS, STANDARD_CLASSIFICATION), None, (0, 1, 2))
    speed = SpeedSettings(mixers=STANDARD_MIXERS, lengths=(256, 512, 1024, 2048, 4096, 8192), dim=256, heads=4,
                          mode="fwd", min_run_time=0.2, max_seconds=30.0)
    return Suite("standard", runs, speed)


def full_suite() -> Suite:
    from tokenmix.bench.speed import SpeedSettings

    causal = [name for name in tokenmix.available("sequence") if tokenmix.spec(name).causal != "never"]
    rates, seeds = (3e-4, 1e-3, 3e-3, 1e-2), (0, 1, 2)
    training = TrainingSettings(steps=20_000, batch_size=64, learning_rate=1e-3, warmup_steps=1000, eval_every=2000)
    runs = []
    for dim in (64, 128, 256):
        runs += expand(_mqar(causal, ModelSettings(dim=dim, depth=2, position_embedding=False), training,
                             task="mqar_grid", params={}),
                       rates, seeds)
    long_training = TrainingSettings(steps=50_000, batch_size=32, learning_rate=1e-3, warmup_steps=1000,
                                     eval_every=5000)
    for task in ("listops", "pathfinder"):
        runs += expand(_classification(task, causal, long_training), rates, seeds)
    speed = SpeedSettings(mixers=tuple(causal), lengths=tuple(2 ** k for k in range(8, 17)), dim=512, heads=8,
                          mode="fwdbwd", min_run_time=0.5, max_seconds=120.0)
    return Suite("full", runs, speed)


# The vision suites (issues 7 and 8): every vision grid mixer in one isotropic MetaFormer (width 32, 2 blocks, MLP ×4)
# on an image task, 3 seeds at one learning rate, each run also measuring its model's forward images per second.
#
# `vision` (digits): patch 2, so the mixers see a 4×4 grid of 2×2 patches. With patch 1 (an 8×8 grid) the pooled
# features of a fresh model depend on little more than each image's histogram of pixel values, and every mixer sat at
# chance (loss ln 10) for the first 100-150 steps (depthwise_conv, afno; width 32, batch 32, lr 3e-3 or 1e-2); with
# patch 2 depthwise_conv reaches 89% in 200 steps, vit_attention 53%, afno 36% (one seed), so the budget separates
# the mixers.
#
# `vision-shapes` (global_shapes, 16×16 images, the shapes ≥ 8 pixels apart): patch 2, an 8×8 grid. A pilot at 300
# steps of 32 (seed 0, 2026-12-07) gave depthwise_conv, vit_attention and dcnv4 100% and gfnet 58%, at 8-17 s of CPU a
# run. With patch 1 (a 16×16 grid) vit_attention needed 1,500 steps at lr 1e-3 (docs/quality.md), 5× the budget.
VISION_MODEL = ModelSettings(dim=32, depth=2, mlp_ratio=4.0, patch_size=2)
VISION_TRAINING = TrainingSettings(steps=200, batch_size=32, learning_rate=3e-3, weight_decay=0.1, warmup_steps=20,
                                   eval_every=200)
SHAPES_TRAINING = TrainingSettings(steps=300, batch_size=32, learning_rate=3e-3, weight_decay=0.1, warmup_steps=30,
                                   eval_every=300)
SHAPES_PARAMS = {"view": "image", "size": 16, "min_separation": 8, "num_train_examples": 4000,
                 "num_test_examples": 500}
VISION_SEEDS = (0, 1, 2)
# Run after the others of each seed: ss2d costs 2.3 s of CPU per training step at 8×8 and batch 64 with its fastest
# form (`blocked`; `auto` 17 s), about 30× the median mixer, so a stopped suite loses it first.
VISION_LAST = ("ss2d",)


def vision_options(side: int) -> dict[str, dict]:
    """Options that fit a mixer to a `side × side` grid (the others run at their defaults).

    - Large kernels: 2·side − 1 reaches every position from every position, so larger kernels (31, 51) only add
      weights that never touch the image (7 on a 4×4 grid, 15 on 8×8); the small parallel branch is 3 below 8×8.
    - Mixers with weights for a fixed resolution are built for the grid.
    - Local attention keeps windows smaller than the grid: Swin windows of side / 2; Halo blocks of side / 2 with a
      halo of 1; neighborhood windows of side / 2 + 1 (3×3 on 4×4), with its reference form, which costs 1/16 of its
      `gather` form at these sizes (0.088 s against 1.40 s of CPU per training step measured at 8×8, batch 64).
    - ss2d runs its fastest form here, `blocked`."""
    kernel, small = 2 * side - 1, 3 if side < 8 else 5
    return {
        "replknet": {"kernel_size": kernel, "small_kernel_size": small},
        "slak": {"kernel_size": kernel, "small_kernel_size": small}, "smpconv": {"kernel_size": kernel},
        "unireplknet": {"kernel_size": min(13, kernel)}, "dcls": {"dilated_kernel_size": min(13, kernel)},
        **{name: {"resolution": side} for name in ("gfnet", "grid_token_mlp", "gmlp", "resmlp", "levit_attention")},
        "swin_attention": {"window_size": side // 2}, "halo_attention": {"block_size": side // 2, "halo_size": 1},
        "neighborhood_attention": {"kernel_size": side // 2 + 1, "impl": "reference"},
        "ss2d": {"impl": "blocked"},
    }


VISION_OPTIONS = vision_options(4)  # digits at patch 2


def vision_mixers() -> list[str]:
    """Every registered 2D grid mixer that is a vision mixer (not a neural operator: issue 9 measures those on
    PDEs), the costly ones (`VISION_LAST`) at the end."""
    names = [name for name in tokenmix.available("grid") if tokenmix.spec(name).family != "neural-operator"
             and 2 in tokenmix.spec(name).spatial_dims]
    return [name for name in names if name not in VISION_LAST] + [name for name in VISION_LAST if name in names]


def _vision_runs(task: str, params: dict, training: TrainingSettings, options: dict[str, dict]) -> list[RunConfig]:
    """Every vision mixer on `task`, seed-major (a stopped suite leaves whole seeds)."""
    return [RunConfig(task=task, mixer=mixer, task_params=dict(params), mixer_options=dict(options.get(mixer, {})),
                      model=VISION_MODEL, training=dataclasses.replace(training, seed=seed))
            for seed in VISION_SEEDS for mixer in vision_mixers()]


def vision_suite() -> Suite:
    """Accuracy against forward throughput: every vision mixer on digits as 8×8 images (patch 2, so a 4×4 grid;
    width 32, 2 blocks), 3 seeds at one learning rate, 200 steps of 32 (about 4.5 epochs of the 1,437 training
    images); each run also measures its model's forward images per second (batch 250, `bench/throughput.py`).
    About 15-20 minutes of one core when the machine is quiet."""
    return Suite("vision", _vision_runs("digits", {"view": "image"}, VISION_TRAINING, VISION_OPTIONS))


def vision_shapes_suite() -> Suite:
    """The same on the global-receptive-field task: global_shapes at 16×16 (the shapes at least 8 pixels apart,
    4,000 training images), patch 2 (an 8×8 grid), 300 steps of 32 (2.4 epochs). 53 minutes of one core beside
    other jobs (2026-12-07), a third of it ss2d's three runs."""
    return Suite("vision-shapes", _vision_runs("global_shapes", SHAPES_PARAMS, SHAPES_TRAINING, vision_options(8)))


SUITES: dict[str, Callable[[], Suite]] = {"quick": quick_suite, "standard": standard_suite, "full": full_suite,
                                          "vision": vision_suite, "vision-shapes": vision_shapes_suite}


def run_suite(configs: list[RunConfig], store: ResultsStore, *, progress: bool | None = None,
              console: Console | None = None, device: str = "auto") -> list[RunOutcome]:
    """Run every config not yet finished in `store`, in order; a finished row is never redone or overwritten."""
    console = console or Console()
    for config in configs:  # fail on a bad name before spending minutes on the runs before it
        tokenmix.spec(config.mixer)
        config.as_dict()
    outcomes = []
    for index, config in enumerate(configs, start=1):
        label = f"[{index}/{len(configs)}] {config.mixer}"
        outcome = train(config, store, device=device, progress=progress, console=console, label=label)
        verb = "already finished" if outcome.skipped else f"finished in {outcome.metrics['train_seconds']:.0f} s"
        console.print(f"{label} on {config.task}: accuracy {100 * outcome.metrics['accuracy']:.1f}% "
                      f"({verb}, run {outcome.run_id})")
        outcomes.append(outcome)
    return outcomes
