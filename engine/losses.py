"""Perceptual losses as pure array functions over VGG features (B, H, W, C)."""

from __future__ import annotations

from collections.abc import Mapping

import mlx.core as mx


def gram(features: mx.array) -> mx.array:
    """Normalized Gram matrix: (B, H, W, C) -> (B, C, C), divided by C * H * W."""
    batch, height, width, channels = features.shape
    flat = features.reshape(batch, height * width, channels)
    return (flat.transpose(0, 2, 1) @ flat) / (channels * height * width)


def content_loss(features: mx.array, target: mx.array) -> mx.array:
    """Mean squared error between feature maps."""
    return mx.mean(mx.square(features - target))


def style_loss(features: Mapping[str, mx.array], target_grams: Mapping[str, mx.array],
               layer_weights: Mapping[str, float] | None = None) -> mx.array:
    """Weighted sum over layers of the mean squared difference between Gram matrices.

    target_grams[layer] is (1, C, C) or (B, C, C); it broadcasts over the batch.
    """
    total = mx.array(0.0)
    for layer, target in target_grams.items():
        weight = 1.0 if layer_weights is None else layer_weights[layer]
        difference = gram(features[layer]) - target
        total = total + weight * mx.mean(mx.square(difference))
    return total


def total_variation(images: mx.array) -> mx.array:
    """Mean squared difference between neighbouring pixels of (B, H, W, C) images."""
    down = images[:, 1:, :, :] - images[:, :-1, :, :]
    right = images[:, :, 1:, :] - images[:, :, :-1, :]
    return mx.mean(mx.square(down)) + mx.mean(mx.square(right))
