"""Train an operator model on the Burgers task with the FNO paper's protocol (or a reduced one) and report the test
relative L2 error at the training resolution and at other resolutions without retraining.

    python -m tokenmix.bench.operator_train --mixer fno --resolution 1024 --epochs 500   # the paper's protocol

Paper protocol (arXiv:2010.08895 §5): 1000 train / 100 test, 4 layers, width 64, 16 modes, Adam lr 1e-3 with
weight decay 1e-4, batch 20, 500 epochs, learning rate ×0.5 every 50 epochs, relative L2 loss. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from tokenmix.models.operator import OperatorModel
from tokenmix.tasks import create_task
from tokenmix.tasks.burgers import relative_l2


def train_burgers(*, mixer: str = "fno", resolution: int = 1024, solver_resolution: int = 8192,
                  num_train: int = 1000, num_test: int = 100, width: int = 64, depth: int = 4, modes: int = 16,
                  epochs: int = 500, lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 20,
                  step_every: int = 50, gamma: float = 0.5, eval_resolutions: tuple[int, ...] = (),
                  seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    start = time.perf_counter()
    task = create_task("burgers", resolution=resolution, solver_resolution=solver_resolution,
                       num_train_examples=num_train, num_test_examples=num_test)
    train, test = task.split("train"), task.split("test")
    data_seconds = time.perf_counter() - start
    torch.manual_seed(seed)
    options = {"modes": modes} if mixer in ("fno", "ffno") else {}
    model = OperatorModel(mixer, width=width, depth=depth, mixer_options=options).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_every, gamma=gamma)
    inputs, targets = train.inputs.to(device), train.targets.to(device)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(inputs), device=device).split(batch_size):
            loss = task.loss(model(inputs[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    train_seconds = time.perf_counter() - start

    @torch.no_grad()
    def error(split) -> float:
        model.eval()
        return float(relative_l2(model(split.inputs.to(device)), split.targets.to(device)).mean())

    result = {
        "mixer": mixer, "resolution": resolution, "solver_resolution": solver_resolution, "num_train": num_train,
        "num_test": num_test, "width": width, "depth": depth, "modes": modes, "epochs": epochs,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_relative_l2": error(train), "test_relative_l2": error(test),
        "test_relative_l2_at": {str(s): error(task.split("test", resolution=s)) for s in eval_resolutions},
        "data_seconds": round(data_seconds, 1), "train_seconds": round(train_seconds, 1),
        "seconds_per_epoch": round(train_seconds / max(epochs, 1), 3), "device": device,
        "threads": torch.get_num_threads(),
    }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixer", default="fno")
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--solver-resolution", type=int, default=8192)
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-test", type=int, default=100)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--modes", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--step-every", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--eval-resolutions", type=int, nargs="*", default=[])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    print(json.dumps(train_burgers(
        mixer=args.mixer, resolution=args.resolution, solver_resolution=args.solver_resolution,
        num_train=args.num_train, num_test=args.num_test, width=args.width, depth=args.depth, modes=args.modes,
        epochs=args.epochs, step_every=args.step_every, batch_size=args.batch_size,
        eval_resolutions=tuple(args.eval_resolutions), device=args.device)))


if __name__ == "__main__":
    main()
