"""Any-painting network files: the shared style network and its predictor in safetensors
(float16), the configuration in metadata; and a painting turned into a style code."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from .. import __version__
from ..errors import WeightsError
from ..nets.config import NetConfig, VGGSpec
from ..nets.universal import UniversalConfig, UniversalNet
from ..nets.vgg import VGG
from .style_files import save_atomic
from .weightfile import expect_shapes, int_field, json_field, load_arrays, parse_json, read_header

FORMAT = "engine-painting-network"


ENCODER = "encoder."  # the VGG layers the network reads paintings and photos with



def encoder_spec(spec: VGGSpec) -> VGGSpec:
    """A VGG's layers up to relu4_1: what the network reads paintings and photos with
    (STATS_LAYERS, and the content layer relu2_2)."""
    if len(spec.blocks) < 4:
        raise WeightsError(f"the VGG {spec.name!r} does not reach relu4_1")
    return VGGSpec(name=f"{spec.name}-to-relu4_1", blocks=(*spec.blocks[:3], spec.blocks[3][:1]))


@dataclass
class PaintingNetworkInfo:
    path: Path
    config: UniversalConfig
    encoder: VGGSpec
    training: dict = field(default_factory=dict)
    steps: int = 0

    @property
    def preview(self) -> Path | None:
        candidate = self.path.with_suffix(".png")
        return candidate if candidate.is_file() else None


def encoder_arrays(vgg: VGG) -> tuple[VGGSpec, dict[str, mx.array]]:
    """VGG's convolutions up to relu4_1 (encoder_spec), float16, to ship inside the network's
    file."""
    spec = encoder_spec(vgg.spec)
    count = sum(len(block) for block in spec.blocks)
    return spec, {f"{ENCODER}{k}": v.astype(mx.float16) for k, v in
                  tree_flatten(vgg.parameters()) if int(k.split(".")[1]) < count}


def config_json(config: UniversalConfig) -> str:
    values = asdict(config)
    values["net"] = json.loads(config.net.to_json())
    return json.dumps(values)


def config_from_json(text: str) -> UniversalConfig:
    """The configuration a file declares, bounds checked before anything is built."""
    values = parse_json(text, "the network configuration")
    if not isinstance(values, dict) or not isinstance(values.get("net"), dict):
        raise ValueError("the network configuration is not a JSON object with a 'net'")
    net = NetConfig.from_json(json.dumps(values["net"]))
    hidden, code, channels = values.get("hidden"), values.get("code"), values.get("stats_channels")
    if type(hidden) is not int or type(code) is not int or not isinstance(channels, list):
        raise ValueError("'hidden', 'code' and 'stats_channels' are missing or not whole numbers")
    config = UniversalConfig(net, hidden, code, tuple(channels))
    config.check()
    return config


def encoder_from_json(text: str, config: UniversalConfig) -> VGGSpec:
    """The encoder a file declares: four VGG blocks whose first layers give the statistics."""
    blocks = parse_json(text, "the encoder's blocks")
    if not isinstance(blocks, list) or len(blocks) != 4 or not all(
            isinstance(b, list) and 1 <= len(b) <= 8 and all(type(w) is int and 1 <= w <= 4096
                                                             for w in b) for b in blocks):
        raise ValueError("the encoder's blocks are not four lists of up to 8 widths")
    spec = VGGSpec(name="encoder", blocks=tuple(tuple(b) for b in blocks))
    if tuple(b[0] for b in spec.blocks) != config.stats_channels or len(blocks[3]) != 1:
        raise ValueError("the encoder's layers do not give the statistics the network reads")
    return spec


def save_painting_network(path: Path, model: UniversalNet,
                          encoder: tuple[VGGSpec, dict[str, mx.array]], training: dict,
                          steps: int) -> None:
    """The network (float16) with its encoder (`encoder_arrays`): one self-contained file."""
    arrays = {k: v.astype(mx.float16) for k, v in tree_flatten(model.parameters())}
    arrays.update(encoder[1])
    save_atomic(path, arrays, {"format": FORMAT, "config": config_json(model.config),
                               "encoder_blocks": json.dumps(encoder[0].blocks),
                               "training": json.dumps(training), "steps": str(steps),
                               "engine_version": __version__})


def read_painting_info(path: Path) -> PaintingNetworkInfo:
    """The file's checked header and metadata; WeightsError says what is wrong."""
    if not Path(path).is_file():
        raise WeightsError(f"{path}: painting network file not found")
    header = read_header(path, FORMAT, "painting network")
    try:
        config = config_from_json(header.metadata.get("config", "null"))
        encoder = encoder_from_json(header.metadata.get("encoder_blocks", "null"), config)
        training = json_field(header, "training", dict, {})
        steps = int_field(header, "steps", 0)
    except ValueError as error:
        raise WeightsError(f"{path}: unreadable painting network metadata ({error}); replace "
                           "the file with a good copy") from None
    return PaintingNetworkInfo(Path(path), config, encoder, training, steps)


def load_painting_network(path: Path) -> tuple[UniversalNet, VGG, PaintingNetworkInfo]:
    """The network, its encoder (a VGG to relu4_1) and its metadata, every tensor's shape
    checked before any weight is read."""
    info = read_painting_info(path)
    header = read_header(path, FORMAT, "painting network")
    model, encoder = UniversalNet(info.config), VGG(info.encoder)
    expected = {k: v.shape for k, v in tree_flatten(model.parameters())}
    expected.update({ENCODER + k: v.shape for k, v in tree_flatten(encoder.parameters())})
    expect_shapes(header, expected, "painting network")
    weights = load_arrays(header, "painting network")
    model.load_weights([(k, v.astype(mx.float32)) for k, v in weights.items()
                        if not k.startswith(ENCODER)], strict=True)
    encoder.load_weights([(k[len(ENCODER):], v.astype(mx.float32)) for k, v in weights.items()
                          if k.startswith(ENCODER)], strict=True)
    encoder.freeze()
    mx.eval(model.parameters(), encoder.parameters())
    return model, encoder, info
