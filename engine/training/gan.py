"""A DCGAN (Radford et al. 2016) trained in MLX; trained generators register like trained styles.

Generator: latent -> 4x4 -> (nearest upsample, 3x3 conv, batch norm, ReLU) per doubling -> tanh.
Discriminator: 4x4 stride-2 convolutions with batch norm (none on the first) and leaky ReLU.
Adam 2e-4, beta1 0.5, non-saturating loss, one compiled step updating both networks.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from ..errors import UsageError, WeightsError
from ..io.generator_files import generator_dir, save_generator
from ..io.images import save_image
from ..io.style_files import check_name, engine_home, save_atomic
from ..io.weightfile import expect_shapes, load_arrays, read_header
from ..nets.gan import Discriminator, GanConfig, GeneratorNet, latents
from . import loop
from .data import ImageSet
from .loop import TrainingLoop
from .runs import all_finite, check_new_name, diverged, plot_losses, run_folders
from .settings import check_budget

MAX_BATCH_PIXELS = 16 * 2**20  # pixels of one step's batch (128 images of 64 px: 0.5 MP)


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
    # a time budget (0: none): the run stops within this many seconds of its start, after the
    # step that reaches it, with its files written; `epochs` is then a ceiling
    seconds: float = 0.0

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
        check_budget(self.seconds)


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


def _run_dir(name: str) -> Path:
    return engine_home() / "runs" / f"generator-{name}"


def _arrays(prefix: str, tree) -> dict[str, mx.array]:
    return {f"{prefix}.{k}": v for k, v in tree_flatten(tree) if isinstance(v, mx.array)}


def _pick(arrays: dict, prefix: str) -> list[tuple[str, mx.array]]:
    return [(k[len(prefix) + 1:], v) for k, v in arrays.items() if k.startswith(prefix + ".")]


def sample_grid(generator: GeneratorNet, z: mx.array) -> mx.array:
    """Samples of fixed latents as one grid image (1, H, W, 3) in [0, 1], in eval mode."""
    from ..generators import grid

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
    from ..registry import generators

    started = loop._clock()  # a timed run's budget counts from here
    settings.check()
    check_name(name, "generator")
    target = (out_dir or generator_dir()) / f"{name}.safetensors"
    checkpoint = _run_dir(name) / "checkpoint.safetensors"
    overrides = check_new_name(name, "generator", target, checkpoint, resume, overwrite,
                               generators() if out_dir is None else None)
    run_folders(_run_dir(name), target.parent)
    data = data or ImageSet(folder, settings.size)
    if len(data) < settings.batch:
        settings.batch = len(data) - len(data) % 2
    run = _GanRun(settings, name, target, overrides, {
        **asdict(settings), "images": len(data), "folder": Path(folder).name, "name": name})
    if resume:
        run.resume()
    return run.train(data, on_step, started)


class _GanRun(TrainingLoop):
    """One training run of a generator: both networks, their optimizers, the data order's
    random state, the files, and the loop over epochs."""

    def __init__(self, settings: GanSettings, name: str, target: Path, overrides: bool,
                 training: dict):
        self.settings, self.name, self.target = settings, name, target
        self.overrides, self.training = overrides, training
        self.run = _run_dir(name)
        self.checkpoint = self.run / "checkpoint.safetensors"
        mx.random.seed(settings.seed)
        self.generator = GeneratorNet(settings.config)
        self.discriminator = Discriminator(settings.config)
        self.g_opt = optim.Adam(settings.learning_rate, betas=[settings.beta1, 0.999])
        self.d_opt = optim.Adam(settings.learning_rate, betas=[settings.beta1, 0.999])
        self.fixed = latents(settings.seed + 1, 64, settings.latent)
        self.rng = np.random.default_rng(settings.seed)
        self.epoch, self.history = 0, []
        self.skip = 0  # a run interrupted mid-epoch: the batches of that epoch it did
        self.in_epoch, self.epoch_rng = 0, None  # where the run stands in its epoch
        self.resumed = False

    def resume(self) -> None:
        """The networks, optimizers, data order and history from the run's checkpoint."""
        checkpoint, settings = self.checkpoint, self.settings
        if not checkpoint.is_file():
            raise UsageError(f"nothing to resume: no checkpoint for {self.name!r} at "
                             f"{checkpoint}")
        try:
            header = read_header(checkpoint, "engine-gan-checkpoint", "checkpoint")
            metadata = header.metadata
            if GanConfig.from_json(metadata.get("config", "null")) != settings.config:
                raise ValueError("it was trained with another --size, latent or width")
            nets = {**_arrays("generator", self.generator.parameters()),
                    **_arrays("discriminator", self.discriminator.parameters())}
            expect_shapes(header, {k: v.shape for k, v in nets.items()}, "generator",
                          ignore_prefix=("g_opt.", "d_opt."))
            arrays = load_arrays(header, "checkpoint")
            self.generator.update(tree_unflatten(_pick(arrays, "generator")))
            self.discriminator.update(tree_unflatten(_pick(arrays, "discriminator")))
            self.g_opt.state = tree_unflatten(_pick(arrays, "g_opt"))
            self.d_opt.state = tree_unflatten(_pick(arrays, "d_opt"))
            self.rng.bit_generator.state = json.loads(metadata["rng"])
            self.epoch = int(metadata["epoch"])
            self.history = [tuple(h) for h in json.loads(metadata["history"])]
            # the same batches from where it stopped, unless --batch changed (then the
            # interrupted epoch starts over; what its first batches taught stays)
            if int(metadata.get("in_epoch", 0)) and int(metadata["batch"]) == settings.batch:
                self.skip = int(metadata["in_epoch"])
            self.in_epoch = self.skip
        except (KeyError, ValueError, TypeError, RuntimeError, WeightsError) as error:
            raise WeightsError(f"{checkpoint}: cannot resume ({error}); "
                               "start again without --resume") from None
        self.resumed = True

    def train(self, data: ImageSet, on_step: Callable[[GanStep], None] | None,
              started: float) -> GanResult:
        settings = self.settings
        for opt in (self.g_opt, self.d_opt):  # the state holds a rate: --learning-rate may change
            opt.learning_rate = settings.learning_rate
        mx.eval(self.generator.state, self.discriminator.state)
        self.generator.train()
        self.discriminator.train()
        self.step_fn, self.state = make_gan_step(self.generator, self.discriminator, self.g_opt,
                                                 self.d_opt, settings)
        self.per_epoch, self.on_step = len(data) // settings.batch, on_step
        done = self.epoch * self.per_epoch + self.skip
        self.start_loop(done, settings.epochs * self.per_epoch, settings.batch,
                        seconds=settings.seconds, resume=self.resumed)
        interrupted, _ = self.loop(self._batches(data), started)
        return GanResult(self.target, self.epoch, len(self.history), interrupted, self.history)

    def _batches(self, data: ImageSet):
        """(epoch, index, real) for each step left, the data order replayed from the seed."""
        while self.epoch < self.settings.epochs:
            epoch = self.epoch
            self.epoch_rng = copy.deepcopy(self.rng.bit_generator.state)
            for index, real in enumerate(data.epoch(self.rng, self.settings.batch)):
                if index >= self.skip:  # (the first `skip` ran before an interruption)
                    yield epoch, index, real
            self.skip = 0

    def run_step(self, batch: tuple[int, int, np.ndarray]) -> tuple[mx.array, ...]:
        epoch, index, real = batch
        z = step_latents(self.settings.seed, epoch, index, len(real), self.settings.latent)
        losses = self.step_fn(mx.array(real), z)
        self.in_epoch = index + 1  # the step is in the networks' state once it returns
        if self.in_epoch == self.per_epoch:
            self.epoch, self.in_epoch, self.epoch_rng = epoch + 1, 0, None
        return losses

    def record(self, step: int, values: tuple[float, ...], rate: float, show: bool) -> None:
        self.history.append(values)
        if show and self.on_step:
            self.on_step(GanStep((step - 1) // self.per_epoch + 1, step,
                                 self.settings.epochs * self.per_epoch, *values, rate))

    def due(self, step: int) -> tuple[bool, Path | None]:
        """A checkpoint, the generator file and samples after an epoch (`sample_every`)."""
        epochs_done, rest = divmod(step, self.per_epoch)
        if rest or not (epochs_done % self.settings.sample_every == 0
                        or epochs_done == self.settings.epochs):
            return False, None
        return True, self.run / f"samples-epoch-{epochs_done:04d}.png"

    def finish(self, interrupted: bool) -> None:
        """A run cut short (Ctrl-C, its time budget) mid-epoch: saved where it stands."""
        if self.saved != self.step:
            self.save_progress(self.step)

    def save_progress(self, step: int, checkpointing: bool = True,
                      shown: Path | None = None) -> None:
        """The checkpoint (the networks, the optimizers and where the data order stands: the
        epoch, the batches done of it and its random state at its start), the generator file and
        its samples; `shown`, the epoch's samples."""
        generator, discriminator, settings = self.generator, self.discriminator, self.settings
        if not all_finite(generator.parameters(), discriminator.parameters()):
            raise diverged(step, self.saved, self.checkpoint)
        self.saved = step
        arrays = {**_arrays("generator", generator.parameters()),
                  **_arrays("discriminator", discriminator.parameters()),
                  **_arrays("g_opt", self.g_opt.state), **_arrays("d_opt", self.d_opt.state)}
        save_atomic(self.checkpoint, arrays, {
            "format": "engine-gan-checkpoint", "config": settings.config.to_json(),
            "epoch": str(self.epoch), "in_epoch": str(self.in_epoch),
            "batch": str(settings.batch),
            "rng": json.dumps(self.epoch_rng or self.rng.bit_generator.state),
            "history": json.dumps(self.history)})
        plot_losses({"D": [d for d, _ in self.history], "G": [g for _, g in self.history]},
                    self.run / "loss.png")
        generator.eval()
        save_generator(self.target, generator, self.training, self.epoch, self.overrides)
        generator.train()
        save_image(self.target.with_suffix(".png"), sample_grid(generator, self.fixed[:16]))
        if shown is not None:
            save_image(shown, sample_grid(generator, self.fixed))
