"""Backbones that take a mixer name."""

from tokenmix.models.operator import OperatorModel
from tokenmix.models.sequence import SequenceModel
from tokenmix.models.vision import VisionModel

__all__ = ["OperatorModel", "SequenceModel", "VisionModel"]
