"""tokenmix: token mixers with reference forms, verified fast forms, one contract and one benchmark."""

from tokenmix.errors import MixerInputError
from tokenmix.mixer import GridMixer, SequenceMixer
from tokenmix.registry import MixerSpec, available, create, register, spec

__version__ = "0.1.0"

__all__ = [
    "GridMixer",
    "MixerInputError",
    "MixerSpec",
    "SequenceMixer",
    "__version__",
    "available",
    "create",
    "register",
    "spec",
]
