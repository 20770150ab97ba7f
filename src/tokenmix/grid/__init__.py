"""Grid mixers `(B, D, *spatial) -> same`; importing this package registers them."""

from tokenmix.grid import convolution  # noqa: F401
from tokenmix.grid import large_kernel  # noqa: F401
from tokenmix.grid import operators  # noqa: F401
from tokenmix.grid import channel_attention  # noqa: F401
from tokenmix.grid import gated  # noqa: F401
from tokenmix.grid import dynamic  # noqa: F401
from tokenmix.grid import pooling  # noqa: F401
from tokenmix.grid import deformable  # noqa: F401
from tokenmix.grid import continuous_kernel  # noqa: F401
from tokenmix.grid import linear_attention  # noqa: F401
from tokenmix.grid import global_attention  # noqa: F401
from tokenmix.grid import position_attention  # noqa: F401
from tokenmix.grid import scanning  # noqa: F401
from tokenmix.grid import spectral  # noqa: F401
from tokenmix.grid import spectral_mlp  # noqa: F401
from tokenmix.grid import local_attention  # noqa: F401
from tokenmix.grid import mlp  # noqa: F401
from tokenmix.grid import halo_attention  # noqa: F401
from tokenmix.grid import axial_attention  # noqa: F401
from tokenmix.grid import lambda_layer  # noqa: F401
from tokenmix.grid import operators_lowrank  # noqa: F401
from tokenmix.grid import operators_unet  # noqa: F401
from tokenmix.grid import operators_graph  # noqa: F401
from tokenmix.grid import operators_multigrid  # noqa: F401
from tokenmix.grid import operators_gnot  # noqa: F401
from tokenmix.grid import operators_latent_spectral  # noqa: F401
