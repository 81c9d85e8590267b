"""engine: neural style transfer and image generation on MLX."""

__version__ = "0.1.0"
