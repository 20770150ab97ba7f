"""Pathfinder: are the two marked dots joined by one curve? 32×32 images of curves made of short paddles.

Reimplemented from the descriptions in "Learning long-range spatial dependencies with horizontal gated recurrent
units", Linsley et al. 2018, arXiv:1805.08315, and "Long Range Arena: A Benchmark for Efficient Transformers",
Tay et al. 2020, arXiv:2011.04006 (Pathfinder at 32×32, as a sequence of 1024 pixels).

**An image** (black background, curves and markers at intensity 1): two *target contours* and
`num_distractors` (default 1) *distractor contours*, each a chain of `contour_length` straight paddles of `paddle_length`
pixels, every paddle turning from the previous one by an angle drawn uniformly in ±`max_turn_degrees` (the
smoothness that lets a contour be followed), from a uniform start point and direction. Two *markers* — filled
3×3 squares, the 32×32 rendering of the paper's circles — sit on contour ends: on the two ends of the first
target contour for a **positive** example (label 1: the markers are connected), on one end of each target
contour for a **negative** (label 0). Both classes thus show the same number of contours of the same length and
two markers on contour ends; only whether one contour joins the markers tells them apart. Labels are exactly
balanced (within each level) and shuffled.

**Rendering and the connectedness guarantee**: a contour is rasterized by sampling its polyline every 0.25 px
and rounding to pixels, so it is one 8-connected set; each contour (with the 3×3 squares around both its ends
reserved) must keep a pixel of clearance from every contour already placed (it may not touch the 3×3 dilation
of their pixels) and stay inside the image with a 1-pixel border; candidates that do not fit are drawn again,
and an image that cannot be filled within a number of tries is replaced. So in the rendered image every contour
with its markers is its own 8-connected component, and the label equals "both marker centres lie in one
8-connected component of the lit pixels" — which the tests recompute by flood fill. (The original images draw
paddles with small gaps, which at 32×32 would leave no pixel-level notion of connectedness; these are
continuous.)

**Difficulty**: the contour length in paddles; the papers' three levels are 6, 9 and 14 paddles. By default the
examples are spread evenly over the three (`groups` is the contour length, so `accuracy_by_contour_length`
shows the difficulty curve); LRA's Pathfinder-32 is the hardest level alone: `contour_lengths=14`. At 32×32 the
defaults are 1.5-pixel paddles and one distractor: the original images are larger with many distractors, and 4
contours of 14 two-pixel paddles with clearance rarely fit in 32×32 (see the parameter check).

**Views**: "sequence" — the 1024 pixels in raster order, 1 channel (`input_kind` "values"); "image" —
`(1, 32, 32)` for the vision backbone. Generation is vectorized numpy over images (1000 images of 14 paddles
in about 4 s on a busy 2-core machine) and cached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tokenmix.errors import MixerInputError
from tokenmix.tasks import register_task
from tokenmix.tasks.base import Split, SplitName, Task
from tokenmix.tasks.generated import load_or_generate
from tokenmix.tasks.token_storage import cache_file, seed_for, split_counts

FORMAT_VERSION = 1  # bump when the generator or the file layout changes
SIDE = 32
BORDER = 1  # contours and markers keep this many pixels from the image edge
SAMPLE_SPACING = 0.25  # pixels between the points sampled along a contour (≤ 0.5 keeps it 8-connected)
MAX_TRIES = 8  # rounds of draws for one contour slot before an image is given up and replaced
CANDIDATES = 16  # contours drawn per image and round; the first that fits is kept
VIEWS = ("sequence", "image")
LEVELS = (6, 9, 14)  # the papers' contour lengths in paddles


def _dilate(masks: np.ndarray) -> np.ndarray:
    """3×3 dilation of boolean `(N, H, W)` masks (a pixel and its 8 neighbours)."""
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros_like(masks)
    height, width = masks.shape[1:]
    for dy in range(3):
        for dx in range(3):
            out |= padded[:, dy:dy + height, dx:dx + width]
    return out


def draw_contours(count: int, paddles: int, paddle_length: float, max_turn: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` random contours: `(pixels (count, S, 2) int rows/columns, ends (count, 2, 2), inside (count,))`.

    The shape (turns, headings) is drawn first, then a start point uniformly among those that keep every pixel
    at least `BORDER + 1` from the edge (room for the 3×3 end squares); `inside` is False for the rare shape
    too large for any start point."""
    heading = rng.uniform(0, 2 * math.pi, size=(count, 1)) + np.cumsum(
        rng.uniform(-max_turn, max_turn, size=(count, paddles)), axis=1)
    steps = paddle_length * np.stack([np.sin(heading), np.cos(heading)], axis=-1)  # (count, paddles, 2) row, col
    vertices = np.concatenate([np.zeros((count, 1, 2)), np.cumsum(steps, axis=1)], axis=1)  # from the start
    samples = max(2, math.ceil(paddle_length / SAMPLE_SPACING) + 1)
    fractions = np.linspace(0.0, 1.0, samples)[None, None, :, None]
    points = vertices[:, :-1, None, :] + fractions * (vertices[:, 1:, None, :] - vertices[:, :-1, None, :])
    points = points.reshape(count, -1, 2)
    # the start point uniformly among those that keep the whole contour (and so its end squares) inside
    low = (BORDER + 1) - points.min(axis=1)  # (count, 2)
    high = (SIDE - 2 - BORDER) - points.max(axis=1)
    inside = (high >= low).all(axis=1)
    start = low + rng.uniform(size=(count, 2)) * np.maximum(high - low, 0)
    pixels = np.rint(start[:, None, :] + points).astype(np.int64)
    ends = np.stack([pixels[:, 0], pixels[:, -1]], axis=1)
    inside &= ((pixels >= BORDER + 1) & (pixels <= SIDE - 2 - BORDER)).all(axis=(1, 2))
    return pixels, ends, inside


def _rasterize(pixels: np.ndarray, ends: np.ndarray | None) -> np.ndarray:
    """Boolean `(N, 32, 32)` masks of contour pixels (clipped to the image), plus 3×3 squares around `ends`."""
    count = len(pixels)
    masks = np.zeros((count, SIDE, SIDE), dtype=bool)
    rows, columns = np.clip(pixels[..., 0], 0, SIDE - 1), np.clip(pixels[..., 1], 0, SIDE - 1)
    masks[np.arange(count)[:, None], rows, columns] = True
    if ends is not None:
        centres = np.zeros_like(masks)
        for end in range(ends.shape[1]):
            centres[np.arange(count), np.clip(ends[:, end, 0], 0, SIDE - 1), np.clip(ends[:, end, 1], 0, SIDE - 1)] = True
        masks |= _dilate(centres)
    return masks


def generate_pathfinder(count: int, contour_length: int, num_distractors: int, paddle_length: float,
                        max_turn_degrees: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """`count` images of one difficulty: `images (count, 32, 32)` uint8 0/1, `labels (count,)`, and `markers
    (count, 2, 2)` the (row, column) centres of the two markers."""
    max_turn = math.radians(max_turn_degrees)
    labels = rng.permutation(np.arange(count) % 2)
    images = np.zeros((count, SIDE, SIDE), dtype=bool)
    markers = np.zeros((count, 2, 2), dtype=np.int64)
    done = np.zeros(count, dtype=bool)
    while not done.all():
        todo = np.flatnonzero(~done)
        batch = len(todo)
        occupied = np.zeros((batch, SIDE, SIDE), dtype=bool)  # dilated footprints of the placed contours
        lit = np.zeros((batch, SIDE, SIDE), dtype=bool)
        target_ends = np.zeros((batch, 2, 2, 2), dtype=np.int64)  # target contour, end, (row, column)
        alive = np.ones(batch, dtype=bool)
        for slot in range(2 + num_distractors):
            placed = ~alive  # images given up on count as placed (they are redrawn as a whole)
            for attempt in range(MAX_TRIES):
                pending = np.flatnonzero(~placed)
                if len(pending) == 0:
                    break
                # one contour per image first, then CANDIDATES per image still pending (the hard ones) at once;
                # each image takes its first candidate that fits
                candidates = 1 if attempt == 0 else CANDIDATES
                owner = np.repeat(pending, candidates)
                pixels, ends, inside = draw_contours(len(owner), contour_length, paddle_length, max_turn, rng)
                body = _rasterize(pixels, ends)  # a contour with both end squares reserved
                fits = (inside & ~(body & occupied[owner]).any(axis=(1, 2))).reshape(-1, candidates)
                found = fits.any(axis=1)
                pick = np.flatnonzero(found) * candidates + fits.argmax(axis=1)[found]
                accepted = pending[found]
                occupied[accepted] |= _dilate(body[pick])
                lit[accepted] |= _rasterize(pixels[pick], None)
                if slot < 2:
                    target_ends[accepted, slot] = ends[pick]
                placed[accepted] = True
            alive &= placed
        # markers: both ends of target 0 (positive) or one end of each target (negative)
        positive = labels[todo] == 1
        first = target_ends[:, 0, 0]
        second = np.where(positive[:, None], target_ends[:, 0, 1], target_ends[:, 1, 0])
        chosen = np.stack([first, second], axis=1)
        lit |= _rasterize(np.zeros((batch, 0, 2), dtype=np.int64), chosen)
        finished = todo[alive]
        images[finished] = lit[alive]
        markers[finished] = chosen[alive]
        done[finished] = True
    return {"images": images.astype(np.uint8), "labels": labels.astype(np.int64), "markers": markers}


def _as_lengths(value: object) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value),)
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        raise MixerInputError(f"pathfinder: contour_lengths must be a paddle count or a non-empty list of them, "
                              f"got {value!r}")
    lengths = tuple(int(v) for v in value)
    if len(set(lengths)) != len(lengths) or min(lengths) < 1 or max(lengths) > 20:
        raise MixerInputError(f"pathfinder: contour_lengths must be distinct paddle counts in 1..20, got {lengths}")
    return lengths


@register_task("pathfinder")
@dataclass(frozen=True)
class Pathfinder(Task):
    """Pathfinder at 32×32 as a pixel sequence or an image (see the module)."""

    view: str = "sequence"
    contour_lengths: tuple[int, ...] = LEVELS
    num_distractors: int = 1
    paddle_length: float = 1.5
    max_turn_degrees: float = 30.0
    num_train_examples: int = 20_000
    num_test_examples: int = 2_000
    seed: int = 0

    target_kind = "per_example"
    group_name = "contour_length"
    loss_name = "cross-entropy of connected / not connected"
    metric_name = "accuracy: the share of test images whose connectedness is predicted right"

    def __post_init__(self) -> None:
        object.__setattr__(self, "contour_lengths", _as_lengths(self.contour_lengths))
        if self.view not in VIEWS:
            raise MixerInputError(f"pathfinder: view must be one of {', '.join(VIEWS)}; got {self.view!r}")
        for field in ("num_distractors", "num_train_examples", "num_test_examples", "seed"):
            value = getattr(self, field)
            minimum = 0 if field in ("num_distractors", "seed") else 2 * len(self.contour_lengths)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise MixerInputError(f"pathfinder: {field} must be an integer >= {minimum}, got {value!r}")
        if self.num_distractors > 3:
            raise MixerInputError(f"pathfinder: at most 3 distractors fit in 32×32, got {self.num_distractors}")
        if not 1.0 <= self.paddle_length <= 4.0:
            raise MixerInputError(f"pathfinder: paddle_length must be in [1, 4] pixels, got {self.paddle_length}")
        if not 0.0 <= self.max_turn_degrees <= 90.0:
            raise MixerInputError(f"pathfinder: max_turn_degrees must be in [0, 90], got {self.max_turn_degrees}")
        # longer contours rarely fit beside the others: generation would take very long (measured: 4 contours of
        # 14 × 2 px fill 3 % of the images per round, 3 contours of 14 × 1.5 px fill 94 %)
        if max(self.contour_lengths) * self.paddle_length * (2 + self.num_distractors) > 70:
            raise MixerInputError("pathfinder: the contours are too long to fit in 32×32 side by side: need "
                                  "max(contour_lengths) · paddle_length · (2 + num_distractors) <= 70 pixels")

    @property
    def input_kind(self) -> str:  # type: ignore[override]
        return "values" if self.view == "sequence" else "image"

    @property
    def vocab_size(self) -> int:  # type: ignore[override]
        return 1  # real-valued pixels: no vocabulary

    @property
    def sequence_length(self) -> int:  # type: ignore[override]
        return SIDE * SIDE

    @property
    def num_classes(self) -> int:
        return 2

    @property
    def input_channels(self) -> int:
        return 1

    def setting(self) -> str:
        lengths = ",".join(map(str, self.contour_lengths))
        return f"view={self.view} paddles={lengths} distractors={self.num_distractors} n={self.num_train_examples}"

    @property
    def cache_path(self) -> Path:
        """Both views share one file: the view is not part of the key."""
        params = {key: value for key, value in self.params().items() if key != "view"}
        return cache_file("pathfinder", FORMAT_VERSION, params)

    def generate(self) -> dict[str, Tensor]:
        """Both splits, freshly generated (no cache): images uint8 0/1, labels, contour lengths, marker centres."""
        tensors: dict[str, Tensor] = {}
        for split, total in (("train", self.num_train_examples), ("test", self.num_test_examples)):
            parts: dict[str, list[np.ndarray]] = {"images": [], "labels": [], "markers": [], "groups": []}
            for length, count in zip(self.contour_lengths, split_counts(total, len(self.contour_lengths))):
                rng = np.random.default_rng(seed_for("pathfinder", self.seed, split, length))
                data = generate_pathfinder(count, length, self.num_distractors, self.paddle_length,
                                           self.max_turn_degrees, rng)
                for key in ("images", "labels", "markers"):
                    parts[key].append(data[key])
                parts["groups"].append(np.full(count, length, dtype=np.int64))
            for key, arrays in parts.items():
                tensors[f"{split}_{key}"] = torch.from_numpy(np.concatenate(arrays))
        return tensors

    def split(self, name: SplitName) -> Split:
        if name not in ("train", "test"):
            raise MixerInputError(f"pathfinder: unknown split {name!r}; valid: test, train")
        tensors = load_or_generate(self.cache_path, self.generate)
        images = tensors[f"{name}_images"].float()
        inputs = images.reshape(-1, SIDE * SIDE, 1) if self.view == "sequence" else images.unsqueeze(1)
        return Split(inputs, tensors[f"{name}_labels"].clone(), tensors[f"{name}_groups"].clone())

    def markers(self, name: SplitName) -> Tensor:
        """The (row, column) centres of each image's two markers, `(N, 2, 2)` (for checks and plots)."""
        return load_or_generate(self.cache_path, self.generate)[f"{name}_markers"].clone()
