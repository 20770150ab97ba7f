"""A MetaFormer image backbone around any token mixer (Yu et al., "MetaFormer Is Actually What You Need for
Vision", arXiv 2111.11418).

image (B, C_in, H, W) → stem (patch_size × patch_size conv, stride patch_size)
      → stage 1 → downsample → stage 2 → ... (each stage: depth × block at one width)
      → global average pool → LayerNorm → Linear head

block:  x = x + mixer(norm(x));   x = x + MLP(norm(x))      (norm: LayerNorm over channels at each position;
                                                            MLP: 1×1 conv → GELU → 1×1 conv)

Downsampling between stages is a 3×3 convolution with stride 2, or SPD-Conv (`downsample="spd"`). One stage is the isotropic configuration (ViT /
ConvMixer-like), several stages the hierarchical one (PoolFormer / ConvNeXt-like). Each stage names its mixer, so
a model can mix families (e.g. pooling early, attention late). Grid mixers receive `(B, D, h, w)`; sequence
mixers receive the positions flattened row by row, `(B, h·w, D)`, built non-causal unless they are causal by
construction — the flatten adapter, in one place, so no mixer carries layout glue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import tokenmix
from tokenmix.errors import MixerInputError
from tokenmix.models.simpool import SimPool


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a channels-first grid, at each position."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class FlattenedSequenceMixer(nn.Module):
    """Runs a sequence mixer on a grid: `(B, D, h, w)` → `(B, h·w, D)` → mixer → back."""

    def __init__(self, mixer: nn.Module) -> None:
        super().__init__()
        self.mixer = mixer

    def forward(self, x: Tensor) -> Tensor:
        b, d, *spatial = x.shape
        y = self.mixer(x.flatten(2).transpose(1, 2))
        return y.transpose(1, 2).reshape(b, d, *spatial)


def build_grid_mixer(name: str, dim: int, options: dict[str, Any] | None = None) -> nn.Module:
    """A mixer for `(B, dim, h, w)` grids: a 2D grid mixer as is, a sequence mixer through the flatten adapter."""
    options = dict(options or {})
    spec = tokenmix.spec(name)
    if spec.layout == "grid":
        if 2 not in spec.spatial_dims:
            raise MixerInputError(f"{name}: a vision backbone needs a 2D grid mixer; it supports {spec.spatial_dims}")
        return tokenmix.create(name, dim, **options)
    if spec.causal != "always" and "causal" not in options:
        options["causal"] = False  # an image has no order to respect
    return FlattenedSequenceMixer(tokenmix.create(name, dim, **options))


class SpaceToDepthConv(nn.Module):
    """SPD-Conv downsampling (Sunkara & Luo, arXiv 2208.03641): space-to-depth with scale 2, then a non-strided conv:

        x' = concat(x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2])   (C → 4C)
        y = Conv_{3×3, stride 1}(x')                                                                 (4C → C_out)

    so no pixel is skipped, unlike a strided conv or pooling. Odd sizes are zero-padded on the bottom / right."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4 * in_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        parts = [x[..., i::2, j::2] for j in (0, 1) for i in (0, 1)]
        return self.conv(torch.cat(parts, dim=1))


def downsampling(kind: str, in_channels: int, out_channels: int) -> nn.Module:
    """Between stages: `conv` (3×3, stride 2, as PoolFormer) or `spd` (space-to-depth + conv, SPD-Conv)."""
    if kind == "conv":
        return nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
    if kind == "spd":
        return SpaceToDepthConv(in_channels, out_channels)
    raise MixerInputError(f"VisionModel: downsample must be 'conv' or 'spd', got {kind!r}")


class MLP(nn.Module):
    """The channel mixer of a block: 1×1 conv → GELU → 1×1 conv."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.up = nn.Conv2d(dim, hidden_dim, 1)
        self.activation = nn.GELU()
        self.down = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.activation(self.up(x)))


class MetaFormerBlock(nn.Module):
    def __init__(self, dim: int, mixer: str, mixer_options: dict[str, Any] | None, mlp_ratio: float) -> None:
        super().__init__()
        self.mixer_norm = ChannelLayerNorm(dim)
        self.mixer = build_grid_mixer(mixer, dim, mixer_options)
        self.mlp_norm = ChannelLayerNorm(dim)
        self.mlp = MLP(dim, max(1, int(round(mlp_ratio * dim))))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mixer(self.mixer_norm(x))
        return x + self.mlp(self.mlp_norm(x))


def _per_stage(value: Any, stages: int, what: str) -> list[Any]:
    if isinstance(value, (str, dict)) or value is None:
        return [value] * stages
    value = list(value)
    if len(value) != stages:
        raise MixerInputError(f"VisionModel: {what} names {len(value)} stages, depths has {stages}")
    return value


class VisionModel(nn.Module):
    """Images `(B, in_channels, H, W)` → logits `(B, num_classes)`, a MetaFormer with a mixer per stage.

    `depths` and `dims` give the blocks and width of each stage (one entry: isotropic; several: hierarchical,
    each stage after the first halving the resolution). `mixers` is one name or one per stage, `mixer_options`
    one dict or one per stage. `downsample` is "conv" or "spd". `num_classes=0` returns pooled features.
    `pooling` is "average" (global average pool) or "simpool" (SimPool attention pooling, models/simpool.py).
    `odd_block_options` (one dict or one per stage) update the options of every second block of a stage, for
    mixers used in alternating pairs: Swin's regular and shifted windows are
    `mixer_options={"window_size": 7}, odd_block_options={"shift_size": 3}`."""

    def __init__(self, mixers: str | Sequence[str], *, in_channels: int = 3, num_classes: int = 10,
                 depths: Sequence[int] = (2, 2, 2, 2), dims: Sequence[int] = (32, 64, 128, 256),
                 mixer_options: dict[str, Any] | Sequence[dict[str, Any] | None] | None = None,
                 patch_size: int = 4, mlp_ratio: float = 4.0, downsample: str = "conv",
                 pooling: str = "average",
                 odd_block_options: dict[str, Any] | Sequence[dict[str, Any] | None] | None = None) -> None:
        super().__init__()
        depths, dims = list(depths), list(dims)
        if not depths or len(depths) != len(dims) or min(depths) < 1 or min(dims) < 1:
            raise MixerInputError(f"VisionModel: depths {depths} and dims {dims} must be positive and of equal length")
        if patch_size < 1:
            raise MixerInputError(f"VisionModel: patch_size must be positive, got {patch_size}")
        mixers = _per_stage(mixers, len(depths), "mixers")
        options = _per_stage(mixer_options, len(depths), "mixer_options")
        odd_options = _per_stage(odd_block_options, len(depths), "odd_block_options")
        self.in_channels = in_channels
        self.stem = nn.Conv2d(in_channels, dims[0], patch_size, stride=patch_size)
        self.stages = nn.ModuleList()
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            layers: list[nn.Module] = []
            if i > 0:
                layers.append(downsampling(downsample, dims[i - 1], dim))
            for block in range(depth):
                block_options = options[i]
                if block % 2 == 1 and odd_options[i]:
                    block_options = {**(block_options or {}), **odd_options[i]}
                layers.append(MetaFormerBlock(dim, mixers[i], block_options, mlp_ratio))
            self.stages.append(nn.Sequential(*layers))
        self.num_features = dims[-1]
        if pooling not in ("average", "simpool"):
            raise MixerInputError(f"VisionModel: pooling must be 'average' or 'simpool', got {pooling!r}")
        self.simpool = SimPool(self.num_features) if pooling == "simpool" else None
        self.head_norm = nn.LayerNorm(self.num_features)
        self.head: nn.Module = nn.Identity()
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialized head for `num_classes` classes (0: none, the model returns features)."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, images: Tensor) -> Tensor:
        """`(B, in_channels, H, W)` → the last stage's feature map `(B, num_features, h, w)`."""
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != self.in_channels \
                or not images.is_floating_point():
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise MixerInputError(f"VisionModel: expected floating images of shape (batch, {self.in_channels}, "
                                  f"height, width), got {shape}")
        x = self.stem(images)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map → global average pool (or SimPool) → LayerNorm → (unless `pre_logits`) the classifier."""
        pooled = self.head_norm(features.mean((2, 3)) if self.simpool is None else self.simpool(features))
        return pooled if pre_logits else self.head(pooled)

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
