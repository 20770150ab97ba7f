"""Train a `SequenceModel` on a task and record the run in the results database.

AdamW with linear warm-up and cosine decay, gradient clipping, a seeded model and data order; the test split is
evaluated at the end of every epoch (or every `eval_every` steps) and after the last step. With a store the run's
row goes `running` at the start and `finished` (with its metrics) at the end; a run whose row is already finished
is not trained again.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from tokenmix.bench.config import RunConfig, TrainingSettings
from tokenmix.bench.environment import environment, resolve_device
from tokenmix.bench.store import ResultsStore, run_id
from tokenmix.errors import MixerInputError
from tokenmix.models import SequenceModel, VisionModel
from tokenmix.tasks import Split, Task, create_task


@dataclass(frozen=True)
class RunOutcome:
    """What `train` returns: the run's id, its metrics and whether it was skipped as already finished."""

    run_id: str
    metrics: dict[str, Any]
    skipped: bool = False


def build_model(config: RunConfig, task: Task) -> nn.Module:
    """The backbone for the task's input: a `SequenceModel` for tokens and values (pooled over positions when the
    task has one target per example), a one-stage `VisionModel` for images."""
    settings = config.model
    if task.input_kind == "image":
        return VisionModel(config.mixer, in_channels=task.input_channels, num_classes=task.num_classes,
                           depths=(settings.depth,), dims=(settings.dim,), mixer_options=config.mixer_options,
                           patch_size=settings.patch_size, mlp_ratio=settings.mlp_ratio)
    if task.input_kind not in ("tokens", "values"):  # e.g. the PDE tasks ("grid"): bench/operator_train.py
        raise MixerInputError(f"task {config.task} has input kind {task.input_kind!r}; `tokenmix train` takes tasks "
                              "of kind 'tokens', 'values' or 'image'")
    return SequenceModel(
        vocab_size=task.vocab_size, dim=settings.dim, depth=settings.depth, mixer=config.mixer,
        mixer_options=config.mixer_options, num_classes=task.num_classes, mlp_ratio=settings.mlp_ratio,
        max_length=task.sequence_length if settings.position_embedding else None,
        input_channels=task.input_channels if task.input_kind == "values" else None,
        pooling="mean" if task.target_kind == "per_example" else None)


def learning_rate_factor(step: int, settings: TrainingSettings) -> float:
    """Multiplier of the peak learning rate at `step`: linear warm-up, then a cosine down to zero."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, settings: TrainingSettings) -> torch.optim.AdamW:
    # Weight decay on matrices only: decaying norm gains and biases only fights the normalization.
    decayed = [p for p in model.parameters() if p.ndim >= 2]
    kept = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decayed, "weight_decay": settings.weight_decay}, {"params": kept, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.learning_rate, betas=(0.9, 0.98))


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, split: Split, batch_size: int, device: torch.device) -> dict[str, Any]:
    """The task's metrics of `model` on `split`."""
    was_training = model.training
    model.eval()
    correct, scored = [], []
    for start in range(0, len(split), batch_size):
        logits = model(split.inputs[start:start + batch_size].to(device))
        batch_correct, batch_scored = task.count_correct(logits, split.targets[start:start + batch_size].to(device))
        correct.append(batch_correct.cpu())
        scored.append(batch_scored.cpu())
    model.train(was_training)
    return task.summarize(torch.cat(correct), torch.cat(scored), split.groups)


def train(config: RunConfig, store: ResultsStore | None = None, *, device: str = "auto",
          progress: bool | None = None, console: Console | None = None, label: str | None = None) -> RunOutcome:
    """Train `config`; with `store`, record it there (and return the stored metrics if it is already finished).

    `progress=None` shows a progress bar when the console is a terminal and prints a line per evaluation when it
    is not (a log then still shows that the run is alive); `progress=False` is silent.
    """
    config_dict = config.as_dict()  # validates the task name and parameters before anything is written
    key = run_id(config_dict)
    if store is not None and store.is_finished(config_dict):
        return RunOutcome(key, store.get(key)["metrics"], skipped=True)

    task = create_task(config.task, **config.task_params)
    settings = config.training
    torch_device = resolve_device(device)
    torch.manual_seed(settings.seed)
    model = build_model(config, task).to(torch_device)  # bad mixer names or options fail here, before the DB row
    if store is not None:
        store.start(config_dict, environment(torch_device, torch.float32))
    try:
        metrics = _fit(model, task, settings, torch_device, progress, console or Console(), label or config.mixer)
    except BaseException as error:  # KeyboardInterrupt too: the row says why it stopped, and is re-run next time
        if store is not None:
            reason = "interrupted" if isinstance(error, KeyboardInterrupt) else f"{type(error).__name__}: {error}"
            store.fail(key, reason)
        raise
    if store is not None:
        store.finish(key, metrics)
    return RunOutcome(key, metrics)


def _fit(model: nn.Module, task: Task, settings: TrainingSettings, device: torch.device, progress: bool | None,
         console: Console, label: str) -> dict[str, Any]:
    train_split, test_split = task.split("train"), task.split("test")
    optimizer = make_optimizer(model, settings)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, settings))
    order_generator = torch.Generator().manual_seed(settings.seed)
    steps_per_epoch = max(1, len(train_split) // settings.batch_size)  # the last partial batch is dropped
    history: list[dict[str, Any]] = []
    smoothed_loss = float("nan")
    show = console.is_terminal if progress is None else progress
    log_evaluations = progress is None and not show
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[accuracy]}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not show, transient=False)
    start_time = time.perf_counter()
    model.train()
    with bar:
        bar_task = bar.add_task(label, total=settings.steps, loss=float("nan"), accuracy="-")
        for step in range(settings.steps):
            epoch, index_in_epoch = divmod(step, steps_per_epoch)
            if index_in_epoch == 0:
                order = torch.randperm(len(train_split), generator=order_generator)
            batch = order[index_in_epoch * settings.batch_size:(index_in_epoch + 1) * settings.batch_size]
            logits = model(train_split.inputs[batch].to(device))
            loss = task.loss(logits, train_split.targets[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), settings.gradient_clip)
            optimizer.step()
            schedule.step()
            value = loss.item()
            smoothed_loss = value if math.isnan(smoothed_loss) else 0.9 * smoothed_loss + 0.1 * value
            if not math.isfinite(value):
                raise FloatingPointError(f"the training loss became {value} at step {step}")
            if settings.eval_every:
                due = (step + 1) % settings.eval_every == 0
            else:
                due = index_in_epoch == steps_per_epoch - 1
            if due or step == settings.steps - 1:
                scores = evaluate(model, task, test_split, settings.eval_batch_size, device)
                history.append({"step": step + 1, "epoch": epoch + 1, "accuracy": scores["accuracy"],
                                "token_accuracy": scores["token_accuracy"]})
                bar.update(bar_task, accuracy=f"{scores['accuracy']:.3f}")
                if log_evaluations:
                    console.print(f"{label}: step {step + 1}/{settings.steps}, loss {smoothed_loss:.3f}, "
                                  f"accuracy {100 * scores['accuracy']:.1f}%", highlight=False)
            bar.update(bar_task, advance=1, loss=smoothed_loss)
    train_seconds = time.perf_counter() - start_time
    return {**scores, "train_loss": smoothed_loss, "train_seconds": round(train_seconds, 3),
            "parameters": model.num_parameters(), "steps": settings.steps, "history": history}
