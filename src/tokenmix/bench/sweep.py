"""Sweeps: one run config expanded over learning rates and seeds, and the choice of the best learning rate.

Zoology sweeps the learning rate per mixer and reports the best, because mixers differ in the rate they need; the
report does the same, saying so: for each (task, setting, model, mixer) it averages each learning rate's runs over
their seeds and keeps the rate with the best mean accuracy.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Sequence

from tokenmix.bench.config import RunConfig
from tokenmix.errors import MixerInputError


def parse_numbers(text: str | None, what: str, kind: type = float) -> list | None:
    """`"1e-3,3e-3"` → `[0.001, 0.003]` (None stays None); a bad entry raises `MixerInputError`."""
    if text is None:
        return None
    values = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            values.append(kind(part))
        except ValueError:
            raise MixerInputError(f"{what} must be a comma-separated list of {kind.__name__} values, "
                                  f"got {text!r}") from None
    if not values:
        raise MixerInputError(f"{what} is empty")
    return values


def expand(configs: Iterable[RunConfig], learning_rates: Sequence[float] | None = None,
           seeds: Sequence[int] | None = None) -> list[RunConfig]:
    """Every config once per learning rate and seed (None keeps the config's own), learning rate outermost."""
    expanded = []
    for config in configs:
        rates = learning_rates or [config.training.learning_rate]
        for rate, seed in itertools.product(rates, seeds or [config.training.seed]):
            training = dataclasses.replace(config.training, learning_rate=rate, seed=seed)
            expanded.append(dataclasses.replace(config, training=training))
    return expanded
