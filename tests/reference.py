"""Independent numpy computations by the formulas, to check the MLX code against."""

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def conv3x3(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """y[h, w, o] = b[o] + sum_{i, dy, dx} x[h + dy - 1, w + dx - 1, i] * W[o, dy, dx, i]."""
    height, width, _ = x.shape
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((height, width, weight.shape[0]))
    for dy in range(3):
        for dx in range(3):
            out += padded[dy:dy + height, dx:dx + width, :] @ weight[:, dy, dx, :].T
    return out + bias


def vgg_features(image: np.ndarray, blocks, params: dict, tap: str) -> np.ndarray:
    """VGG up to `tap` for one (H, W, 3) image, in float64."""
    x = (image.astype(np.float64) - MEAN) / STD
    index = 0
    for b, block in enumerate(blocks):
        if b > 0:
            h, w, c = x.shape
            x = x[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2, c).max(axis=(1, 3))
        for i in range(len(block)):
            weight = np.array(params[f"convs.{index}.weight"], dtype=np.float64)
            bias = np.array(params[f"convs.{index}.bias"], dtype=np.float64)
            x = np.maximum(conv3x3(x, weight, bias), 0.0)
            index += 1
            if f"relu{b + 1}_{i + 1}" == tap:
                return x
    raise KeyError(tap)


def gram(features: np.ndarray) -> np.ndarray:
    h, w, c = features.shape
    flat = features.reshape(h * w, c)
    return flat.T @ flat / (c * h * w)
