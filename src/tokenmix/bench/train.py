"""Train a model on a task and record the run in the results database.

AdamW with linear warm-up and cosine decay, gradient clipping, autocast to bfloat16 where the device supports it,
a seeded model and data order; the test split is evaluated at the end of every epoch (or every `eval_every` steps)
and after the last step, and training stops early once `target_accuracy` is reached. With a store the run's row
goes `running` at the start and `finished` (with its metrics) at the end; a run whose row is already finished is
not trained again, and a killed run resumes from its checkpoint (`bench/checkpoint.py`). Under `torchrun` the
processes train data-parallel (`bench/distributed.py`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as ProgressBar
from torch import nn

from tokenmix.bench import distributed
from tokenmix.bench.checkpoint import (RunProgress, checkpoint_path, final_weights_path, load_checkpoint, save_checkpoint,
                                       save_weights)
from tokenmix.bench.config import RunConfig, TrainingSettings
from tokenmix.bench.environment import environment, resolve_device
from tokenmix.bench.store import ResultsStore, run_id
from tokenmix.bench.throughput import forward_throughput
from tokenmix.errors import MixerInputError
from tokenmix.models import SequenceModel, VisionModel
from tokenmix.tasks import IGNORE_INDEX, Split, Task, create_task


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
        # a task testing longer lengths than it trains on says so (max_sequence_length): positions past the training
        # lengths are then untrained rows of the table, which is what such a test measures
        max_length=getattr(task, "max_sequence_length", task.sequence_length) if settings.position_embedding else None,
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


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype of training: "auto" is bfloat16 on a CUDA device that supports it, else float32."""
    if precision == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[precision]


def train(config: RunConfig, store: ResultsStore | None = None, *, device: str = "auto",
          progress: bool | None = None, console: Console | None = None, label: str | None = None) -> RunOutcome:
    """Train `config`; with `store`, record it there (and return the stored metrics if it is already finished).

    With a store the run keeps a checkpoint at every evaluation (and at least every `CHECKPOINT_SECONDS`), so a
    killed run resumes where it was; its final weights are kept at `checkpoint.final_weights_path(run_id)`.
    Under `torchrun` the processes train data-parallel (`bench/distributed.py`); only rank 0 writes.
    `progress=None` shows a progress bar when the console is a terminal and prints a line per evaluation when it
    is not (a log then still shows that the run is alive); `progress=False` is silent.
    """
    config_dict = config.as_dict()  # validates the task name and parameters before anything is written
    key = run_id(config_dict)
    world = distributed.world_from_environment()
    # Every rank resumes from the checkpoint (they must stay identical); only rank 0 writes it and the database.
    checkpoint = checkpoint_path(key) if store is not None else None
    if store is not None and store.is_finished(config_dict):  # every rank reads it, so all of them skip together
        return RunOutcome(key, store.get(key)["metrics"], skipped=True)
    if not world.is_main:
        store = None

    task = create_task(config.task, **config.task_params)
    settings = config.training
    torch_device = distributed.local_device(resolve_device(device), world)
    distributed.setup(world, torch_device, settings.batch_size)
    torch.manual_seed(settings.seed)
    model = build_model(config, task).to(torch_device)  # bad mixer names or options fail here, before the DB row
    precision = resolve_precision(settings.precision, torch_device)
    if store is not None:
        store.start(config_dict, {**environment(torch_device, precision), "processes": world.size})
    console = console or Console()
    try:
        metrics = _fit(model, task, settings, torch_device, precision, world, checkpoint,
                       progress if world.is_main else False, console, label or config.mixer)
        distributed.check_replicas_agree(model, world)
        if task.input_kind == "image":  # accuracy against images per second, from the same model (throughput.py)
            images = task.split("test").inputs[:settings.eval_batch_size].to(torch_device)
            metrics.update(forward_throughput(model, images))
    except BaseException as error:  # KeyboardInterrupt too: the row says why it stopped, and is re-run next time
        if store is not None:
            reason = "interrupted" if isinstance(error, KeyboardInterrupt) else f"{type(error).__name__}: {error}"
            store.fail(key, reason)
        raise
    if store is not None:
        save_weights(final_weights_path(key), model, config_dict)
        store.finish(key, metrics)
        checkpoint_path(key).unlink(missing_ok=True)
    return RunOutcome(key, metrics)


CHECKPOINT_SECONDS = 60.0  # at most this much training is lost when a run is killed between evaluations


def _fit(model: nn.Module, task: Task, settings: TrainingSettings, device: torch.device, precision: torch.dtype,
         world: distributed.World, checkpoint: Path | None, progress: bool | None, console: Console,
         label: str) -> dict[str, Any]:
    train_split, test_split = task.split("train"), task.split("test")
    trained = distributed.wrap(model, world, device)
    optimizer = make_optimizer(model, settings)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, settings))
    order_generator = torch.Generator().manual_seed(settings.seed)
    steps_per_epoch = max(1, len(train_split) // settings.batch_size)  # the last partial batch is dropped
    state = RunProgress(step=0, history=[], smoothed_loss=float("nan"))
    order = torch.empty(0, dtype=torch.long)
    if checkpoint is not None and checkpoint.exists():
        state, order = load_checkpoint(checkpoint, model, optimizer, schedule, order_generator)
        if world.is_main:
            console.print(f"{label}: resuming from the checkpoint at step {state.step}", highlight=False)
    show = console.is_terminal if progress is None else progress
    log_evaluations = progress is None and not show
    bar = ProgressBar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[accuracy]}"),
                       TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not show,
                       transient=False)
    start_time = last_checkpoint = time.perf_counter()
    seconds_before = state.history[-1]["seconds"] if state.history else 0.0
    scores: dict[str, Any] | None = None
    model.train()
    with bar:
        last_accuracy = f"{state.history[-1]['accuracy']:.3f}" if state.history else "-"
        bar_task = bar.add_task(label, total=settings.steps, completed=state.step, loss=state.smoothed_loss,
                                accuracy=last_accuracy)
        while state.step < settings.steps:
            step = state.step
            epoch, index_in_epoch = divmod(step, steps_per_epoch)
            if index_in_epoch == 0:
                order = torch.randperm(len(train_split), generator=order_generator)
            batch = order[index_in_epoch * settings.batch_size:(index_in_epoch + 1) * settings.batch_size]
            local = world.shard(batch)
            targets = train_split.targets[local].to(device)
            with torch.autocast(device.type, dtype=precision, enabled=precision != torch.float32):
                logits = trained(train_split.inputs[local].to(device))
            loss = task.loss(logits, targets)
            scale = distributed.loss_scale(targets, train_split.targets[batch], world, IGNORE_INDEX)
            optimizer.zero_grad(set_to_none=True)
            loss = loss * scale
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), settings.gradient_clip)
            optimizer.step()
            schedule.step()
            value = distributed.global_loss(loss, world)
            if not math.isfinite(value):
                raise FloatingPointError(f"the training loss became {value} at step {step}")
            state.smoothed_loss = value if math.isnan(state.smoothed_loss) else 0.9 * state.smoothed_loss + 0.1 * value
            state.step = step + 1
            if settings.eval_every:
                due = state.step % settings.eval_every == 0
            else:
                due = index_in_epoch == steps_per_epoch - 1
            reached = False
            if due or state.step == settings.steps:
                scores = evaluate(model, task, test_split, settings.eval_batch_size, device)
                seconds = seconds_before + time.perf_counter() - start_time
                state.history.append({"step": state.step, "epoch": epoch + 1, "accuracy": scores["accuracy"],
                                      "token_accuracy": scores["token_accuracy"], "seconds": round(seconds, 3)})
                bar.update(bar_task, accuracy=f"{scores['accuracy']:.3f}")
                if log_evaluations:
                    console.print(f"{label}: step {state.step}/{settings.steps}, loss {state.smoothed_loss:.3f}, "
                                  f"accuracy {100 * scores['accuracy']:.1f}%", highlight=False)
                reached = settings.target_accuracy is not None and scores["accuracy"] >= settings.target_accuracy
            bar.update(bar_task, advance=1, loss=state.smoothed_loss)
            if reached:  # early stopping: the target metric is met
                break
            now = time.perf_counter()
            if checkpoint is not None and world.is_main and (due or now - last_checkpoint >= CHECKPOINT_SECONDS):
                save_checkpoint(checkpoint, model, optimizer, schedule, state, order, order_generator)
                last_checkpoint = now
    if scores is None:  # resumed from a checkpoint taken after the last step's evaluation
        scores = evaluate(model, task, test_split, settings.eval_batch_size, device)
    train_seconds = seconds_before + time.perf_counter() - start_time
    return {**scores, "train_loss": state.smoothed_loss, "train_seconds": round(train_seconds, 3),
            "parameters": sum(parameter.numel() for parameter in model.parameters()), "steps": state.step,
            "stopped_early": state.step < settings.steps, "precision": str(precision).removeprefix("torch."),
            "processes": world.size, "history": state.history}
