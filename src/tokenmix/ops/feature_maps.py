"""Feature maps φ applied to q and k before a linear-attention op (elementwise, shape-preserving)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def elu_plus_one(x: Tensor) -> Tensor:
    """φ(x) = elu(x) + 1 > 0, "Transformers are RNNs", Katharopoulos et al. 2020, arXiv:2006.16236."""
    return F.elu(x) + 1.0


FEATURE_MAPS = {"elu_plus_one": elu_plus_one}
