"""The arbitrary-style architectures the any-painting network was chosen among, by cost: the
seconds of one 512x512 photo once the painting is known, the once-per-painting cost, and the
weights each ships (float16). Speed does not depend on the weights, so each runs with random
ones; what each would reach in quality needs its own training and is not measured here.

Every candidate is built in MLX on the engine's VGG16 (the papers use VGG19, deeper before
relu4_1: their costs here are lower bounds), with the engine's convolutions (on the CPU the
matrix-product ones, the path the shipped networks take):

- `ours`: the any-painting network (Ghiasi et al. 2017's conditional instance norm on the fast
  network's layout, width 64): the painting's code gives an ordinary style network; a photo
  costs that network's pass;
- `adain`: Huang & Belongie 2017: VGG to relu4_1, mean/std transfer, their decoder;
- `wct`: Li et al. 2017: five levels, coarse to fine, each VGG to reluL_1, whitening and
  colouring (an eigendecomposition of the photo's covariance, on the CPU), a decoder per level;
- `linear`: Li et al. 2019: VGG to relu3_1, the 32x32 transform from two small CNNs, a decoder;
- `sanet`: Park & Lee 2019: VGG to relu4_1 and relu5_1, style attention at both, AdaIN's
  decoder.

    python benchmarks/bench_candidates.py [--size 512] [--painting-size 384] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import engine  # noqa: F401,I001 - first: its BLAS loads before mlx.core
import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import emit, timed  # noqa: E402

from engine.nets.ops import upsample2x  # noqa: E402
from engine.nets.transformer import ConvLayer  # noqa: E402
from engine.nets.vgg import VGG  # noqa: E402

LEVELS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


class Decoder(nn.Module):
    """The mirror of VGG up to a level: `plan` lists the widths, 'up' a 2x upsampling."""

    def __init__(self, cin: int, plan: list):
        super().__init__()
        self.plan, self.convs = plan, []
        for item in plan:
            if item != "up":
                self.convs.append(ConvLayer(cin, item, 3))
                cin = item

    def __call__(self, x: mx.array) -> mx.array:
        index = 0
        for item in self.plan:
            if item == "up":
                x = upsample2x(x)
                continue
            x = self.convs[index](x)
            index += 1
            if index < len(self.convs):
                x = nn.relu(x)
        return x


# Decoders from each level (Huang & Belongie's from relu4_1; the others the same pattern).
DECODERS = {
    "relu1_1": [3],
    "relu2_1": [64, "up", 64, 3],
    "relu3_1": [128, "up", 128, 64, "up", 64, 3],
    "relu4_1": [256, "up", 256, 256, 256, 128, "up", 128, 64, "up", 64, 3],
    "relu5_1": [512, "up", 512, 512, 512, 256, "up", 256, 256, 256, 128, "up", 128, 64, "up",
                64, 3],
}
WIDTH = {"relu1_1": 64, "relu2_1": 128, "relu3_1": 256, "relu4_1": 512, "relu5_1": 512}


def moments(f: mx.array) -> tuple[mx.array, mx.array]:
    mean = f.mean(axis=(1, 2), keepdims=True)
    return mean, mx.sqrt(f.var(axis=(1, 2), keepdims=True) + 1e-5)


def covariance_roots(f: mx.array) -> tuple[mx.array, mx.array, mx.array]:
    """(C, N) features' mean, and their covariance's inverse square root and square root."""
    mean = f.mean(axis=1, keepdims=True)
    centred = f - mean
    cov = centred @ centred.T / (f.shape[1] - 1) + 1e-5 * mx.eye(f.shape[0])
    values, vectors = mx.linalg.eigh(cov, stream=mx.cpu)
    values = mx.maximum(values, 1e-8)
    root = (vectors * mx.sqrt(values)) @ vectors.T
    inverse = (vectors / mx.sqrt(values)) @ vectors.T
    return mean, inverse, root


class AdaIN(nn.Module):
    def __init__(self, vgg: VGG):
        super().__init__()
        self.vgg, self.decoder = vgg, Decoder(512, DECODERS["relu4_1"])

    def prepare(self, painting: mx.array):
        return moments(self.vgg(painting, ["relu4_1"])["relu4_1"])

    def __call__(self, photo: mx.array, style) -> mx.array:
        f = self.vgg(photo, ["relu4_1"])["relu4_1"]
        mean, std = moments(f)
        return self.decoder((f - mean) / std * style[1] + style[0])


class WCT(nn.Module):
    def __init__(self, vgg: VGG):
        super().__init__()
        self.vgg = vgg
        self.decoders = {level: Decoder(WIDTH[level], DECODERS[level]) for level in LEVELS}

    def prepare(self, painting: mx.array):
        features = self.vgg(painting, LEVELS)
        out = {}
        for level, f in features.items():
            mean, _, root = covariance_roots(f[0].reshape(-1, f.shape[-1]).T)
            out[level] = (mean, root)
        return out

    def __call__(self, photo: mx.array, style) -> mx.array:
        x = photo
        for level in reversed(LEVELS):
            f = self.vgg(x, [level])[level]
            shape = f.shape
            flat = f[0].reshape(-1, shape[-1]).T
            mean, inverse, _ = covariance_roots(flat)
            coloured = style[level][1] @ (inverse @ (flat - mean)) + style[level][0]
            x = self.decoders[level](coloured.T.reshape(shape))
        return x


class Linear(nn.Module):
    """Li et al. 2019 at relu3_1: a CNN squeezes content and style to 32 channels; the style's
    32x32 transform (from the CNN's covariance) is applied to the content's."""

    def __init__(self, vgg: VGG):
        super().__init__()
        self.vgg = vgg
        self.content_net = [ConvLayer(256, 128, 3), ConvLayer(128, 64, 3), ConvLayer(64, 32, 3)]
        self.style_net = [ConvLayer(256, 128, 3), ConvLayer(128, 64, 3), ConvLayer(64, 32, 3)]
        self.style_fc = nn.Linear(32 * 32, 32 * 32)
        self.content_fc = nn.Linear(32 * 32, 32 * 32)
        self.compress, self.unzip = ConvLayer(256, 32, 1), ConvLayer(32, 256, 1)
        self.decoder = Decoder(256, DECODERS["relu3_1"])

    @staticmethod
    def _squeeze(convs, f):
        for conv in convs[:-1]:
            f = nn.relu(conv(f))
        f = convs[-1](f)
        flat = f[0].reshape(-1, 32)
        flat = flat - flat.mean(axis=0)
        return (flat.T @ flat / flat.shape[0]).reshape(1, -1)

    def prepare(self, painting: mx.array):
        f = self.vgg(painting, ["relu3_1"])["relu3_1"]
        mean, _ = moments(f)
        return mean, self.style_fc(self._squeeze(self.style_net, f - mean)).reshape(32, 32)

    def __call__(self, photo: mx.array, style) -> mx.array:
        f = self.vgg(photo, ["relu3_1"])["relu3_1"]
        mean, _ = moments(f)
        centred = f - mean
        content = self.content_fc(self._squeeze(self.content_net, centred)).reshape(32, 32)
        small = self.compress(centred)
        shape = small.shape
        mixed = (small.reshape(-1, 32) @ (style[1] @ content).T).reshape(shape)
        return self.decoder(self.unzip(mixed) + style[0])


class SANet(nn.Module):
    """Park & Lee 2019: attention from the photo's normalized features to the painting's, at
    relu4_1 and relu5_1 (upsampled and added), then AdaIN's decoder."""

    def __init__(self, vgg: VGG):
        super().__init__()
        self.vgg = vgg
        self.q = {level: ConvLayer(512, 512, 1) for level in ("relu4_1", "relu5_1")}
        self.k = {level: ConvLayer(512, 512, 1) for level in ("relu4_1", "relu5_1")}
        self.v = {level: ConvLayer(512, 512, 1) for level in ("relu4_1", "relu5_1")}
        self.out = {level: ConvLayer(512, 512, 1) for level in ("relu4_1", "relu5_1")}
        self.merge = ConvLayer(512, 512, 3)
        self.decoder = Decoder(512, DECODERS["relu4_1"])

    def prepare(self, painting: mx.array):
        features = self.vgg(painting, ["relu4_1", "relu5_1"])
        prepared = {}
        for level, f in features.items():
            mean, std = moments(f)
            keys = self.k[level]((f - mean) / std)[0].reshape(-1, 512)
            prepared[level] = (keys, self.v[level](f)[0].reshape(-1, 512))
        return prepared

    def _attend(self, level, f, style):
        mean, std = moments(f)
        shape = f.shape
        queries = self.q[level]((f - mean) / std)[0].reshape(-1, 512)
        weights = mx.softmax(queries @ style[level][0].T, axis=-1)
        return f + self.out[level]((weights @ style[level][1]).reshape(shape))

    def __call__(self, photo: mx.array, style) -> mx.array:
        features = self.vgg(photo, ["relu4_1", "relu5_1"])
        four = self._attend("relu4_1", features["relu4_1"], style)
        five = upsample2x(self._attend("relu5_1", features["relu5_1"], style))
        return self.decoder(self.merge(four + five[:, :four.shape[1], :four.shape[2]]))


class Ours(nn.Module):
    def __init__(self, vgg: VGG):
        super().__init__()
        from engine.nets.config import STATS_LAYERS
        from engine.nets.universal import UniversalConfig, UniversalNet
        from engine.training.settings import UniversalSettings

        settings = UniversalSettings()
        self.vgg, self.layers = vgg, STATS_LAYERS
        self.model = UniversalNet(UniversalConfig(
            settings.config, settings.hidden, settings.code,
            tuple(block[0] for block in vgg.spec.blocks[:4])))

    def prepare(self, painting: mx.array):
        from engine.stylize import Stylizer

        code = self.model.code(self.vgg(painting, self.layers))
        return Stylizer(self.model.materialize(code))

    def __call__(self, photo: mx.array, style) -> mx.array:
        return style(photo)


CANDIDATES = {"ours": Ours, "adain": AdaIN, "wct": WCT, "linear": Linear, "sanet": SANet}


def shipped_megabytes(model: nn.Module) -> float:
    """Float16 bytes of the weights the candidate adds to the VGG encoder (which all share)."""
    count = sum(v.size for k, v in tree_flatten(model.parameters()) if not k.startswith("vgg"))
    return round(count * 2 / 1e6, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--painting-size", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default=",".join(CANDIDATES))
    args = parser.parse_args()
    mx.random.seed(0)
    vgg = VGG()
    photo = mx.random.uniform(shape=(1, args.size, args.size, 3))
    painting = mx.random.uniform(shape=(1, args.painting_size, args.painting_size, 3))
    mx.eval(vgg.parameters(), photo, painting)
    for name in args.only.split(","):
        model = CANDIDATES[name](vgg)
        mx.eval(model.parameters())

        def prepare(model=model):
            style = model.prepare(painting)
            mx.eval(style if not callable(style) else style.net.parameters())
            return style

        style = prepare()
        for _ in range(3):  # a Stylizer's first calls run op by op, then it compiles
            out = model(photo, style)
            mx.eval(out)
        assert out.shape == (1, args.size, args.size, 3), (name, out.shape)
        emit({"what": f"{name}: {args.size}x{args.size} photo, the painting prepared",
              "candidate": name, "size": args.size, "weights_mb_float16": shipped_megabytes(model),
              **timed(lambda: mx.eval(model(photo, style)), repeats=args.repeats)})
        emit({"what": f"{name}: once per painting ({args.painting_size} px)", "candidate": name,
              "painting_size": args.painting_size, **timed(prepare, repeats=args.repeats)})


if __name__ == "__main__":
    main()
