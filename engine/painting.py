"""Any painting as a style: a painting network's code for a painting, blends of codes, and the
ordinary style network a code stands for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from .errors import ImageError
from .io.images import resize
from .io.painting_files import PaintingNetworkInfo, load_painting_network
from .losses import gram
from .nets.config import STATS_LAYERS
from .nets.transformer import TransformerNet
from .nets.universal import UniversalNet
from .nets.vgg import VGG

CODE_SIZE = 384  # the painting's longest side when its code is taken (the training crops' scale)


MIN_PAINTING_SIDE = 64


@dataclass
class PaintingNetwork:
    """A loaded any-painting network: the model, its encoder (VGG to relu4_1), its metadata."""

    model: UniversalNet
    encoder: VGG
    info: PaintingNetworkInfo

    @classmethod
    def load(cls, path: Path) -> PaintingNetwork:
        return cls(*load_painting_network(Path(path)))

    def sized(self, painting: mx.array, longest: int = CODE_SIZE, check: bool = True
              ) -> mx.array:
        """The painting (1, H, W, 3) resized to `longest` on its longest side."""
        height, width = painting.shape[1:3]
        if check and min(height, width) < MIN_PAINTING_SIDE:
            raise ImageError(f"the painting is {width}x{height}; use one at least "
                             f"{MIN_PAINTING_SIDE} px on each side")
        factor = longest / max(height, width)
        return resize(painting, max(16, round(width * factor)), max(16, round(height * factor)))

    def code(self, painting: mx.array, longest: int = CODE_SIZE, check: bool = True
             ) -> mx.array:
        """(1, code): the painting's style code (`check`: refuse a painting too small)."""
        code = self.model.code(self.encoder(self.sized(painting, longest, check), STATS_LAYERS))
        mx.eval(code)
        return code

    def targets(self, painting: mx.array, longest: int = CODE_SIZE) -> dict[str, mx.array]:
        """The painting's Gram matrices on the network's style layers (for --refine)."""
        layers = self.info.training.get("style_layers") or list(STATS_LAYERS)
        features = self.encoder(self.sized(painting, longest), layers)
        grams = {layer: gram(features[layer]) for layer in layers}
        mx.eval(grams)
        return grams

    def style_net(self, code: mx.array) -> TransformerNet:
        """The ordinary style network of a code (1, code)."""
        return self.model.materialize(code)


def blend(codes: list[mx.array], weights: list[float]) -> mx.array:
    """The weighted mean of style codes (weights normalized to sum to 1)."""
    total = sum(weights)
    return sum(code * (weight / total) for code, weight in zip(codes, weights))
