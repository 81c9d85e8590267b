"""Shipped weights (safetensors); not code."""
