"""Benchmark suites: lists of runs. `tokenmix bench` runs the default one, skipping runs already finished.

The default suite compares the four linear-attention-family baselines on one small MQAR setting, sized so that the
whole suite takes a few minutes on a 2-core CPU and softmax attention solves it (≥ 99% of examples right).
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

import tokenmix
from tokenmix.bench.config import ModelSettings, RunConfig, TrainingSettings
from tokenmix.bench.store import ResultsStore
from tokenmix.bench.train import RunOutcome, train

DEFAULT_MIXERS = ("attention", "linear_attention", "retnet", "gla")

# Measured on a 2-core CPU (see docs/quality.md and `tokenmix bench`): attention crosses 99% well before the last
# step with this learning rate; fewer steps or a lower rate leave it short of 99% on some seeds.
DEFAULT_TASK = {"vocab_size": 128, "sequence_length": 64, "num_kv_pairs": (4, 8), "num_train_examples": 10_000,
                "num_test_examples": 1_000, "seed": 0}
DEFAULT_MODEL = ModelSettings(dim=64, depth=2, mlp_ratio=4.0, position_embedding=False)
DEFAULT_TRAINING = TrainingSettings(steps=800, batch_size=64, learning_rate=3e-3, weight_decay=0.1, warmup_steps=50,
                                    gradient_clip=1.0, seed=0)


def default_suite() -> list[RunConfig]:
    """The runs of `tokenmix bench`: each default mixer on the default MQAR setting, one seed."""
    return [RunConfig(task="mqar", mixer=mixer, task_params=dict(DEFAULT_TASK), model=DEFAULT_MODEL,
                      training=DEFAULT_TRAINING) for mixer in DEFAULT_MIXERS]


SUITES: dict[str, Callable[[], list[RunConfig]]] = {"default": default_suite}


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
