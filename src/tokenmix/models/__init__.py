"""Backbones that take a mixer name."""

from tokenmix.models.sequence import SequenceModel

__all__ = ["SequenceModel"]
