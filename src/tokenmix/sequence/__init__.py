"""Sequence mixers `(B, L, D) -> (B, L, D)`; importing this package registers them."""

from tokenmix.sequence import attention, linear_attention  # noqa: F401
from tokenmix.sequence import delta_rule, gated_recurrences, kernelized_attention, sliding_window  # noqa: F401
from tokenmix.sequence import long_convolution  # noqa: F401
from tokenmix.sequence import state_space  # noqa: F401
from tokenmix.sequence import short_convolution  # noqa: F401
from tokenmix.sequence import fourier  # noqa: F401
from tokenmix.sequence import laughing_hyena  # noqa: F401
from tokenmix.sequence import xlstm  # noqa: F401
from tokenmix.sequence import mamba  # noqa: F401
from tokenmix.sequence import log_linear  # noqa: F401
from tokenmix.sequence import log_normal_attention  # noqa: F401
