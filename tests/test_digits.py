"""The scikit-learn digits task: the stratified split, the three views, the cache, bad parameters, training."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.datasets import load_digits

from tokenmix.bench import ModelSettings, RunConfig, TrainingSettings
from tokenmix.bench.train import build_model, train
from tokenmix.errors import MixerInputError
from tokenmix.models import SequenceModel, VisionModel
from tokenmix.tasks import create_task, generated
from tokenmix.tasks.digits import stratified_test_mask

DIGITS = load_digits()
PIXELS = torch.as_tensor(DIGITS.data)  # (1797, 64) float64, integers 0..16
LABELS = torch.as_tensor(DIGITS.target)


def _sorted_rows(rows: torch.Tensor) -> torch.Tensor:
    """The rows of a 2-D integer tensor in lexicographic order (a multiset of images, comparable with ==)."""
    rows = rows.long()
    for column in reversed(range(rows.shape[1])):
        rows = rows[torch.sort(rows[:, column], stable=True).indices]
    return rows


def test_split_sizes_and_stratification():
    task = create_task("digits")
    train_split, test_split = task.split("train"), task.split("test")
    assert (len(train_split), len(test_split)) == (1437, 360)
    class_sizes = torch.bincount(LABELS, minlength=10)
    test_counts = torch.bincount(test_split.targets, minlength=10)
    # each digit gets its proportional share of the 360 test images, rounded up or down
    assert torch.all((test_counts.double() - 360 * class_sizes / 1797).abs() < 1)
    assert torch.equal(test_counts + torch.bincount(train_split.targets, minlength=10), class_sizes)
    assert torch.equal(test_split.groups, test_split.targets)  # per-digit accuracy
    # train ∪ test is exactly the bundled set (as a multiset of (pixels, label) rows)
    tokens = create_task("digits", view="tokens")
    together = torch.cat([torch.cat([tokens.split(s).inputs, tokens.split(s).targets[:, None]], 1)
                          for s in ("train", "test")])
    assert torch.equal(_sorted_rows(together), _sorted_rows(torch.cat([PIXELS, LABELS[:, None]], 1)))


def test_stratified_mask_on_a_hand_checked_case():
    # classes of sizes 6, 3, 1 (N = 10) and 5 test examples: exact shares 3, 1.5, 0.5 → floors 3, 1, 0 and one
    # left over for the larger remainder; remainders tie at 0.5, the smaller class label (1) gets it: 3, 2, 0
    labels = torch.tensor([0] * 6 + [1] * 3 + [2])
    mask = stratified_test_mask(labels, 5, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[mask], minlength=3).tolist() == [3, 2, 0]


def test_views_show_the_same_pixels():
    sequence, tokens, image = (create_task("digits", view=view) for view in ("sequence", "tokens", "image"))
    assert (sequence.input_kind, tokens.input_kind, image.input_kind) == ("values", "tokens", "image")
    assert (sequence.vocab_size, tokens.vocab_size, sequence.sequence_length, sequence.num_classes) == (1, 17, 64, 10)
    assert sequence.input_channels == image.input_channels == 1
    values, ids, pictures = sequence.split("test").inputs, tokens.split("test").inputs, image.split("test").inputs
    assert values.shape == (360, 64, 1) and values.dtype == torch.float32
    assert ids.shape == (360, 64) and ids.dtype == torch.int64 and int(ids.min()) == 0 and int(ids.max()) == 16
    assert pictures.shape == (360, 1, 8, 8) and pictures.dtype == torch.float32
    assert torch.equal(values[..., 0], ids.float() / 16)
    assert torch.equal(pictures.flatten(1), values[..., 0])  # the sequence is the raster (row-major) order
    # a real test image is one of the bundled images with its label
    row = ids[0].double()
    matches = torch.nonzero((PIXELS == row).all(1)).flatten()
    assert len(matches) >= 1 and int(tokens.split("test").targets[0]) in LABELS[matches].tolist()


def test_split_is_deterministic_and_depends_on_the_seed():
    task = create_task("digits", view="tokens")
    first = task.generate()
    second = task.generate()
    assert all(torch.equal(first[name], second[name]) for name in first)
    other = create_task("digits", view="tokens", seed=1).generate()
    assert not torch.equal(first["test_labels"], other["test_labels"]) or not torch.equal(
        first["test_pixels"], other["test_pixels"])


def test_cache_hit_returns_identical_data(monkeypatch):
    task = create_task("digits", view="image")
    fresh = task.split("train")
    assert task.cache_path.exists()
    generated.forget_loaded()
    monkeypatch.setattr(type(task), "generate", lambda self: pytest.fail("regenerated despite the cache file"))
    cached = task.split("train")
    assert torch.equal(fresh.inputs, cached.inputs) and torch.equal(fresh.targets, cached.targets)
    # the three views share one file: the view is not part of the key
    assert create_task("digits", view="tokens").cache_path == task.cache_path
    assert create_task("digits", seed=3).cache_path != task.cache_path


@pytest.mark.parametrize("params, message", [({"view": "columns"}, "view must be one of"),
                                             ({"num_test_examples": 5}, "num_test_examples must be in"),
                                             ({"num_test_examples": 1790}, "num_test_examples must be in"),
                                             ({"num_test_examples": 3.5}, "must be an integer"),
                                             ({"views": "image"}, "unknown parameter")])
def test_bad_parameters(params, message):
    with pytest.raises(MixerInputError, match=message):
        create_task("digits", **params)
    with pytest.raises(MixerInputError, match="unknown split"):
        create_task("digits").split("validation")


def _config(view: str, mixer: str, steps: int, dim: int) -> RunConfig:
    return RunConfig(task="digits", mixer=mixer, task_params={"view": view},
                     model=ModelSettings(dim=dim, depth=1, mlp_ratio=2.0, patch_size=2),
                     training=TrainingSettings(steps=steps, batch_size=32, warmup_steps=5, learning_rate=1e-2,
                                               eval_batch_size=360, eval_every=0))


def test_each_view_gets_its_model():
    task_models = {view: build_model(_config(view, "attention", 1, 16), create_task("digits", view=view))
                   for view in ("sequence", "tokens")}
    assert all(isinstance(model, SequenceModel) and model.pooling == "mean" for model in task_models.values())
    assert task_models["sequence"].input_channels == 1 and task_models["tokens"].vocab_size == 17
    image_model = build_model(_config("image", "depthwise_conv", 1, 16), create_task("digits", view="image"))
    assert isinstance(image_model, VisionModel)
    assert image_model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


# The pixel sequence sits near chance for its first ~100 steps (a mean-pooled model has to learn position-specific
# features first; attention needs longer still), hence s4d and 200 steps there; the image view learns within 120.
@pytest.mark.parametrize("view, mixer, steps, dim", [("sequence", "s4d", 200, 32), ("image", "depthwise_conv", 120, 16)])
def test_a_short_training_learns(view, mixer, steps, dim):
    metrics = train(_config(view, mixer, steps, dim), progress=False).metrics
    # 10 balanced classes: chance is 10% and ln 10 ≈ 2.30 nats; a few epochs go well below both
    assert metrics["train_loss"] < 0.7 * math.log(10)
    assert metrics["accuracy"] > 0.4
