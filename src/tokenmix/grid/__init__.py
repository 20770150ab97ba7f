"""Grid mixers `(B, D, *spatial) -> same`; importing this package registers them."""

from tokenmix.grid import convolution  # noqa: F401
