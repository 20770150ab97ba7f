"""How long a suite will take, before running it: each distinct run shape is built and timed for a few steps.

`tokenmix bench --suite NAME --plan` prints this instead of training. Runs that differ only in learning rate or seed
cost the same, so one probe serves them all: a probe builds the task (its data are generated and cached, as the run
would) and the model, times `probe_steps` training steps (forward, backward, clipping, AdamW) after one untimed
step, and one evaluation batch; a run's estimate is `steps × step time + evaluations × test batches × batch time`.
Not counted: generating the data the first time and checkpoints; on the idle development machine the quick
suite's runs took 4% longer than its plan (docs/quality.md). Early stopping (`target_accuracy`)
can only shorten a run. The probe runs on the machine the suite will run on, under its present load: a busy
machine gives a pessimistic plan.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from tokenmix.bench.config import RunConfig
from tokenmix.bench.environment import resolve_device
from tokenmix.bench.store import ResultsStore
from tokenmix.bench.train import build_model, evaluate, make_optimizer, resolve_precision
from tokenmix.tasks import Split, create_task

PROBE_STEPS = 3


@dataclass(frozen=True)
class RunEstimate:
    """One run's predicted cost; `done` runs are finished in the store and cost nothing."""

    config: RunConfig
    seconds: float
    done: bool = False


def shape_key(config: RunConfig) -> tuple:
    """What a run's cost depends on: everything but the learning rate, the seed and the early-stopping target."""
    training = config.training
    return (config.task, repr(sorted(config.task_params.items())), config.mixer,
            repr(sorted(config.mixer_options.items())), config.model, training.batch_size, training.eval_batch_size,
            training.precision)


def _median_seconds(function: Callable[[], None], repeats: int, device: torch.device) -> float:
    """Each call timed alone (a training step changes the model, so no autorange); CUDA synchronized around it."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def probe(config: RunConfig, *, device: str = "auto", probe_steps: int = PROBE_STEPS) -> tuple[float, float, int]:
    """`(seconds per training step, seconds per evaluation, training examples)` of `config` on this machine."""
    task = create_task(config.task, **config.task_params)
    torch_device = resolve_device(device)
    torch.manual_seed(config.training.seed)
    model = build_model(config, task).to(torch_device)
    optimizer = make_optimizer(model, config.training)
    train_split, test_split = task.split("train"), task.split("test")
    batch = torch.arange(min(config.training.batch_size, len(train_split)))
    inputs, targets = train_split.inputs[batch].to(torch_device), train_split.targets[batch].to(torch_device)

    precision = resolve_precision(config.training.precision, torch_device)

    def step() -> None:  # as `train._fit` takes one
        with torch.autocast(torch_device.type, dtype=precision, enabled=precision != torch.float32):
            logits = model(inputs)
        loss = task.loss(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.training.gradient_clip)
        optimizer.step()

    step()  # the first step allocates and warms caches: not timed
    step_seconds = _median_seconds(step, probe_steps, torch_device)
    eval_size = min(config.training.eval_batch_size, len(test_split))
    head = Split(test_split.inputs[:eval_size], test_split.targets[:eval_size], test_split.groups[:eval_size])
    batch_seconds = _median_seconds(lambda: evaluate(model, task, head, eval_size, torch_device), 1, torch_device)
    evaluation_seconds = batch_seconds * -(-len(test_split) // eval_size)
    return step_seconds, evaluation_seconds, len(train_split)


def evaluations(config: RunConfig, train_examples: int) -> int:
    """How many times a run evaluates the test split: every `eval_every` steps (0: at the end of every epoch of
    `train_examples`, the last partial batch dropped) and after the last step."""
    training = config.training
    interval = training.eval_every or max(1, train_examples // training.batch_size)
    return training.steps // interval + (training.steps % interval != 0)


def estimate(configs: Iterable[RunConfig], store: ResultsStore | None = None, *, device: str = "auto",
             probe_steps: int = PROBE_STEPS, on_probe: Callable[[RunConfig], None] | None = None,
             ) -> list[RunEstimate]:
    """The predicted cost of every run in `configs`, probing each distinct shape once (see the module)."""
    probes: dict[tuple, tuple[float, float, int]] = {}
    estimates = []
    for config in configs:
        if store is not None and store.is_finished(config.as_dict()):
            estimates.append(RunEstimate(config, 0.0, done=True))
            continue
        key = shape_key(config)
        if key not in probes:
            if on_probe is not None:
                on_probe(config)
            probes[key] = probe(config, device=device, probe_steps=probe_steps)
        step_seconds, evaluation_seconds, train_examples = probes[key]
        seconds = config.training.steps * step_seconds + evaluations(config, train_examples) * evaluation_seconds
        estimates.append(RunEstimate(config, seconds))
    return estimates


def summarize_plan(estimates: list[RunEstimate], by: str = "task") -> list[dict]:
    """Rows per task (`by="task"`) or per mixer (`by="mixer"`): runs, runs left, the estimated seconds of those left
    and the slowest run left (largest first)."""
    rows: dict[str, dict] = {}
    for item in estimates:
        name = getattr(item.config, by)
        other = item.config.mixer if by == "task" else item.config.task
        row = rows.setdefault(name, {by: name, "runs": 0, "left": 0, "seconds": 0.0, "slowest": ("", 0.0)})
        row["runs"] += 1
        if not item.done:
            row["left"] += 1
            row["seconds"] += item.seconds
            if item.seconds > row["slowest"][1]:
                row["slowest"] = (other, item.seconds)
    return sorted(rows.values(), key=lambda row: -row["seconds"])
