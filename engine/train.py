"""Training a feed-forward style (Johnson et al. 2016) against VGG perceptual losses.

One compiled training step over [model.state, optimizer.state]; random crops with scale jitter
and flips; checkpoints written atomically so a crash or a kill never corrupts the last good one.

Data-parallel under `mlx.launch` (engine.distributed): each process reads its own shard of the
content photos, computes the gradient of its own batch, and the gradients are averaged across the
processes inside the compiled step, so every process applies the same Adam update; rank 0 alone
writes checkpoints, previews and the style file. The crops of step t of shard s come from a
generator seeded with (seed, s, t), so N processes with batch B see exactly the images that one
process with batch N*B and `data_shards=N` sees, and a resumed run continues the same sequence.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten
from PIL import Image

from . import distributed
from .errors import ImageError, OutputError, UsageError, WeightsError
from .atomic import atomic_write, check_writable_folder, describe
from .image import load_image, save_image
from .losses import content_loss, style_loss, total_variation
from .optimize import style_target
from .styles import (HostArrays, check_name, engine_home, host_arrays, load_style,
                     style_arrays, style_dir, style_metadata, write_atomic)
from .stylize import crop, reflect_margin, run_framed
from .transformer import ARCHS, NETWORK_NAMES, NetConfig, TransformerNet
from .runs import all_finite, check_new_name, diverged
from .vgg import VGG, VGG16
from .weightfile import expect_shapes, int_field, json_field, load_arrays, read_header

@dataclass
class TrainSettings:
    steps: int = 2000
    batch: int = 4
    size: int = 256
    style_size: int = 512
    content_weight: float = 1.0
    style_weight: float = 1e5
    tv_weight: float = 10.0
    content_layer: str = "relu2_2"
    style_layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    learning_rate: float = 1e-3
    lr_decay: float = 0.0  # the last fraction of the steps: cosine decay to learning_rate / 100
    width: int = 32
    res_blocks: int = 5
    arch: str = "johnson"
    dilations: Sequence[int] = ()  # further residual blocks, dilated (NetConfig.dilations)
    # reflected pixels around each crop for the network, cropped before the loss: the loss never
    # sees the band a network draws at an image's edges; the style applies with the same margin
    margin: int = 0
    # what the network and VGG compute in: "float32", or "bfloat16" (mixed precision: float32
    # weights, Adam and losses; convolutions and activations in bfloat16; norm statistics float32)
    precision: str = "float32"
    seed: int = 0
    checkpoint_every: int = 250
    preview_every: int = 250
    # a time budget (0: none): the run stops within this many seconds of its start, its length
    # planned from the measured step rate so that the lr_decay ends on its last step; `steps`
    # is then an upper bound
    seconds: float = 0.0
    # the stages a --from run went on from, oldest first: {steps (where each ended), size, batch,
    # learning_rate, lr_decay}; --from may change the crop size (to fine-tune at a larger one)
    earlier: Sequence[dict] = ()

    def check(self) -> None:
        if self.content_layer not in ("relu2_2", "relu3_3"):
            raise UsageError("the content layer must be relu2_2 or relu3_3")
        if self.steps < 1 or self.batch < 1:
            raise UsageError("steps and batch must be at least 1")
        if self.size < 16 or self.size % 4:
            raise UsageError("--size must be a multiple of 4, at least 16")
        if not 1 <= self.width <= 256 or self.res_blocks < 0:
            raise UsageError(f"--width {self.width} must be in 1..256")
        if self.arch not in ARCHS:
            raise UsageError(f"unknown network {self.arch!r}; use one of {', '.join(ARCHS)}")
        if self.dilations and (self.arch != "johnson" or min(self.dilations) < 1):
            raise UsageError("--dilations takes positive integers, for the full network only")
        if self.margin < 0 or self.margin % 2:
            raise UsageError("--margin must be an even number of pixels, 0 or more")
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r}; use one of "
                             f"{', '.join(PRECISIONS)}")
        if not 0.0 <= self.seconds < 6e7:  # (0: no time budget)
            raise UsageError("--minutes must be more than 0 (and finite)")
        if not 0.0 <= self.lr_decay <= 1.0:
            raise UsageError("--lr-decay is a fraction of the steps, from 0 to 1")
        for flag, value in (("--content-weight", self.content_weight),
                            ("--style-weight", self.style_weight),
                            ("--tv-weight", self.tv_weight)):
            if not 0 <= value < 1e30:  # (NaN fails too)
                raise UsageError(f"{flag} {value} must be a finite number, 0 or more")
        if not 0 <= self.learning_rate <= 1:
            raise UsageError(f"--learning-rate {self.learning_rate} must be a number in 0..1")
        if self.style_size < 16 or self.style_size > MAX_SIDE:
            raise UsageError(f"--style-size {self.style_size} must be in 16..{MAX_SIDE}")
        if self.size > MAX_SIDE or self.batch * self.size ** 2 > MAX_BATCH_PIXELS:
            raise UsageError(f"--batch {self.batch} of --size {self.size} crops is over "
                             f"{MAX_BATCH_PIXELS // 2**20} megapixels a step (and --size at most "
                             f"{MAX_SIDE}); lower them")
        if not 0 <= self.seed < 2**32:
            raise UsageError(f"--seed {self.seed} must be in 0..{2**32 - 1}")
        if self.checkpoint_every < 1:
            raise UsageError("--checkpoint-every must be at least 1")
        unknown = [name for name in self.style_layers if name not in VGG16.taps]
        if unknown or not self.style_layers:
            raise UsageError(f"unknown style layer {', '.join(unknown) or '(none given)'}; use "
                             f"comma-separated VGG16 ReLU names: {', '.join(VGG16.taps)}")

    @property
    def config(self) -> NetConfig:
        return NetConfig(self.width, self.res_blocks, self.arch, tuple(self.dilations))

    def schedule(self, offset: int = 0, horizon: dict[str, mx.array] | None = None
                 ) -> float | Callable[[mx.array], mx.array]:
        """Adam's step size: constant, then a cosine down to 1/100 over the last `lr_decay` of the
        steps. A function of the global step alone, so a resumed run (which may extend --steps)
        picks it up where it stands. Adam counts its own steps: `offset` is the global step its
        count 0 stands for (a --from run's starting point).

        `horizon` (a timed run's): {"steps": the planned total, an array} in place of `steps`,
        read inside the compiled step, so the plan may change without compiling it again."""
        if horizon is not None and self.lr_decay > 0:
            low = self.learning_rate / 100

            def timed(step: mx.array) -> mx.array:
                total = horizon["steps"]
                decay = mx.maximum(mx.round(total * self.lr_decay), 1.0)
                t = mx.clip((step + offset - (total - decay)) / decay, 0.0, 1.0)
                return low + (self.learning_rate - low) * 0.5 * (1.0 + mx.cos(math.pi * t))
            return timed
        decay = round(self.steps * self.lr_decay)
        if decay == 0:
            return self.learning_rate

        def constant(step: mx.array) -> mx.array:
            return mx.full(step.shape, self.learning_rate)

        cosine = optim.cosine_decay(self.learning_rate, decay, self.learning_rate / 100)
        joined = optim.join_schedules([constant, cosine], [self.steps - decay])
        return joined if offset == 0 else lambda step: joined(step + offset)


PRECISIONS = ("float32", "bfloat16")
MAX_SIDE = 4096  # the largest crop or style image size a run may ask for
MAX_BATCH_PIXELS = 8 * 2**20  # pixels of one step's batch (the recipes use 0.5-1 MP)
_clock = time.perf_counter  # (tests of timed runs replace it)


@dataclass
class TrainStep:
    step: int
    steps: int
    loss: float
    terms: dict[str, float]
    images_per_second: float  # since the run's first step (0 on it: its time is compilation)


@dataclass
class TrainResult:
    style_path: Path
    steps: int
    losses: list[float] = field(default_factory=list)
    interrupted: bool = False
    first_step_seconds: float = 0.0  # the first step's wall time: mostly its compilation


# ------------------------------------------------------------------------- data


MIN_CONTENT_SIDE = 16  # smaller photos (icons, strips) are skipped, with a note


class ContentSet:
    """Content photos held in memory as uint8, served as random jittered square crops."""

    def __init__(self, paths: Sequence[Path], size: int):
        self.size = size
        self.images: list[np.ndarray] = []
        skipped = []
        for path in paths:
            try:
                picture = load_image(path, max_size=max(2 * size, 512))
            except ImageError as error:
                skipped.append(str(error))
                continue
            if min(picture.size) < MIN_CONTENT_SIDE:
                skipped.append(f"{path}: {picture.size[0]}x{picture.size[1]} is too small to "
                               f"crop (under {MIN_CONTENT_SIDE} px a side)")
                continue
            self.images.append((np.array(picture.rgb[0]) * 255).astype(np.uint8))
        if not self.images:
            raise ImageError(f"no readable content images ({'; '.join(skipped[:3])})")
        self.skipped = skipped

    def crop(self, rng: np.random.Generator) -> np.ndarray:
        image = self.images[rng.integers(len(self.images))]
        height, width = image.shape[:2]
        short = min(height, width)
        side = int(short * rng.uniform(0.5, 1.0)) if short > self.size // 2 else short
        side = min(short, max(MIN_CONTENT_SIDE, side))
        top = rng.integers(0, height - side + 1)
        left = rng.integers(0, width - side + 1)
        patch = Image.fromarray(image[top:top + side, left:left + side])
        patch = patch.resize((self.size, self.size), Image.Resampling.BILINEAR)
        pixels = np.asarray(patch, dtype=np.float32) / 255.0
        return pixels[:, ::-1] if rng.random() < 0.5 else pixels

    def sample(self, seed: int, shard: int, step: int, count: int) -> np.ndarray:
        """The `count` crops of `step` for data shard `shard`: the same on every run."""
        rng = np.random.default_rng([seed, shard, step])
        return np.stack([self.crop(rng) for _ in range(count)])


class ShardedContent:
    """The content sets of the data shards one process holds: shard s has photos[s::shards].

    Under mlx.launch a process holds only its own shard (shards = processes); a single process
    may hold all of them, which makes its batches those of the whole group of processes.
    """

    def __init__(self, paths: Sequence[Path], size: int, shards: int = 1,
                 held: Sequence[int] | None = None):
        self.held = list(range(shards)) if held is None else list(held)
        self.sets = {}
        for s in self.held:
            part = distributed.shard(paths, s, shards)
            if not part:
                raise UsageError(f"{len(paths)} content photo(s) cannot be split into {shards} "
                                 "shards; give at least one photo per process")
            self.sets[s] = ContentSet(part, size)

    @property
    def first_image(self) -> np.ndarray:
        return self.sets[self.held[0]].images[0]

    def batches(self, seed: int, per_shard: int, start: int, stop: int):
        """Yield the batches of steps start..stop-1, in order, prepared ahead on background
        threads: a batch of eight 256 px crops takes ~11 ms of one core on the H100's host, as
        long as a whole training step there, so one thread alone would hold the GPU back
        (PIL's resizing and NumPy's conversions release the GIL, so threads run in parallel)."""

        def make(step: int) -> np.ndarray:
            return np.concatenate([self.sets[s].sample(seed, s, step, per_shard)
                                   for s in self.held])

        workers = max(1, min(4, (os.cpu_count() or 1) - 1))
        pool = ThreadPoolExecutor(workers, thread_name_prefix="crops")
        ahead: deque = deque()
        try:
            for step in range(start, stop):
                ahead.append(pool.submit(make, step))
                if len(ahead) > workers + 1:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:  # an interrupted run: the batches not yet made are not made
            pool.shutdown(wait=False, cancel_futures=True)


# -------------------------------------------------------------------- training


def training_loss(vgg: Callable[..., dict[str, mx.array]], grams: dict[str, mx.array],
                  settings: TrainSettings, x: mx.array, y: mx.array
                  ) -> tuple[mx.array, tuple[mx.array, mx.array, mx.array]]:
    """The objective a style trains on, for photos x and the network's outputs y:
    (total, (content, style, tv)), each term already weighted."""
    layers = tuple(dict.fromkeys([settings.content_layer, *settings.style_layers]))
    features = vgg(y, layers)
    target = mx.stop_gradient(vgg(x, [settings.content_layer])[settings.content_layer])
    c = content_loss(features[settings.content_layer], target) * settings.content_weight
    s = style_loss(features, grams) * settings.style_weight
    t = total_variation(y) * settings.tv_weight
    return c + s + t, (c, s, t)


def framed_forward(net: TransformerNet, x: mx.array, margin: int) -> mx.array:
    """The network on `x` with `margin` reflected pixels on every side, cropped back to x."""
    height, width = x.shape[1:3]
    return crop(net(reflect_margin(x, margin, margin)), height, width, margin, margin)


def make_train_step(vgg: VGG, net: TransformerNet, optimizer: optim.Optimizer,
                    grams: dict[str, mx.array], settings: TrainSettings,
                    horizon: dict[str, mx.array] | None = None):
    """A compiled step: batch (B, S, S, 3) -> (loss, (content, style, tv)); updates in place.
    `horizon`, a timed run's planned total (TrainSettings.schedule), is read as an input."""

    def loss_fn(model, x):
        return training_loss(vgg, grams, settings, x, framed_forward(model, x, settings.margin))

    if settings.precision != "float32":
        loss_fn = _mixed_precision(vgg, net, grams, settings)
    loss_and_grad = nn.value_and_grad(net, loss_fn)
    state = [net.state, optimizer.state] + ([horizon] if horizon is not None else [])

    @partial(mx.compile, inputs=state, outputs=state)
    def train_step(x):
        (loss, terms), grads = loss_and_grad(net, x)
        if distributed.size() > 1:  # the mean over all processes' batches
            grads = nn.average_gradients(grads, group=distributed.group())
            loss, terms = distributed.mean(loss), tuple(map(distributed.mean, terms))
        optimizer.update(net, grads)
        return loss, terms

    return train_step, state


def _mixed_precision(vgg: VGG, net: TransformerNet, grams: dict[str, mx.array],
                     settings: TrainSettings):
    """The loss with the network and VGG computing in settings.precision: the float32
    weights are cast on the way in (their gradients come back float32, for Adam), the features
    on the way out (Gram matrices, losses and their sums in float32)."""
    half = getattr(mx, settings.precision)
    shadow = TransformerNet(net.config)  # the network's layers, fed the cast weights
    vgg_half = VGG(vgg.spec)
    vgg_half.update(tree_map(lambda p: p.astype(half), vgg.parameters()))
    vgg_half.freeze()
    mx.eval(vgg_half.parameters())

    def features(x: mx.array, taps) -> dict[str, mx.array]:  # VGG's, handed on in float32
        return {k: v.astype(mx.float32) for k, v in vgg_half(x.astype(half), taps).items()}

    def half_loss(model, x):
        shadow.update(tree_map(lambda p: p.astype(half), model.trainable_parameters()))
        y = framed_forward(shadow, x.astype(half), settings.margin).astype(mx.float32)
        return training_loss(features, grams, settings, x, y)

    return half_loss


def run_dir(name: str) -> Path:
    return engine_home() / "runs" / name


def _checkpoint_path(name: str) -> Path:
    return run_dir(name) / "checkpoint.safetensors"


def checkpoint_snapshot(net: TransformerNet, optimizer: optim.Optimizer
                        ) -> HostArrays:
    """The network's weights and Adam's state, copied to the host for `save_checkpoint`."""
    arrays = {f"model.{k}": v for k, v in tree_flatten(net.parameters())}
    arrays.update({f"optimizer.{k}": v for k, v in tree_flatten(optimizer.state)})
    return host_arrays(arrays)


def save_checkpoint(path: Path, snapshot: HostArrays, step: int, settings: TrainSettings,
                    style_sha: str, losses: list[float]) -> None:
    metadata = {"format": "engine-checkpoint", "step": str(step),
                "settings": json.dumps(asdict(settings)), "style_sha256": style_sha,
                "losses": json.dumps(losses)}
    write_atomic(path, snapshot, metadata)


class BackgroundWriter:
    """Writes a run's files on one background thread while the next steps train.

    A save stops the GPU only while its arrays are copied to the host; the files (checkpoint,
    style, PNGs, plot: ~130 ms on a CPU) are written meanwhile. One job at a time: a new one
    first waits for the last, and the last one's error (a full disk, say) is raised then, in
    the training thread. Jobs touch no MLX array (MLX is not called from two threads)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-writer")
        self._job = None

    def submit(self, job: Callable[[], None]) -> None:
        self.wait()
        self._job = self._pool.submit(job)

    def wait(self) -> None:
        job, self._job = self._job, None
        if job is not None:
            job.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def load_checkpoint(path: Path, net: TransformerNet, optimizer: optim.Optimizer
                    ) -> tuple[int, list[float]]:
    """Weights and optimizer state into `net` and `optimizer`; the step and loss history.

    The caller has checked the header's settings (style, objective) first.
    """
    try:
        header = read_header(path, "engine-checkpoint", "checkpoint")
        expect_shapes(header, {f"model.{k}": v.shape for k, v in tree_flatten(net.parameters())},
                      "network", ignore_prefix="optimizer.")
        arrays = load_arrays(header, "checkpoint")
        model = [(k[len("model."):], v) for k, v in arrays.items() if k.startswith("model.")]
        net.load_weights(model, strict=True)
        state = [(k[len("optimizer."):], v) for k, v in arrays.items()
                 if k.startswith("optimizer.")]
        rate = optimizer.state.get("learning_rate")  # this run's --learning-rate, not the saved one
        optimizer.state = tree_unflatten(state)
        if rate is not None:
            optimizer.state["learning_rate"] = rate
        losses = json_field(header, "losses", list, [])
        if not all(isinstance(x, (int, float)) for x in losses):
            raise ValueError("its loss history holds values that are not numbers")
        return int_field(header, "step"), [float(x) for x in losses]
    except (ValueError, KeyError, TypeError, RuntimeError) as error:
        raise WeightsError(f"{path}: cannot resume from this checkpoint ({error}); "
                           "start again without --resume") from None


# What a run's loss and network are made of: a resumed run must keep them (steps, batch and the
# learning rate may change), or its style file would record settings it was only half trained on.
# (the network first: another --net changes its width too, and --net is what to name)
OBJECTIVE = ("arch", "size", "style_size", "content_weight", "style_weight", "tv_weight",
             "content_layer", "style_layers", "width", "res_blocks", "dilations", "margin")
# What TrainSettings.earlier records of each stage a --from run went on from (with its steps).
STAGE_KEYS = ("size", "batch", "learning_rate", "lr_decay")


def _check_same_training(what: str, saved_sha: str | None, saved: dict, style_path: Path,
                         style_sha: str, settings: TrainSettings, may_differ: tuple = ()) -> None:
    """What a run goes on from (a checkpoint, a style file) was trained on this painting with
    this objective (apart from the settings in `may_differ`)."""
    if saved_sha != style_sha:
        raise UsageError(f"{what} was trained on another style image than "
                         f"{Path(style_path).name}")
    now = json.loads(json.dumps(asdict(settings)))  # tuples -> lists, as saved

    def shown(key: str, value) -> str:
        if key == "arch" and isinstance(value, str):  # set by --net
            return NETWORK_NAMES.get(value, value)
        return _listed(value) if isinstance(value, list) else str(value)[:40]

    for key in OBJECTIVE:
        if key not in may_differ and saved.get(key) is not None and now[key] != saved[key]:
            flag = "--net" if key in ("arch", "res_blocks") else "--" + key.replace("_", "-")
            raise UsageError(f"{what} was trained with {flag} {shown(key, saved[key])}, not "
                             f"{shown(key, now[key])}; give the same setting or train a new "
                             "--name from scratch")


def _listed(values: Sequence) -> str:
    return ",".join(map(str, values)) or "(none)"


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def plot_losses(losses: list[float], path: Path) -> None:
    """A small loss-curve PNG (log scale), drawn with Pillow."""
    from PIL import ImageDraw

    width, height, margin = 640, 320, 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    values = np.log10(np.maximum(np.asarray(losses, dtype=np.float64), 1e-12))
    if len(values) >= 2:
        low, high = values.min(), values.max()
        span = max(high - low, 1e-9)
        xs = margin + np.arange(len(values)) * (width - 2 * margin) / (len(values) - 1)
        ys = height - margin - (values - low) / span * (height - 2 * margin)
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=(200, 40, 40), width=2)
        draw.text((4, 4), f"loss (log10) {high:.2f} .. {low:.2f}, {len(values)} steps",
                  fill="black")
    draw.rectangle([margin, margin, width - margin, height - margin], outline="gray")
    with atomic_write(path) as stream:
        image.save(stream, format="PNG")


def train_style(vgg: VGG, style_path: Path, name: str, content: Sequence[Path],
                settings: TrainSettings, resume: bool = False, preview: Path | None = None,
                on_step: Callable[[TrainStep], None] | None = None,
                out_dir: Path | None = None, data_shards: int = 1,
                start_from: Path | None = None,
                on_ready: Callable[[int], None] | None = None,
                overwrite: bool = False) -> TrainResult:
    """Train a style network; write <name>.safetensors (+ preview .png) into the style folder.

    `start_from`, a trained style file (a shipped one, say) of the same painting and objective,
    continues its training without its checkpoint: its weights, its step count (the data and the
    learning-rate schedule go on from there), a fresh Adam state.

    `settings.batch` is per process. Under mlx.launch the content is split into one shard per
    process; a single process can split its own batch into `data_shards` shards instead (the
    same images as that many processes would see, as a check of the data-parallel path).

    `on_ready(step)` is called once every input is checked, before the first step (which compiles
    the step's kernels), with the step the run starts from; `on_step` after each step.

    An existing style or run of this name, or a plugin's style of this name, is refused unless
    `resume` or `overwrite` (which makes the new style override a plugin's). A step whose loss
    or weights are not finite ends the run before anything is written from it.
    """
    started = _clock()  # a timed run's budget counts from here
    settings.check()
    check_name(name, "style")
    if out_dir is None:
        from .registry import styles

        overrides = check_new_name(name, "style", style_dir() / f"{name}.safetensors",
                                   _checkpoint_path(name), resume, overwrite, styles())
    else:
        overrides = check_new_name(name, "style", out_dir / f"{name}.safetensors",
                                   _checkpoint_path(name), resume, overwrite)
    style = load_image(style_path)
    if min(style.size) < 64:
        raise ImageError(f"{style_path}: the style image is {style.size[0]}x{style.size[1]}; "
                         "use one at least 64 px on each side")
    style_sha = _sha256_file(style_path)
    grams = style_target(vgg, [style.rgb], np.ones(1), settings.style_layers,
                         settings.style_size, 1.0)
    processes, main = distributed.size(), distributed.is_main()
    timed = settings.seconds > 0
    if timed and processes > 1:
        raise UsageError("--minutes plans the run from one process's step rate; give --steps "
                         "under mlx.launch")
    if processes > 1:
        data = ShardedContent(content, settings.size, processes, [distributed.rank()])
        per_shard = settings.batch
    else:
        if settings.batch % data_shards:
            raise UsageError(f"the batch of {settings.batch} does not split into {data_shards} "
                             "shards")
        data = ShardedContent(content, settings.size, data_shards)
        per_shard = settings.batch // data_shards
    preview_image = load_image(preview, 512).rgb if preview else mx.array(
        data.first_image[None].astype(np.float32) / 255.0)

    mx.random.seed(settings.seed)  # before the network: its initial weights come from the seed
    net = TransformerNet(settings.config)
    if resume and start_from is not None:
        raise UsageError("use either --resume (this run's checkpoint) or --from (a style file)")
    if start_from is not None:
        start, info = load_style(Path(start_from))
        _check_same_training(f"the style {str(start_from)!r}", info.style_sha256,
                             {**info.training, **asdict(info.config)}, style_path, style_sha,
                             settings, may_differ=("size", "dilations", "margin"))
        had = list(info.config.dilations)
        if list(settings.dilations[:len(had)]) != had:
            raise UsageError(f"{start_from} has dilated blocks {_listed(had)}: --dilations must "
                             f"begin with them (blocks may be added, not taken away)")
        if settings.steps <= info.steps:
            raise UsageError(f"{start_from} is already trained {info.steps} steps; --steps counts "
                             f"from 0, so give more than {info.steps}")
        net.update(start.parameters())
        stage = {key: info.training.get(key) for key in STAGE_KEYS}
        settings = replace(settings, earlier=(*info.training.get("earlier", ()),
                                              {**stage, "steps": info.steps}))
    checkpoint = _checkpoint_path(name)
    if resume:
        if not checkpoint.is_file():
            raise UsageError(f"nothing to resume: no checkpoint for {name!r} at {checkpoint}")
        try:
            header = read_header(checkpoint, "engine-checkpoint", "checkpoint")
            saved = header.metadata
            saved_settings = json_field(header, "settings", dict)
            earlier = saved_settings.get("earlier", [])
            if not isinstance(earlier, list) or not all(isinstance(e, dict) and type(
                    e.get("steps")) is int for e in earlier):
                raise ValueError("its settings' 'earlier' stages are malformed")
            int_field(header, "step")
            json_field(header, "losses", list, [])
        except ValueError as error:
            raise WeightsError(f"{checkpoint}: cannot resume from this checkpoint ({error}); "
                               "start again without --resume") from None
        except WeightsError as error:
            raise WeightsError(f"{error}; start again without --resume") from None
        _check_same_training(f"the checkpoint of {name!r}", saved.get("style_sha256"),
                             saved_settings, style_path, style_sha, settings)
        if not settings.earlier:  # a --from run resumed: its history stays in the metadata
            settings = replace(settings, earlier=tuple(saved_settings.get("earlier", ())))
    # A run that goes on from a trained style (--from, or its resumption) has a fresh Adam state:
    # its count starts at 0, so the schedule is shifted to the global step where the run began,
    # and the moments get bias correction. Without it a fresh state moves every weight by up to
    # ~6x the learning rate for hundreds of steps (MLX's default has none): on a trained style
    # the held-out loss rose, then stalled, where with it it fell (benchmarks/adam_from_steps.py).
    began = settings.earlier[-1]["steps"] if settings.earlier else 0
    # a timed run's planned total steps, as the compiled step reads it (first: --steps)
    horizon = {"steps": mx.array(float(settings.steps))} if timed else None
    optimizer = optim.Adam(learning_rate=settings.schedule(began, horizon),
                           bias_correction=bool(settings.earlier))
    run = run_dir(name)
    for folder in (run, out_dir or style_dir()):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            check_writable_folder(folder, "run")
        except (OSError, OutputError) as error:
            reason = describe(error) if isinstance(error, OSError) else error
            raise OutputError(f"{folder}: cannot write the run's files there ({reason}); set "
                              "ENGINE_HOME to a writable folder") from None
    step, losses = began, []  # 0, or where --from's style ended; a checkpoint's step on resume
    if resume:
        step, losses = load_checkpoint(checkpoint, net, optimizer)
    mx.eval(net.parameters())

    train_step, state = make_train_step(vgg, net, optimizer, grams, settings,
                                        *([horizon] if timed else []))

    target_dir = out_dir or style_dir()
    style_file = target_dir / f"{name}.safetensors"
    training = {**asdict(settings), "style_image": Path(style_path).name, "name": name,
                "processes": processes, "global_batch": settings.batch * processes}

    def preview() -> mx.array:
        """The preview photo as `engine apply` will stylize it (the same margin)."""
        stylized = run_framed(net, preview_image, net.config.least_side, settings.margin)
        return mx.clip(stylized, 0.0, 1.0)

    writer = BackgroundWriter()

    def save_progress(steps_done: int, checkpointing: bool = True,
                      shown: Path | None = None) -> None:
        """Checkpoint, style file with its preview and loss plot, and/or the preview as `shown`
        (one preview for both): snapshots taken now, the files written by `writer`."""
        nonlocal saved
        if not all_finite(net.parameters()):
            raise diverged(steps_done, saved, checkpoint)
        if not main:  # one writer: rank 0
            return
        if checkpointing:
            saved = steps_done
        pixels = np.array(preview())
        if checkpointing:
            state = checkpoint_snapshot(net, optimizer)
            style = host_arrays(style_arrays(net, grams))
            metadata = style_metadata(net, {**training, "steps": planned} if timed else training,
                                      steps_done, style_sha, overrides)
            history = list(losses)

        def write() -> None:
            if checkpointing:
                save_checkpoint(checkpoint, state, steps_done, settings, style_sha, history)
                write_atomic(style_file, style, metadata)
                save_image(style_file.with_suffix(".png"), pixels)
                plot_losses(history, run / "loss.png")
            if shown is not None:
                save_image(shown, pixels)
        writer.submit(write)

    interrupted = False
    saved = step if resume else None  # the last step whose weights are on disk
    # the rate counts from the end of the first step: that one compiles the step's kernels
    # (seconds on a CPU, minutes on a fresh GPU) and would hold the rate down for the whole run
    timer: tuple[int, float] | None = None

    queued: list[tuple[int, mx.array, tuple]] = []  # steps run, their losses not read yet
    reported = step  # the last step whose loss is in `losses`

    def report() -> None:
        """Read the oldest queued step's loss (waiting for that step) and show it."""
        nonlocal timer, reported
        done_step, loss, terms = queued[0]
        value = float(loss)
        if not math.isfinite(value):
            raise diverged(done_step, saved, checkpoint)
        losses.append(value)
        reported = done_step
        queued.pop(0)
        now = _clock()
        timer = timer or (done_step, now)
        if on_step:
            done = (done_step - timer[0]) * settings.batch * processes
            rate = done / (now - timer[1]) if done else 0.0
            on_step(TrainStep(done_step, planned, value,
                              dict(zip(("content", "style", "tv"), map(float, terms))), rate))

    # A timed run plans its length from the step rate so far (steps after the first, whose time
    # is compilation), again and again, until the learning-rate decay is near: then the decay's
    # length, a fraction of the total, stays as it is.
    planned = settings.steps  # the run's total steps, as planned now
    planning, planned_at = timed, 0.0
    deadline = started + settings.seconds
    reserve = min(2.0, 0.02 * settings.seconds)  # for the final save and the steps in flight

    def plan(now: float) -> None:
        nonlocal planned, planning, planned_at
        if timer is None or reported - timer[0] < 5 or now - planned_at < 0.5:
            return
        rate = (reported - timer[0]) / (now - timer[1])
        fits = reported + int(rate * (deadline - reserve - now))
        planned, planned_at = max(step + 1, min(settings.steps, fits)), now
        horizon["steps"] = mx.array(float(planned))
        planning = step < 0.9 * (planned - round(planned * settings.lr_decay))

    # Steps are pipelined: step t+1 is queued (mx.async_eval) before step t's loss is read, so
    # the GPU does not wait while the host reads a loss, updates the progress bar, converts the
    # next batch and launches the next step.
    if on_ready:
        on_ready(step)  # every check is done; the first step (and its compilation) comes next
    ready = _clock()
    try:  # the writer's thread is joined however the run ends
        try:
            for batch in data.batches(settings.seed, per_shard, step, settings.steps):
                loss, terms = train_step(mx.array(batch))
                # the update is in the network's state once the step returns: counted now, so an
                # interrupt while it computes saves it with its step (and --resume goes on after it)
                step += 1
                mx.async_eval(loss, terms, state)
                queued.append((step, loss, terms))
                saving = step % settings.checkpoint_every == 0 and step < planned
                showing = main and settings.preview_every and step % settings.preview_every == 0
                while len(queued) > 1 or (queued and (saving or showing)):
                    report()  # before a save, every loss up to this step: the history matches it
                if saving or showing:
                    save_progress(step, checkpointing=saving,
                                  shown=run / f"preview-{step:06d}.png" if showing else None)
                if timed:
                    now = _clock()
                    if planning:
                        plan(now)
                    if step >= planned or now >= deadline - reserve:
                        break
            while queued:
                report()
        except KeyboardInterrupt:
            interrupted = True
            # the steps already run are kept (save_progress below evaluates them), with their losses
            losses.extend(float(loss) for done_step, loss, _ in queued if done_step > reported)
        if not np.isfinite(losses[-1] if losses else 0.0):
            raise diverged(step, saved, checkpoint)
        planned = min(planned, step)  # a timed run's record: the steps it had time for
        save_progress(step)
        writer.wait()
    finally:
        writer.close()
    return TrainResult(style_file, step, losses, interrupted,
                       timer[1] - ready if timer else 0.0)
