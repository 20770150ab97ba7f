"""Distillation of a trained Hyena into its recurrence, error against order (issue 4's Laughing Hyena target).

"Laughing Hyena Distillery: Extracting Compact Recurrences From Convolutions" (Massaroli et al., arXiv:2310.18780):
each trained long filter h is fitted by a modal sum ĥ_0 = h_0, ĥ_t = Re Σ_{k<d} R_k λ_k^{t-1}
(`tokenmix.ops.modal_fit.fit_modal` through `Hyena.to_recurrent(d)`), and the distilled `laughing_hyena` mixer
streams at O(d) per token. The target: output relative error ≤ 1e-2 with d ≤ 64 on a trained Hyena.

The script trains a small Hyena language model on MQAR (Zoology, arXiv:2312.04927) for a bounded time, then for
each order d and each Hyena layer reports the filter error ‖h − ĥ‖/‖h‖ (median, max over the N·D filters), the
layer's output error ‖y_d − y‖/‖y‖ on the activations the layer sees in the trained model (test batch), and the
model's output (logit) error and accuracy with every layer replaced by its distilled form.

    python -m tokenmix.bench.distillation --minutes 4 --orders 8,16,24,32,48,64
    python -m tokenmix.bench.distillation --steps 3000 --minutes 60 --checkpoint hyena.ckpt   # resumable
    python -m tokenmix.bench.distillation --load hyena.pt --orders 16,32,64 --step-position 16384 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time

import torch
import torch.nn.functional as F

from tokenmix.models import SequenceModel
from tokenmix.tasks import IGNORE_INDEX
from tokenmix.tasks.mqar import generate_mqar


def train_hyena(*, length: int, dim: int, depth: int, vocab: int, pairs: int, batch: int, steps: int,
                minutes: float, seed: int, checkpoint: str | None = None, log=print) -> tuple[SequenceModel, dict]:
    """A Hyena SequenceModel trained on MQAR batches drawn fresh each step (AdamW, cosine decay), stopped after
    `steps` steps or `minutes` of training time (summed over resumed runs).

    With `checkpoint`, the model, optimizer, step, elapsed time and batch generator are written there every 100
    steps (and at the end), and a run started with the same arguments resumes from that file."""
    torch.manual_seed(seed)
    model = SequenceModel(vocab_size=vocab, dim=dim, depth=depth, mixer="hyena",
                          mixer_options={"kernel_length": length})
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    step, elapsed = 0, 0.0
    if checkpoint is not None and os.path.exists(checkpoint):
        saved = torch.load(checkpoint)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        step, elapsed = saved["step"], saved["seconds"]
        log(f"resuming from {checkpoint} at step {step} ({elapsed:.0f} s trained)")

    def save() -> None:
        if checkpoint is not None:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        "seconds": elapsed, "generator": generator.get_state()}, checkpoint + ".tmp")
            os.replace(checkpoint + ".tmp", checkpoint)

    start = time.perf_counter() - elapsed
    loss, recent_loss, recent_correct, recent_count = None, 0.0, 0, 0
    while step < steps and elapsed < 60 * minutes:
        for group in optimizer.param_groups:
            group["lr"] = 3e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        inputs, targets = generate_mqar(batch, length, vocab, pairs, 0.01, generator)
        logits = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        elapsed = time.perf_counter() - start
        mask = targets != IGNORE_INDEX
        recent_loss += loss.item()
        recent_correct += int((logits.detach().argmax(-1)[mask] == targets[mask]).sum())
        recent_count += int(mask.sum())
        if step % 50 == 0:
            log(f"step {step}/{steps}: loss {recent_loss / 50:.3f}, recall accuracy {recent_correct / recent_count:.3f}"
                f" (mean of the last 50 batches; {elapsed:.0f} s)")
            recent_loss, recent_correct, recent_count = 0.0, 0, 0
        if step % 100 == 0:
            save()
    save()
    return model.eval(), {"steps": step, "seconds": round(elapsed, 1),
                          "final_loss": None if loss is None else round(loss.item(), 4)}


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    mask = targets != IGNORE_INDEX
    return float((logits.argmax(-1)[mask] == targets[mask]).float().mean())


def distillation_table(model: SequenceModel, inputs: torch.Tensor, targets: torch.Tensor, orders: list[int],
                       length: int, refine: int = 0) -> list[dict]:
    """One row per order: per-layer filter and output errors, and the whole model's with every layer distilled."""
    mixers = [block.mixer for block in model.blocks]
    seen: dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, i=i: seen.__setitem__(i, args[0].detach()))
             for i, m in enumerate(mixers)]
    with torch.no_grad():
        logits = model(inputs)
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        exact = [m(seen[i]) for i, m in enumerate(mixers)]
    rows = []
    for order in orders:
        row: dict = {"order": order, "layers": []}
        distilled_model = copy.deepcopy(model)
        for i, mixer in enumerate(mixers):
            distilled = mixer.to_recurrent(order, length, refine)
            with torch.no_grad():
                output = distilled(seen[i])
            error = distilled.filter_error
            row["layers"].append({"filter_error_median": float(error.median()),
                                  "filter_error_max": float(error.max()),
                                  "output_error": float((output - exact[i]).norm() / exact[i].norm())})
            distilled_model.blocks[i].mixer = distilled
        with torch.no_grad():
            distilled_logits = distilled_model(inputs)
        row["model_logit_error"] = float((distilled_logits - logits).norm() / logits.norm())
        row["model_accuracy"] = accuracy(distilled_logits, targets)
        row["exact_accuracy"] = accuracy(logits, targets)
        rows.append(row)
    return rows


def step_speed(model: SequenceModel, orders: list[int], length: int, position: int, repeats: int = 20,
               seed: int = 0) -> list[dict]:
    """Per-token `step` time of the first Hyena layer at `position` (after a prefill of `position` tokens of its
    own input width) in its exact cached-input form and distilled at each order: the median of `repeats` steps,
    each from the same prefilled state. The trained filters are defined at every tap, so the exact layer streams
    past its training length."""
    mixer = model.blocks[0].mixer
    x = torch.randn(1, position + 1, mixer.dim, generator=torch.Generator().manual_seed(seed))

    def median_step(layer) -> float:
        with torch.no_grad():
            _, state = layer(x[:, :position], return_state=True)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                layer.step(x[:, position], state)
                times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]

    exact = median_step(mixer)
    rows = []
    for order in orders:
        distilled = median_step(mixer.to_recurrent(order, length))
        rows.append({"order": order, "position": position, "exact_step_ms": exact * 1e3,
                     "distilled_step_ms": distilled * 1e3, "speed_up": exact / distilled})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--minutes", type=float, default=4.0, help="wall-time cap on training")
    parser.add_argument("--orders", default="8,16,24,32,48,64")
    parser.add_argument("--eval-batch", type=int, default=8, help="test examples the errors are measured on")
    parser.add_argument("--refine", type=int, default=0, help="L-BFGS iterations refining each modal fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="write the trained model's state dict here")
    parser.add_argument("--load", help="skip training: read a state dict written by --save")
    parser.add_argument("--json", help="write the table as JSON here")
    parser.add_argument("--checkpoint", help="keep a training checkpoint here and resume from it when it exists")
    parser.add_argument("--step-position", type=int, default=0,
                        help="also time one step of layer 0 at this position, exact against distilled (0: skip)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.load:
        torch.manual_seed(args.seed)
        model = SequenceModel(vocab_size=args.vocab, dim=args.dim, depth=args.depth, mixer="hyena",
                              mixer_options={"kernel_length": args.length})
        model.load_state_dict(torch.load(args.load))
        model.eval()
        training = {"loaded": args.load}
    else:
        model, training = train_hyena(length=args.length, dim=args.dim, depth=args.depth, vocab=args.vocab,
                                      pairs=args.pairs, batch=args.batch, steps=args.steps, minutes=args.minutes,
                                      seed=args.seed, checkpoint=args.checkpoint)
        if args.save:
            torch.save(model.state_dict(), args.save)
    inputs, targets = generate_mqar(args.eval_batch, args.length, args.vocab, args.pairs, 0.01,
                                    torch.Generator().manual_seed(args.seed + 1))
    orders = [int(o) for o in args.orders.split(",")]
    rows = distillation_table(model, inputs, targets, orders, args.length, args.refine)
    print(f"trained: {training}")
    print(f"{'order':>5} | {'layer':>5} | {'filter err (median / max)':>25} | {'layer output err':>16} | "
          f"{'model logit err':>15} | accuracy (distilled / exact)")
    for row in rows:
        for i, layer in enumerate(row["layers"]):
            print(f"{row['order']:>5} | {i:>5} | {layer['filter_error_median']:>11.2e} / {layer['filter_error_max']:.2e}"
                  f" | {layer['output_error']:>16.2e} | {row['model_logit_error']:>15.2e} | "
                  f"{row['model_accuracy']:.3f} / {row['exact_accuracy']:.3f}")
    speed = step_speed(model, orders, args.length, args.step_position) if args.step_position else []
    if speed:
        print(f"one step of layer 0 at position {args.step_position} ({torch.get_num_threads()} threads): "
              f"exact (cached input) {speed[0]['exact_step_ms']:.2f} ms")
        for row in speed:
            print(f"  order {row['order']:>3}: distilled {row['distilled_step_ms']:.3f} ms, {row['speed_up']:.0f}× faster")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "training": training, "rows": rows, "step_speed": speed}, handle, indent=1)


if __name__ == "__main__":
    main()
