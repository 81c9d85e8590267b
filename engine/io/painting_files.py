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
from ..nets.config import NetConfig
from ..nets.universal import UniversalConfig, UniversalNet
from .style_files import save_atomic
from .weightfile import expect_shapes, int_field, json_field, load_arrays, parse_json, read_header

FORMAT = "engine-painting-network"


@dataclass
class PaintingNetworkInfo:
    path: Path
    config: UniversalConfig
    training: dict = field(default_factory=dict)
    steps: int = 0


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


def save_painting_network(path: Path, model: UniversalNet, training: dict, steps: int) -> None:
    arrays = {k: v.astype(mx.float16) for k, v in tree_flatten(model.parameters())}
    save_atomic(path, arrays, {"format": FORMAT, "config": config_json(model.config),
                               "training": json.dumps(training), "steps": str(steps),
                               "engine_version": __version__})


def read_painting_info(path: Path) -> PaintingNetworkInfo:
    """The file's checked header and metadata; WeightsError says what is wrong."""
    if not Path(path).is_file():
        raise WeightsError(f"{path}: painting network file not found")
    header = read_header(path, FORMAT, "painting network")
    try:
        config = config_from_json(header.metadata.get("config", "null"))
        training = json_field(header, "training", dict, {})
        steps = int_field(header, "steps", 0)
    except ValueError as error:
        raise WeightsError(f"{path}: unreadable painting network metadata ({error}); replace "
                           "the file with a good copy") from None
    return PaintingNetworkInfo(Path(path), config, training, steps)


def load_painting_network(path: Path) -> tuple[UniversalNet, PaintingNetworkInfo]:
    info = read_painting_info(path)
    header = read_header(path, FORMAT, "painting network")
    model = UniversalNet(info.config)
    expect_shapes(header, {k: v.shape for k, v in tree_flatten(model.parameters())},
                  "painting network")
    weights = load_arrays(header, "painting network")
    model.load_weights([(k, v.astype(mx.float32)) for k, v in weights.items()], strict=True)
    mx.eval(model.parameters())
    return model, info
