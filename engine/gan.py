"""A DCGAN (Radford et al. 2016) trained in MLX; trained generators register like trained styles.

Generator: latent -> 4x4 -> (nearest upsample, 3x3 conv, batch norm, ReLU) per doubling -> tanh.
Discriminator: 4x4 stride-2 convolutions with batch norm (none on the first) and leaky ReLU.
Adam 2e-4, beta1 0.5, non-saturating loss, one compiled step updating both networks.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten
from PIL import Image

from . import __version__
from .atomic import check_writable_folder, describe
from .errors import ImageError, OutputError, UsageError, WeightsError
from .generators import Generator, image_key
from .runs import all_finite, check_new_name, diverged
from .image import find_images, save_image
from .styles import OVERRIDES, check_name, engine_home, save_atomic
from .weightfile import expect_shapes, load_arrays, parse_json, read_header

FORMAT = "engine-generator"
MAX_IMAGES = 200_000
MAX_BATCH_PIXELS = 16 * 2**20  # pixels of one step's batch (128 images of 64 px: 0.5 MP)
MAX_SIZE = 1024  # the largest generator image: 1024 px is already ~1 GB of activations a batch


@dataclass(frozen=True)
class GanConfig:
    """Image size (a power of two, at least 8), latent length and the narrowest layer's width."""

    size: int = 64
    latent: int = 128
    width: int = 64

    @property
    def doublings(self) -> int:
        return int(math.log2(self.size)) - 2

    def check(self) -> None:
        if self.size < 8 or self.size > MAX_SIZE or self.size & (self.size - 1):
            raise UsageError(f"--size {self.size}: use a power of two from 8 to {MAX_SIZE} "
                             "(64, 128)")
        if self.latent < 1 or self.width < 1:
            raise UsageError("the latent length and the width must be positive")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> GanConfig:
        """The configuration a file declares; ValueError outside what fits in memory."""
        values = parse_json(text, "the generator configuration")
        if not isinstance(values, dict):
            raise ValueError("the generator configuration is not a JSON object")
        for key, high in (("size", MAX_SIZE), ("latent", 4096), ("width", 1024)):
            value = values.get(key)
            if type(value) is not int or not 1 <= value <= high:
                raise ValueError(f"{key} {value!r} is not a whole number in 1..{high}")
        config = cls(values["size"], values["latent"], values["width"])
        try:
            config.check()
        except UsageError as error:
            raise ValueError(str(error)) from None
        return config


class GeneratorNet(nn.Module):
    def __init__(self, config: GanConfig):
        super().__init__()
        self.config = config
        channels = [config.width * 2 ** (config.doublings - i) for i in range(config.doublings + 1)]
        self.project = nn.Linear(config.latent, 4 * 4 * channels[0])
        self.project_norm = nn.BatchNorm(channels[0])
        self.convs = [nn.Conv2d(a, b, 3, padding=1) for a, b in zip(channels, channels[1:])]
        self.norms = [nn.BatchNorm(b) for b in channels[1:]]
        self.out = nn.Conv2d(channels[-1], 3, 3, padding=1)

    def __call__(self, z: mx.array) -> mx.array:
        """(N, latent) -> (N, size, size, 3) in [-1, 1]."""
        x = self.project(z).reshape(z.shape[0], 4, 4, -1)
        x = nn.relu(self.project_norm(x))
        for conv, norm in zip(self.convs, self.norms):
            n, h, w, c = x.shape
            x = mx.broadcast_to(x[:, :, None, :, None], (n, h, 2, w, 2, c))
            x = nn.relu(norm(conv(x.reshape(n, 2 * h, 2 * w, c))))
        return mx.tanh(self.out(x))


class Discriminator(nn.Module):
    def __init__(self, config: GanConfig):
        super().__init__()
        channels = [3] + [config.width * 2 ** i for i in range(config.doublings)]
        self.convs = [nn.Conv2d(a, b, 4, stride=2, padding=1)
                      for a, b in zip(channels, channels[1:])]
        self.norms = [nn.BatchNorm(b) for b in channels[2:]]
        self.out = nn.Linear(4 * 4 * channels[-1], 1)

    def __call__(self, x: mx.array) -> mx.array:
        """(N, size, size, 3) in [-1, 1] -> (N,) logits."""
        x = nn.leaky_relu(self.convs[0](x), 0.2)
        for conv, norm in zip(self.convs[1:], self.norms):
            x = nn.leaky_relu(norm(conv(x)), 0.2)
        return self.out(x.reshape(x.shape[0], -1))[:, 0]


def latents(seed: int, count: int, latent: int, first: int = 0) -> mx.array:
    """Image i of a seed always gets the same latent, whatever the count."""
    return mx.stack([mx.random.normal((latent,), key=image_key(seed, first + i))
                     for i in range(count)]) if count else mx.zeros((0, latent))


def slerp(a: mx.array, b: mx.array, t: mx.array) -> mx.array:
    """Spherical interpolation between latents a and b (latent,) at fractions t (N,)."""
    cos = mx.sum(a * b) / (mx.linalg.norm(a) * mx.linalg.norm(b))
    omega = mx.arccos(mx.clip(cos, -0.9999, 0.9999))
    t = t[:, None]
    return (mx.sin((1 - t) * omega) * a + mx.sin(t * omega) * b) / mx.sin(omega)


# -------------------------------------------------------------------------------- data


class ImageSet:
    """Every image of a folder as a square uint8 array of one size; transparency over white."""

    def __init__(self, folder: Path, size: int):
        if not Path(folder).is_dir():
            raise UsageError(f"{folder}: not a folder of training images")
        paths = find_images(folder)
        if len(paths) > MAX_IMAGES:
            raise UsageError(f"{folder} holds {len(paths)} images; at most {MAX_IMAGES} fit")
        arrays, skipped = [], 0
        for path in paths:
            try:
                with Image.open(path) as image:
                    image = image.convert("RGBA")
                    side = min(image.size)
                    left, top = (image.width - side) // 2, (image.height - side) // 2
                    image = image.crop((left, top, left + side, top + side))
                    image = image.resize((size, size), Image.Resampling.LANCZOS)
                    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
                    arrays.append(np.asarray(Image.alpha_composite(white, image).convert("RGB")))
            except (OSError, ValueError, Image.DecompressionBombError):
                skipped += 1
        if len(arrays) < 2:
            raise ImageError(f"{folder}: found {len(arrays)} readable image(s) ({skipped} "
                             "unreadable); a generator needs a folder of at least 2 images")
        self.images = np.stack(arrays)
        self.skipped = skipped

    def __len__(self) -> int:
        return len(self.images)

    def epoch(self, rng: np.random.Generator, batch: int):
        """Full batches in [-1, 1], shuffled, half of the images flipped left-right."""
        order = rng.permutation(len(self.images))
        for start in range(0, len(order) - batch + 1, batch):
            chosen = self.images[order[start:start + batch]].astype(np.float32) / 127.5 - 1
            flip = rng.random(batch) < 0.5
            chosen[flip] = chosen[flip, :, ::-1]
            yield chosen


# ---------------------------------------------------------------------------- training


@dataclass
class GanSettings:
    size: int = 64
    latent: int = 128
    width: int = 64
    epochs: int = 25
    batch: int = 128
    learning_rate: float = 2e-4
    beta1: float = 0.5
    real_label: float = 0.9  # one-sided label smoothing
    seed: int = 0
    sample_every: int = 1  # epochs

    @property
    def config(self) -> GanConfig:
        return GanConfig(self.size, self.latent, self.width)

    def check(self) -> None:
        self.config.check()
        if self.epochs < 1 or self.batch < 2:
            raise UsageError("--epochs must be at least 1 and --batch at least 2")
        if self.batch * self.size ** 2 > MAX_BATCH_PIXELS:
            raise UsageError(f"--batch {self.batch} of {self.size} px images is over "
                             f"{MAX_BATCH_PIXELS // 2**20} megapixels a step; lower them")
        if not 0 <= self.learning_rate <= 1:
            raise UsageError(f"--learning-rate {self.learning_rate} must be a number in 0..1")
        if not 0 <= self.seed < 2**32:
            raise UsageError(f"--seed {self.seed} must be in 0..{2**32 - 1}")


@dataclass
class GanStep:
    epoch: int
    step: int
    steps: int
    d_loss: float
    g_loss: float
    images_per_second: float


@dataclass
class GanResult:
    path: Path
    epochs: int
    steps: int
    interrupted: bool = False
    history: list[tuple[float, float]] = field(default_factory=list)


def _bce(logits: mx.array, label: float) -> mx.array:
    return mx.mean(nn.losses.binary_cross_entropy(logits, mx.full(logits.shape, label)))


def make_gan_step(generator: GeneratorNet, discriminator: Discriminator,
                  g_opt: optim.Optimizer, d_opt: optim.Optimizer, settings: GanSettings):
    """A compiled step: (real batch, latents) -> (d_loss, g_loss); both networks updated in
    place. The latents come from outside (`step_latents`), so no hidden random state rides
    through the compiled function and a resumed run draws what an uninterrupted one would."""

    def d_loss_fn(model, real, fake):
        return _bce(model(real), settings.real_label) + _bce(model(fake), 0.0)

    def g_loss_fn(model, z):
        return _bce(discriminator(model(z)), 1.0)

    d_grad = nn.value_and_grad(discriminator, d_loss_fn)
    g_grad = nn.value_and_grad(generator, g_loss_fn)
    state = [generator.state, discriminator.state, g_opt.state, d_opt.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(real, z):
        fake = mx.stop_gradient(generator(z))
        d_loss, grads = d_grad(discriminator, real, fake)
        d_opt.update(discriminator, grads)
        g_loss, grads = g_grad(generator, z)
        g_opt.update(generator, grads)
        return d_loss, g_loss

    return step, state


def step_latents(seed: int, epoch: int, index: int, batch: int, latent: int) -> mx.array:
    """The latents of one training step, a function of (seed, epoch, batch index) alone."""
    key = int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])
    return mx.random.normal((batch, latent), key=mx.random.key(key))


def generator_dir() -> Path:
    """Where `engine train-generator` saves generators and where the registry finds them."""
    return engine_home() / "generators"


def _run_dir(name: str) -> Path:
    return engine_home() / "runs" / f"generator-{name}"


def _arrays(prefix: str, tree) -> dict[str, mx.array]:
    return {f"{prefix}.{k}": v for k, v in tree_flatten(tree) if isinstance(v, mx.array)}


def _pick(arrays: dict, prefix: str) -> list[tuple[str, mx.array]]:
    return [(k[len(prefix) + 1:], v) for k, v in arrays.items() if k.startswith(prefix + ".")]


def save_generator(path: Path, generator: GeneratorNet, training: dict, epochs: int,
                   overrides: bool = False) -> None:
    metadata = {"format": FORMAT, "config": generator.config.to_json(),
                "training": json.dumps(training), "epochs": str(epochs),
                "engine_version": __version__, **({OVERRIDES: "true"} if overrides else {})}
    # batch-norm running statistics are part of the state a sample needs
    arrays = {k: v.astype(mx.float16) for k, v in tree_flatten(generator.parameters())}
    save_atomic(path, arrays, metadata)


def load_generator(path) -> tuple[GeneratorNet, dict]:
    """A trained generator network (in eval mode) and its metadata; WeightsError if unusable."""
    header = read_header(path, FORMAT, "generator")
    try:
        config = GanConfig.from_json(header.metadata.get("config", "null"))
    except ValueError as error:
        raise WeightsError(f"{path}: unusable generator ({error}); replace the file with a "
                           "good copy") from None
    net = GeneratorNet(config)
    expect_shapes(header, {k: v.shape for k, v in tree_flatten(net.parameters())}, "generator")
    arrays = load_arrays(header, "generator")
    net.update(tree_unflatten([(k, v.astype(mx.float32)) for k, v in arrays.items()]))
    mx.eval(net.parameters())
    net.eval()
    return net, header.metadata


def as_generator(name: str, path, description: str = "", from_user: bool = False
                 ) -> Generator:
    """A registry Generator backed by a trained generator file (loaded on first use)."""
    loaded: list[GeneratorNet] = []
    config, overrides = None, False
    try:
        metadata = read_header(path, FORMAT, "generator").metadata
        overrides = metadata.get(OVERRIDES) == "true"
        config = GanConfig.from_json(metadata.get("config", "null"))
    except (WeightsError, ValueError):
        pass  # load_generator reports the problem when the generator is used

    def network() -> GeneratorNet:
        if not loaded:
            loaded.append(load_generator(path)[0])
        return loaded[0]

    def decode(z: mx.array, size: int) -> mx.array:
        images = (network()(z) + 1) / 2
        if size != images.shape[1]:
            from .image import resize
            images = mx.concatenate([resize(images[i:i + 1], size, size)
                                     for i in range(images.shape[0])])
        return images

    def make(count: int, seed: int, size: int) -> mx.array:
        return decode(latents(seed, count, network().config.latent), size)

    def interpolate(seed_a: int, seed_b: int, count: int, size: int) -> mx.array:
        latent = network().config.latent
        t = mx.linspace(0, 1, count)
        return decode(slerp(latents(seed_a, 1, latent)[0], latents(seed_b, 1, latent)[0], t), size)

    return Generator(name, make, description or "GAN trained with engine train-generator",
                     default_size=config.size if config else 64, interpolate=interpolate,
                     from_user=from_user, overrides=overrides)


def sample_grid(generator: GeneratorNet, z: mx.array) -> mx.array:
    """Samples of fixed latents as one grid image (1, H, W, 3) in [0, 1], in eval mode."""
    from .generators import grid

    generator.eval()
    images = (generator(z) + 1) / 2
    generator.train()
    return grid(images)


def train_generator(folder: Path, name: str, settings: GanSettings, resume: bool = False,
                    on_step: Callable[[GanStep], None] | None = None,
                    out_dir: Path | None = None, data: ImageSet | None = None,
                    overwrite: bool = False) -> GanResult:
    """Train a DCGAN on a folder of images; write <name>.safetensors into the generator folder.
    An existing generator or run of this name, or a plugin's generator of this name, is
    refused unless `resume` or `overwrite`; weights that are not finite are never written."""
    from .registry import generators

    settings.check()
    check_name(name, "generator")
    target = (out_dir or generator_dir()) / f"{name}.safetensors"
    run = _run_dir(name)
    checkpoint = run / "checkpoint.safetensors"
    overrides = check_new_name(name, "generator", target, checkpoint, resume, overwrite,
                               generators() if out_dir is None else None)
    for place in (run, target.parent):
        try:
            place.mkdir(parents=True, exist_ok=True)
            check_writable_folder(place, "run")
        except (OSError, OutputError) as error:
            reason = describe(error) if isinstance(error, OSError) else error
            raise OutputError(f"{place}: cannot write the run's files there ({reason}); set "
                              "ENGINE_HOME to a writable folder") from None
    data = data or ImageSet(folder, settings.size)
    if len(data) < settings.batch:
        settings.batch = len(data) - len(data) % 2
    steps_per_epoch = len(data) // settings.batch

    mx.random.seed(settings.seed)
    generator = GeneratorNet(settings.config)
    discriminator = Discriminator(settings.config)
    g_opt = optim.Adam(settings.learning_rate, betas=[settings.beta1, 0.999])
    d_opt = optim.Adam(settings.learning_rate, betas=[settings.beta1, 0.999])
    fixed = latents(settings.seed + 1, 64, settings.latent)
    rng = np.random.default_rng(settings.seed)
    epoch, history = 0, []
    skip = 0  # a run interrupted mid-epoch: the batches of that epoch it did
    if resume:
        if not checkpoint.is_file():
            raise UsageError(f"nothing to resume: no checkpoint for {name!r} at {checkpoint}")
        try:
            header = read_header(checkpoint, "engine-gan-checkpoint", "checkpoint")
            metadata = header.metadata
            if GanConfig.from_json(metadata.get("config", "null")) != settings.config:
                raise ValueError("it was trained with another --size, latent or width")
            nets = {**_arrays("generator", generator.parameters()),
                    **_arrays("discriminator", discriminator.parameters())}
            expect_shapes(header, {k: v.shape for k, v in nets.items()}, "generator",
                          ignore_prefix=("g_opt.", "d_opt."))
            arrays = load_arrays(header, "checkpoint")
            generator.update(tree_unflatten(_pick(arrays, "generator")))
            discriminator.update(tree_unflatten(_pick(arrays, "discriminator")))
            g_opt.state = tree_unflatten(_pick(arrays, "g_opt"))
            d_opt.state = tree_unflatten(_pick(arrays, "d_opt"))
            rng.bit_generator.state = json.loads(metadata["rng"])
            epoch = int(metadata["epoch"])
            history = [tuple(h) for h in json.loads(metadata["history"])]
            # the same batches from where it stopped, unless --batch changed (then the
            # interrupted epoch starts over; what its first batches taught stays)
            if int(metadata.get("in_epoch", 0)) and int(metadata["batch"]) == settings.batch:
                skip = int(metadata["in_epoch"])
        except (KeyError, ValueError, TypeError, RuntimeError, WeightsError) as error:
            raise WeightsError(f"{checkpoint}: cannot resume ({error}); "
                               "start again without --resume") from None
    for opt in (g_opt, d_opt):  # the optimizer state holds a rate: --learning-rate may change
        opt.learning_rate = settings.learning_rate
    mx.eval(generator.state, discriminator.state)
    generator.train()
    discriminator.train()
    step_fn, state = make_gan_step(generator, discriminator, g_opt, d_opt, settings)
    training = {**asdict(settings), "images": len(data), "folder": Path(folder).name,
                "name": name}

    def save_progress(epochs_done: int, in_epoch: int = 0, epoch_rng: dict | None = None
                      ) -> None:
        """`in_epoch` batches done of the epoch after `epochs_done`, which began with the data
        order's random state `epoch_rng` (None: between epochs, the state now)."""
        nonlocal saved
        if not all_finite(generator.parameters(), discriminator.parameters()):
            raise diverged(epochs_done, saved, checkpoint)
        saved = epochs_done
        arrays = {**_arrays("generator", generator.parameters()),
                  **_arrays("discriminator", discriminator.parameters()),
                  **_arrays("g_opt", g_opt.state), **_arrays("d_opt", d_opt.state)}
        save_atomic(checkpoint, arrays, {
            "format": "engine-gan-checkpoint", "config": settings.config.to_json(),
            "epoch": str(epochs_done), "in_epoch": str(in_epoch), "batch": str(settings.batch),
            "rng": json.dumps(epoch_rng or rng.bit_generator.state),
            "history": json.dumps(history)})
        generator.eval()
        save_generator(target, generator, training, epochs_done, overrides)
        generator.train()
        save_image(target.with_suffix(".png"), sample_grid(generator, fixed[:16]))

    interrupted = False
    saved = epoch if resume else None  # the last epoch whose weights are on disk
    started, done, in_epoch, epoch_rng = time.perf_counter(), 0, 0, None
    try:
        while epoch < settings.epochs:
            epoch_rng = copy.deepcopy(rng.bit_generator.state)
            for index, real in enumerate(data.epoch(rng, settings.batch)):
                if index < skip:  # done before the interruption (the shuffle replays them)
                    continue
                z = step_latents(settings.seed, epoch, index, len(real), settings.latent)
                d_loss, g_loss = step_fn(mx.array(real), z)
                in_epoch = index + 1
                mx.eval(d_loss, g_loss, state)
                done += 1
                history.append((float(d_loss), float(g_loss)))
                if on_step:
                    rate = done * settings.batch / (time.perf_counter() - started)
                    on_step(GanStep(epoch + 1, epoch * steps_per_epoch + index + 1,
                                    settings.epochs * steps_per_epoch, *history[-1], rate))
            epoch, skip, in_epoch, epoch_rng = epoch + 1, 0, 0, None
            if not all(map(math.isfinite, history[-1])):
                raise diverged(epoch, saved, checkpoint)
            if epoch % settings.sample_every == 0 or epoch == settings.epochs:
                save_image(run / f"samples-epoch-{epoch:04d}.png", sample_grid(generator, fixed))
                save_progress(epoch)
    except KeyboardInterrupt:
        interrupted = True
        save_progress(epoch, in_epoch, epoch_rng)
    return GanResult(target, epoch, len(history), interrupted, history)
