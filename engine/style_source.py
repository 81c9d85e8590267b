"""What `--style` names, turned into a style network: a registered style, a style file, any
painting (an image file, through the any-painting network), or a blend of them
(`starry:0.6,wave:0.4`, mixed as style codes of the any-painting network)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import mlx.core as mx
import numpy as np

from .errors import UsageError
from .io.images import IMAGE_SUFFIXES, load_image
from .io.style_files import StyleInfo, load_style, read_info
from .nets.transformer import TransformerNet

MAX_PARTS = 16  # styles in one blend


@dataclass
class StyleSource:
    """A style network ready to run, with what --refine needs (its objective's targets)."""

    label: str  # for output file names
    net: TransformerNet
    info: StyleInfo
    path: Path | None = None  # a style file's path (refine reads its targets there)
    make_targets: object | None = None  # () -> Gram targets, computed from the paintings
    encoder: object | None = None  # the VGG those targets are on (a painting network's)
    extra: dict = field(default_factory=dict)

    @property
    def targets(self) -> dict[str, mx.array] | None:
        """The paintings' Gram targets (for --refine and `styles add`), computed on first use:
        a VGG pass per painting that a plain apply does not need."""
        if self.make_targets is not None and "targets" not in self.extra:
            self.extra["targets"] = self.make_targets()
        return self.extra.get("targets")


def is_painting(text: str) -> bool:
    """Whether --style names an image file (a painting to use as the style)."""
    return Path(text).suffix.lower() in IMAGE_SUFFIXES


def parse_blend(text: str) -> list[tuple[str, float]]:
    """'a:0.6,b:0.4' -> [(a, 0.6), (b, 0.4)]; 'a' -> [(a, 1.0)]. Weights are finite, 0 or
    more, and do not sum to zero."""
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in parts):
        raise UsageError(f"--style {text!r} has an empty part; give NAME or NAME:WEIGHT,...")
    if len(parts) > MAX_PARTS:
        raise UsageError(f"--style blends at most {MAX_PARTS} styles, not {len(parts)}")
    blend = []
    for part in parts:
        name, colon, weight = part.rpartition(":")
        if not colon or Path(part).exists() or "/" in weight or "\\" in weight:
            blend.append((part, 1.0))
            continue
        try:
            value = float(weight)
        except ValueError:
            raise UsageError(f"--style {text!r}: the weight {weight!r} of {name!r} is not a "
                             "number; write NAME:WEIGHT, e.g. starry:0.6,wave:0.4") from None
        if not (math.isfinite(value) and value >= 0):
            raise UsageError(f"--style {text!r}: the weight of {name!r} must be a finite number, "
                             f"0 or more, not {weight}")
        blend.append((name.strip(), value))
    if sum(weight for _, weight in blend) <= 0:
        raise UsageError(f"--style {text!r}: the weights sum to zero; give at least one above 0")
    return blend


def check_style(name: str, net: str = "auto", catalog=None) -> None:
    """One style name (no blend) is usable: a painting file that exists, or a registered
    style or style file (UsageError / WeightsError otherwise), before any work."""
    from .registry import style_path

    if not is_painting(name):
        style_path(name, net, catalog)
    elif not Path(name).is_file():
        raise UsageError(f"{name}: no such painting file; check the path")


def label_of(text: str) -> str:
    """A short name for output files: the style's name, a painting's stem, or the names of a
    blend joined by '+'."""
    return "+".join(Path(name).stem for name, _ in parse_blend(text))


@lru_cache(maxsize=4)
def painting_network(name: str | None = None):
    """A registered any-painting network, loaded once per process (the default: 'universal')."""
    from .painting import PaintingNetwork
    from .registry import DEFAULT_PAINTING_NETWORK, painting_networks

    entry = painting_networks().get(name or DEFAULT_PAINTING_NETWORK)
    return PaintingNetwork.load(Path(entry.item.path)), entry.name


def load_painting(path: Path) -> mx.array:
    """A painting file as (1, H, W, 3) RGB, transparency over white; checked readable."""
    picture = load_image(path)
    rgb = picture.rgb
    if picture.alpha is not None:
        alpha = picture.alpha[None, :, :, None]
        rgb = rgb * alpha + (1.0 - alpha)
    return rgb


def open_style(text: str, net: str = "auto", catalog=None, painting_net: str | None = None,
               painting_size: int | None = None) -> StyleSource:
    """The style network --style names (see the module)."""
    from .registry import style_path

    blend = parse_blend(text)
    if len(blend) == 1 and not is_painting(blend[0][0]) and ":" not in text:
        path = style_path(blend[0][0], net, catalog)
        style, info = load_style(path)
        return StyleSource(Path(blend[0][0]).stem, style, info, path=path)
    network, network_name = painting_network(painting_net)
    size = painting_size or _default_size()
    codes, targets, weights, names = [], [], [], []
    for name, weight in blend:
        code, grams = _code_of(name, network, net, catalog, size)
        codes.append(code)
        targets.append(grams)
        weights.append(weight)
        names.append(Path(name).name)
    from .painting import blend as mix

    code = mix(codes, weights) if len(codes) > 1 else codes[0]
    total = sum(weights)

    def grams() -> dict[str, mx.array]:
        each = [make() for make in targets]
        return {layer: sum(g[layer] * (w / total) for g, w in zip(each, weights))
                for layer in each[0]}

    style = network.style_net(code)
    training = {**network.info.training, "style_image": ", ".join(names),
                "painting_network": network_name, "margin": 0}
    info = StyleInfo(Path(names[0]), style.config, training, network.info.steps)
    return StyleSource(label_of(text), style, info, make_targets=grams, encoder=network.encoder,
                       extra={"code": code, "weights": weights})


def _default_size() -> int:
    from .painting import CODE_SIZE

    return CODE_SIZE


def _code_of(name: str, network, net: str, catalog, size: int):
    """A blend part's style code and Gram targets: from a painting file, from a style added
    with `engine styles add` (its code is in its file), or from the painting a shipped style
    was trained on."""
    if is_painting(name):
        check_style(name)
        painting = load_painting(Path(name))
        return (_cached_code(Path(name), network, size, painting),
                lambda: network.targets(painting, size))
    from .registry import style_path, styles

    catalog = catalog or styles()
    path = style_path(name, net, catalog)
    info = read_info(path)
    code = info.training.get("painting_code")
    if isinstance(code, list) and len(code) == network.info.config.code and all(
            isinstance(v, (int, float)) for v in code):
        from .io.style_files import load_targets

        return mx.array(np.array(code, dtype=np.float32))[None], lambda: load_targets(path)
    painting = getattr(catalog.get(name).item, "painting", None)
    if painting is None or not Path(painting).is_file():
        raise UsageError(f"the style {name!r} cannot be blended: the any-painting network has "
                         "no painting of it; blend painting files, shipped styles or styles "
                         "made with `engine styles add`")
    image = load_painting(Path(painting))
    return network.code(image, size), lambda: network.targets(image, size)


def _cached_code(path: Path, network, size: int, painting: mx.array) -> mx.array:
    """The painting's code, kept in the user's cache by the file's contents, the network and
    the size: the next command with this painting skips its VGG pass (0.9 s on a 2-core CPU).
    A cache that cannot be read or written is only a cache: the code is computed."""
    import hashlib

    from .io.atomic import atomic_write
    from .io.vgg_weights import cache_dir

    info = network.info
    key = hashlib.sha256(Path(path).read_bytes() + f"|{info.path.name}|{info.steps}|"
                         f"{size}|{info.config.code}".encode()).hexdigest()[:32]
    cached = cache_dir() / "painting-codes" / f"{key}.npy"
    try:
        code = np.load(cached, allow_pickle=False)
        if code.shape == (1, info.config.code) and np.isfinite(code).all():
            return mx.array(code.astype(np.float32))
    except (OSError, ValueError):
        pass
    code = network.code(painting, size)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(cached) as stream:
            np.save(stream, np.array(code), allow_pickle=False)
    except Exception:  # (a read-only or full cache: nothing lost)
        pass
    return code


def stylizer_for(text: str, net: str = "auto", refine: int = 0, vgg_weights: Path | None = None,
                 catalog=None, painting_net: str | None = None,
                 painting_size: int | None = None, per_photo_strength: bool = False, **options):
    """A Stylizer for what --style names, with its --refine objective. With
    `per_photo_strength`, a painting's strength below 1 mixes each photo's own style code into
    the painting's instead of mixing pixels (PaintingStylizer)."""
    from .refine import Refiner, refiner_for
    from .stylize import Stylizer

    source = open_style(text, net, catalog, painting_net, painting_size)
    strength = options.get("strength", 1.0)
    if per_photo_strength and "code" in source.extra and 0.0 <= strength < 1.0:
        options["strength"] = 1.0
        return PaintingStylizer(source, strength, options), source
    refiner = None
    if refine:
        if source.path is not None:
            refiner = refiner_for(text, source.path, refine, vgg_weights)
        else:
            refiner = Refiner(source.encoder, source.targets, source.info.training, refine)
    return Stylizer(source.net, source.info, refiner=refiner, **options), source

class PaintingStylizer:
    """A painting's style at a strength below 1, as the any-painting network does it: each
    photo's own style code mixed into the painting's (strength 0.7: 70% the painting's), and the
    network of the mixed code applied to that photo. At a matched distance from the photo, this
    keeps more of the painting's style than mixing pixels with the photo does (docs/paintings.md).
    One network per photo: no batches and no compiled pass across photos."""

    def __init__(self, source: StyleSource, strength: float, options: dict):
        from .stylize import Stylizer

        self.source, self.mix, self.options = source, strength, options
        self.network = painting_network(source.info.training.get("painting_network"))[0]
        Stylizer(source.net, source.info, **options)  # the options checked now, not per photo

    def __call__(self, images: mx.array) -> mx.array:
        from .stylize import Stylizer

        outs = []
        for index in range(images.shape[0]):
            photo = images[index:index + 1]
            own = self.network.code(photo, check=False)
            code = self.mix * self.source.extra["code"] + (1.0 - self.mix) * own
            stylizer = Stylizer(self.network.style_net(code), self.source.info, **self.options)
            outs.append(stylizer(photo))
        return mx.concatenate(outs)

    def uint8(self, frames: np.ndarray) -> np.ndarray:
        from .stylize import _to_uint8

        return np.array(_to_uint8(self(mx.array(frames).astype(mx.float32) / 255.0)))

    def frames(self, batches):
        for batch in batches:
            yield np.array(self(mx.array(batch, dtype=mx.float32)))


def add_painting_style(painting: Path, name: str, overwrite: bool = False,
                       painting_net: str | None = None, painting_size: int | None = None
                       ) -> Path:
    """`engine styles add`: the painting's style network (its code computed once) written as an
    ordinary style file in the user's style folder, with its Gram targets (for --refine), its
    code (for blends) and a preview; returns the file."""
    import hashlib

    from .io import examples
    from .io.images import save_image
    from .io.style_files import (
        check_name,
        host_arrays,
        style_arrays,
        style_dir,
        style_metadata,
        write_atomic,
    )
    from .registry import styles
    from .stylize import Stylizer
    from .training.runs import check_new_name, run_dir

    check_name(name, "style")
    target = style_dir() / f"{name}.safetensors"
    overrides = check_new_name(name, "style", target, run_dir(name) / "checkpoint.safetensors",
                               False, overwrite, styles())
    if not Path(painting).is_file():
        raise UsageError(f"{painting}: no such painting file; check the path")
    source = open_style(str(painting), painting_net=painting_net, painting_size=painting_size)
    code = source.extra["code"]
    training = {**source.info.training, "style_image": Path(painting).name,
                "style_size": painting_size or _default_size(),
                "painting_code": [round(float(v), 6) for v in np.array(code[0])],
                "made_by": "engine styles add"}
    sha = hashlib.sha256(Path(painting).read_bytes()).hexdigest()
    arrays = host_arrays(style_arrays(source.net, source.targets))
    metadata = style_metadata(source.net, training, source.info.steps, sha, overrides)
    from .training.runs import run_folders

    run_folders(target.parent)
    photo = load_image(examples.content_photo(), 256).rgb
    preview = Stylizer(source.net, source.info)(photo)
    save_image(target.with_suffix(".png"), preview)
    write_atomic(target, arrays, metadata)
    return target
