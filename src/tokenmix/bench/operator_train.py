"""Train an operator model on a PDE task (Burgers 1D, Darcy 2D, Navier–Stokes 2D) with the FNO paper's protocol or
a reduced one, and report the test relative L2 error at the training resolution and at other resolutions without
retraining. Prints one JSON line.

    python -m tokenmix.bench.operator_train --mixer fno --resolution 1024 --epochs 500   # Burgers, the paper's protocol
    python -m tokenmix.bench.operator_train --preset burgers-coarse # the paper's schedule at s = 256: 1/3 of the compute
    python -m tokenmix.bench.operator_train --preset burgers-fast   # compressed 2× at s = 256: 1/6 of the compute
    python -m tokenmix.bench.operator_train --preset darcy-paper    # Darcy, the paper's protocol (s = 85 from 421)
    python -m tokenmix.bench.operator_train --preset darcy-quick    # Darcy, a reduced protocol (minutes on a CPU)

Paper protocol (arXiv:2010.08895 §5): 1000 train / 100 test, 4 Fourier layers, Adam lr 1e-3 with weight decay 1e-4,
batch 20, 500 epochs, relative L2 loss; Burgers: width 64, 16 modes, learning rate ×0.5 every 50 epochs; Darcy:
width 32, 12 modes, ×0.5 every 100 epochs, inputs and outputs normalized. Flags given explicitly override a preset.

Normalization (`--normalize`, on in the Darcy presets): inputs and targets are shifted and scaled by the training
set's mean and standard deviation per channel (`--normalize channel`: scalars, the same at every resolution) or per
grid point (`--normalize point`: as the paper's code, resampled to other resolutions, see `Normalized`); the model
predicts normalized targets, decoded before the loss.

Long runs: one progress line (epoch, training loss, learning rate, seconds) goes to stderr about 20 times per run
(`--progress-every`); a checkpoint (safetensors: model, optimizer, schedule, epoch, random generators) is written
every `--checkpoint-every` epochs under a hash of the run's settings, and re-running the same command continues
from it and ends exactly where the uninterrupted run would have (a finished run prints its stored result; `--fresh`
starts over). `--schedule onecycle --max-lr X` replaces the paper's step decay by a one-cycle schedule stepped
per batch (warm-up to X over the first 30% of the steps, cosine annealing after), a shorter training recipe.
`--gradient-clip N` clips each batch's gradient to global norm N (Burgers' gradients have norms of ~150: at N = 100
over 3 seeds it narrowed the spread of the error and did not lower its mean; docs/quality.md).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenmix.bench.operator_checkpoint import (load_operator_checkpoint, operator_checkpoint_path,
                                                read_finished_result, save_operator_checkpoint)
from tokenmix.errors import MixerInputError
from tokenmix.models.deeponet import DeepONetOnGrid
from tokenmix.models.operator import OperatorModel
from tokenmix.tasks import create_task
from tokenmix.tasks.burgers import relative_l2

PRESETS: dict[str, dict[str, Any]] = {
    "burgers-paper": dict(task="burgers", resolution=1024, solver_resolution=8192, num_train=1000, num_test=100,
                          width=64, depth=4, modes=16, epochs=500, step_every=50, batch_size=20, normalize=False),
    # The paper's model and schedule unchanged, trained at s = 256 on data solved at 1024 and evaluated at 1024 without
    # retraining: 1/3 of burgers-paper's compute (an epoch at 256 costs 1/3.1 of one at 1024). Over seeds 0-2 its
    # error at 1024 averaged 0.000374 against the full protocol's 0.000387 (docs/quality.md, "Training at a coarser
    # grid"): the same error at a third of the compute (3% lower on the mean, far inside the spread over seeds).
    "burgers-coarse": dict(task="burgers", resolution=256, solver_resolution=1024, num_train=1000, num_test=100,
                           width=64, depth=4, modes=16, epochs=500, step_every=50, batch_size=20, normalize=False,
                           eval_resolutions=(512, 1024)),
    # The paper's model and schedule compressed 2× (×0.5 every 25 of 250 epochs), trained at s = 256 on data solved at
    # 1024 and evaluated at 1024 without retraining: about 1/6 of burgers-paper's compute. Seed 0 matched the full
    # protocol's error at 1024 (0.000308 against 0.000306); seeds spread it 3× (mean over seeds 0-2: 0.000581, 1.5× the
    # full protocol's; docs/quality.md, "Training at a coarser grid").
    "burgers-fast": dict(task="burgers", resolution=256, solver_resolution=1024, num_train=1000, num_test=100,
                         width=64, depth=4, modes=16, epochs=250, step_every=25, batch_size=20, normalize=False,
                         eval_resolutions=(512, 1024)),
    "darcy-paper": dict(task="darcy", resolution=85, solver_resolution=421, num_train=1000, num_test=100, width=32,
                        depth=4, modes=12, epochs=500, step_every=100, batch_size=20, normalize=True),
    # s = 22 = (85 − 1) / 4 + 1: an even size (29 and 43 are prime, and prime-size FFTs are several times slower)
    "darcy-quick": dict(task="darcy", resolution=22, solver_resolution=85, num_train=1000, num_test=100, width=32,
                        depth=4, modes=8, epochs=10, step_every=4, batch_size=20, normalize=True,
                        eval_resolutions=(43, 85)),
    "navier-stokes-quick": dict(task="navier_stokes", resolution=32, solver_resolution=64, num_train=100,
                                num_test=20, width=20, depth=4, modes=8, epochs=30, step_every=10, batch_size=10,
                                normalize=True, eval_resolutions=(64,)),
}


NORMALIZATIONS = (False, True, "channel", "point")


class Normalized(nn.Module):
    """`model` between a fixed affine encoder of its inputs and decoder of its outputs, with the training set's mean
    and standard deviation per channel (`per_point=False`: scalars) or per channel and grid point (`per_point=True`,
    the FNO code's `UnitGaussianNormalizer`: where the targets do not vary, as on a Dirichlet boundary, the decoded
    output is the targets' mean whatever the model says).

    Per-point statistics are resampled to the grid of each call by linear interpolation with the end points aligned
    (exact at the shared nodes of node grids such as Darcy's, whose coarser grids are subsamples of the finer).
    A standard deviation is floored at 1e-5 (the FNO code adds that epsilon)."""

    def __init__(self, model: nn.Module, inputs: Tensor, targets: Tensor, *, per_point: bool = False) -> None:
        super().__init__()
        self.model = model
        self.per_point = per_point
        dims = [0] if per_point else [0, *range(2, inputs.ndim)]
        for name, data in (("input", inputs), ("target", targets)):
            self.register_buffer(f"{name}_mean", data.mean(dim=dims, keepdim=True))
            self.register_buffer(f"{name}_std", data.std(dim=dims, keepdim=True).clamp(min=1e-5))

    def _statistics(self, name: str, sizes: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        mean, std = getattr(self, f"{name}_mean"), getattr(self, f"{name}_std")
        if not self.per_point or tuple(mean.shape[2:]) == sizes:
            return mean, std
        mode = ("linear", "bilinear", "trilinear")[len(sizes) - 1]
        return tuple(F.interpolate(t, size=sizes, mode=mode, align_corners=True) for t in (mean, std))

    def forward(self, a: Tensor) -> Tensor:
        sizes = tuple(a.shape[2:])
        input_mean, input_std = self._statistics("input", sizes)
        target_mean, target_std = self._statistics("target", sizes)
        y = self.model((a - input_mean) / input_std)
        return y * target_std + target_mean


SCHEDULES = ("step", "onecycle")


def train_operator(*, task: str = "burgers", mixer: str = "fno", resolution: int = 1024,
                   solver_resolution: int = 8192, num_train: int = 1000, num_test: int = 100, width: int = 64,
                   depth: int = 4, modes: int = 16, epochs: int = 500, lr: float = 1e-3, weight_decay: float = 1e-4,
                   batch_size: int = 20, step_every: int = 50, gamma: float = 0.5, normalize: bool | str = False,
                   eval_resolutions: tuple[int, ...] = (), mixer_options: dict[str, Any] | None = None,
                   seed: int = 0, device: str = "cpu", coordinates: str | None = None, schedule: str = "step",
                   max_lr: float | None = None, checkpoint_every: int = 5, resume: bool = True,
                   checkpoint_dir: str | Path | None = None, progress_every: int | None = None,
                   label: str = "", pointwise_skip: bool = False,
                   task_options: dict[str, Any] | None = None,
                   eval_solver_resolution: int | None = None, gradient_clip: float | None = None) -> dict[str, Any]:
    """Train `mixer` in the operator backbone on `task` and return the errors and timings as a dict.

    `coordinates` (`"periodic"` or `"nodes"`) and `pointwise_skip` are `OperatorModel`'s; `coordinates` defaults
    to what the task declares. `schedule`: `"step"` (the paper's: ×`gamma` every `step_every` epochs) or
    `"onecycle"` (`OneCycleLR` stepped per batch, peak `max_lr`, default `lr`). Every `checkpoint_every` epochs (and
    at the end) the run is saved under a hash of its settings and of the data's version; with `resume` the same call
    continues from there (a finished run returns its stored result). `gradient_clip`: clip each batch's gradient to
    that global L2 norm before the step (None: no clipping, the paper's protocol). One line of progress goes to
    stderr every `progress_every` epochs (default: about 20 lines per run; 0: none).

    `eval_resolutions` are evaluated zero-shot on the test split, or with `eval_solver_resolution` on a test set of
    `num_test` new draws solved at that resolution (to evaluate above the training data's grid, e.g. Burgers at
    2048 … 8192 after training on data solved at 1024). Neither is part of the run's key: asking a finished run for
    other evaluations loads its weights and evaluates them, without training again.
    """
    if schedule not in SCHEDULES:
        raise MixerInputError(f"operator_train: schedule must be one of {SCHEDULES}, got {schedule!r}")
    if normalize not in NORMALIZATIONS:
        raise MixerInputError(f"operator_train: normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if gradient_clip is not None and not gradient_clip > 0:
        raise MixerInputError(f"operator_train: gradient_clip must be a positive norm or None, got {gradient_clip!r}")
    start = time.perf_counter()
    data = create_task(task, resolution=resolution, solver_resolution=solver_resolution,
                       num_train_examples=num_train, num_test_examples=num_test, **(task_options or {}))
    coordinates = coordinates or getattr(data, "coordinates", "periodic")
    settings = {key: value for key, value in locals().items()
                if key not in ("start", "data", "checkpoint_every", "resume", "checkpoint_dir", "progress_every",
                               "label", "eval_resolutions", "eval_solver_resolution")}
    # runs without task options or clipping keep the checkpoint keys they had before those options existed
    if not task_options:
        settings.pop("task_options")
    if gradient_clip is None:
        settings.pop("gradient_clip")
    settings["data"] = data.cache_path.name  # the data's generator version and parameters: new data, new run
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    path = operator_checkpoint_path(settings, folder)
    # runs saved while the evaluations were part of the key are found under that name and moved
    legacy = operator_checkpoint_path({**settings, "eval_resolutions": eval_resolutions}, folder)
    if not path.is_file() and legacy.is_file():
        legacy.replace(path)
    finished = read_finished_result(path) if resume else None
    if finished is not None and _evaluated_as(finished, eval_resolutions, eval_solver_resolution):
        return {**finished, "read_back_from": str(path)}
    train, test = data.split("train"), data.split("test")
    data_seconds = time.perf_counter() - start
    torch.manual_seed(seed)
    options = dict(mixer_options or {})
    if mixer in ("fno", "ffno"):
        options.setdefault("modes", modes)
    model: nn.Module
    if mixer == "deeponet":  # not a mixer: the branch/trunk model itself (`mixer_options` are its options)
        model = DeepONetOnGrid(tuple(train.inputs.shape[2:]), coordinates=coordinates,
                               in_channels=train.inputs.shape[1], out_channels=train.targets.shape[1], **options)
    else:
        model = OperatorModel(mixer, in_channels=train.inputs.shape[1], out_channels=train.targets.shape[1],
                              spatial_dims=train.inputs.ndim - 2, width=width, depth=depth, mixer_options=options,
                              coordinates=coordinates, pointwise_skip=pointwise_skip)
    if normalize:
        model = Normalized(model, train.inputs, train.targets, per_point=normalize == "point")
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    batches_per_epoch = math.ceil(len(train) / batch_size)
    if schedule == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_every, gamma=gamma)
    else:
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr or lr, epochs=max(epochs, 1),
                                                        steps_per_epoch=batches_per_epoch)

    @torch.no_grad()
    def error(split) -> float:
        model.eval()
        errors = [relative_l2(model(x.to(device)), y.to(device))
                  for x, y in zip(split.inputs.split(100), split.targets.split(100))]
        return float(torch.cat(errors).mean())

    def zero_shot() -> dict[str, Any]:
        """The errors at `eval_resolutions` (on the finer test set with `eval_solver_resolution`)."""
        split_at = data.split
        if eval_solver_resolution is not None and eval_resolutions:  # nothing to evaluate: nothing to solve
            finer = create_task(task, resolution=eval_solver_resolution, solver_resolution=eval_solver_resolution,
                                num_train_examples=1, num_test_examples=num_test, **(task_options or {}))
            split_at = finer.split
        return {"test_relative_l2_at": {str(s): error(split_at("test", resolution=s)) for s in eval_resolutions},
                "eval_solver_resolution": eval_solver_resolution}

    if finished is not None:  # trained before: only the evaluations asked for are new
        done, history = load_operator_checkpoint(path, model, optimizer, scheduler)
        result = {**finished, **zero_shot()}
        save_operator_checkpoint(path, model, optimizer, scheduler, done, history, result=result)
        return {**result, "read_back_from": str(path)}
    history: dict[str, Any] = {"initial_test_relative_l2": error(test), "losses": [], "train_seconds": 0.0}
    done = 0
    if resume and path.is_file():
        done, history = load_operator_checkpoint(path, model, optimizer, scheduler)
    every = max(1, epochs // 20) if progress_every is None else progress_every
    inputs, targets = train.inputs.to(device), train.targets.to(device)
    name = label or f"{task} {mixer}"
    if done and every:
        print(f"{name}: resumed after epoch {done} from {path}", file=sys.stderr, flush=True)
    for epoch in range(done, epochs):
        epoch_start = time.perf_counter()
        model.train()
        total = 0.0
        for batch in torch.randperm(len(inputs), device=device).split(batch_size):
            loss = data.loss(model(inputs[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            if gradient_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), gradient_clip)
            optimizer.step()
            if schedule == "onecycle":
                scheduler.step()
            total += float(loss.detach()) * len(batch)
        if schedule == "step":
            scheduler.step()
        history["losses"].append(total / len(inputs))
        history["train_seconds"] += time.perf_counter() - epoch_start
        if every and ((epoch + 1) % every == 0 or epoch + 1 == epochs):
            print(f"{name}: epoch {epoch + 1}/{epochs}  train loss {history['losses'][-1]:.4f}  "
                  f"lr {optimizer.param_groups[0]['lr']:.2e}  {history['train_seconds']:.0f} s",
                  file=sys.stderr, flush=True)
        if checkpoint_every and (epoch + 1) % checkpoint_every == 0 and epoch + 1 < epochs:
            save_operator_checkpoint(path, model, optimizer, scheduler, epoch + 1, history)
    train_seconds = history["train_seconds"]

    result = {
        "task": task, "task_options": task_options or {}, "mixer": mixer, "resolution": resolution,
        "solver_resolution": solver_resolution, "num_train": num_train, "num_test": num_test, "width": width,
        "depth": depth, "modes": modes,
        "epochs": epochs, "step_every": step_every, "normalize": normalize, "coordinates": coordinates,
        "schedule": schedule, "max_lr": (max_lr or lr) if schedule == "onecycle" else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "initial_test_relative_l2": history["initial_test_relative_l2"],
        "train_relative_l2": error(train), "test_relative_l2": error(test),
        **zero_shot(),
        "data_seconds": round(data_seconds, 1), "train_seconds": round(train_seconds, 1),
        "seconds_per_epoch": round(train_seconds / max(epochs, 1), 3), "device": device,
        "threads": torch.get_num_threads(), "resumed_after_epoch": done, "data": settings["data"],
        "pointwise_skip": pointwise_skip, "gradient_clip": gradient_clip,
    }
    if checkpoint_every:
        save_operator_checkpoint(path, model, optimizer, scheduler, epochs, history, result=result)
    return result


def _evaluated_as(result: dict[str, Any], eval_resolutions: tuple[int, ...], eval_solver_resolution: int | None,
                  ) -> bool:
    """Whether a stored result holds exactly the evaluations asked for."""
    return (result.get("eval_solver_resolution") == eval_solver_resolution
            and set(result["test_relative_l2_at"]) == {str(s) for s in eval_resolutions})


def train_burgers(**settings: Any) -> dict[str, Any]:
    """`train_operator` on the Burgers task (the paper's protocol by default)."""
    return train_operator(task="burgers", **settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="burgers-paper",
                        help="a protocol; explicit flags override its values (default: burgers-paper)")
    parser.add_argument("--task", choices=("burgers", "darcy", "navier_stokes"))
    parser.add_argument("--mixer", default="fno", help="a grid mixer's name, or deeponet (the branch/trunk model)")
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--solver-resolution", type=int)
    parser.add_argument("--num-train", type=int)
    parser.add_argument("--num-test", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--depth", type=int)
    parser.add_argument("--modes", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--step-every", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--normalize", nargs="?", const="channel", choices=("channel", "point"), default=None,
                        help="normalize inputs and targets by training statistics per channel (the default when the "
                             "flag is given bare) or per grid point (the FNO code's)")
    parser.add_argument("--no-normalize", dest="normalize", action="store_const", const=False)
    parser.add_argument("--eval-resolutions", type=int, nargs="*",
                        help="resolutions to evaluate the trained model at, without retraining")
    parser.add_argument("--eval-solver-resolution", type=int,
                        help="evaluate them on a new test set solved at this resolution (e.g. 8192 for Burgers "
                             "models trained on data solved at 1024)")
    parser.add_argument("--mixer-options", type=json.loads, default=None, help='JSON, e.g. \'{"num_heads": 1}\'')
    parser.add_argument("--task-options", type=json.loads, default=None,
                        help='more task parameters as JSON, e.g. \'{"initial_field": "released"}\' for Burgers')
    parser.add_argument("--coordinates", choices=("periodic", "nodes"),
                        help="coordinates appended to the input (default: the task's: Darcy nodes, others periodic)")
    parser.add_argument("--pointwise-skip", action="store_true", default=None,
                        help="each layer adds a pointwise linear map of its input: σ(mixer(v) + W v + b)")
    parser.add_argument("--lr", type=float, help="Adam's learning rate (default 1e-3)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="step",
                        help="step: ×0.5 every --step-every epochs (the paper's); onecycle: OneCycleLR per batch")
    parser.add_argument("--max-lr", type=float, help="the one-cycle schedule's peak learning rate (default: --lr)")
    parser.add_argument("--gradient-clip", type=float,
                        help="clip each batch's gradient to this global L2 norm (default: none, as the paper)")
    parser.add_argument("--checkpoint-every", type=int, default=5,
                        help="save a checkpoint every N epochs (0: never); re-running the command resumes from it")
    parser.add_argument("--fresh", action="store_true", help="start over even if a checkpoint of this run exists")
    parser.add_argument("--progress-every", type=int, help="a progress line every N epochs (default: ~20 per run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    settings = dict(PRESETS[args.preset])
    for key, value in vars(args).items():
        if key not in ("preset", "fresh") and value is not None:
            settings[key] = value
    settings["resume"] = not args.fresh
    settings["eval_resolutions"] = tuple(settings.get("eval_resolutions", ()))
    print(json.dumps(train_operator(**settings)))


if __name__ == "__main__":
    main()
