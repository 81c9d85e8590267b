"""engine: neural style transfer and image generation on MLX."""

from . import blas

blas.load()  # before anything imports mlx.core: MLX binds its BLAS symbols when it is loaded

__version__ = "0.1.0"
