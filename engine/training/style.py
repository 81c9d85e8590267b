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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from ..backend import on_cpu
from ..errors import ImageError, UsageError, WeightsError
from ..io.images import load_image, save_image
from ..io.style_files import (
    HostArrays,
    check_name,
    host_arrays,
    load_style,
    style_arrays,
    style_dir,
    style_metadata,
    write_atomic,
)
from ..io.weightfile import expect_shapes, int_field, json_field, load_arrays, read_header
from ..losses import content_loss, style_loss, total_variation
from ..nets.ops import crop, reflect_margin, run_framed
from ..nets.transformer import NETWORK_NAMES, TransformerNet
from ..nets.vgg import VGG
from ..optimize import style_target
from . import distributed, loop
from .data import ShardedContent
from .loop import TrainingLoop
from .runs import (
    all_finite,
    check_new_name,
    diverged,
    plot_losses,
    run_dir,
    run_folders,
)
from .settings import OBJECTIVE, STAGE_KEYS, TrainSettings


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


# What a run's loss and network are made of: a resumed run must keep them (steps, batch and the
# learning rate may change), or its style file would record settings it was only half trained on.
# (the network first: another --net changes its width too, and --net is what to name)


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
        if (key not in may_differ and key in now and saved.get(key) is not None
                and now[key] != saved[key]):
            flag = "--net" if key in ("arch", "res_blocks") else "--" + key.replace("_", "-")
            raise UsageError(f"{what} was trained with {flag} {shown(key, saved[key])}, not "
                             f"{shown(key, now[key])}; give the same setting or train a new "
                             "--name from scratch")


def _listed(values: Sequence) -> str:
    return ",".join(map(str, values)) or "(none)"


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def train_style(*args, compile_step: bool = True, **options) -> TrainResult:
    """Train a style network (`_train_style`'s arguments); `compile_step=False` runs every
    compiled function op by op (`--no-compile`: on a fresh GPU it starts at once, at a slower
    step), and turns compilation back on after."""
    if compile_step:
        return _train_style(*args, **options)
    mx.disable_compile()
    try:
        return _train_style(*args, **options)
    finally:
        mx.enable_compile()


def _train_style(vgg: VGG, style_path: Path, name: str, content: Sequence[Path],
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
    started = loop._clock()  # a timed run's budget counts from here
    overrides = _check_run(name, settings, resume, overwrite, out_dir)
    style_sha, grams = _style_targets(vgg, style_path, settings)
    if settings.seconds > 0 and distributed.size() > 1:
        raise UsageError("--minutes plans the run from one process's step rate; give --steps "
                         "under mlx.launch")
    data, per_shard = _content(content, settings, data_shards)
    preview_image = load_image(preview, 512).rgb if preview else mx.array(
        data.first_image[None].astype(np.float32) / 255.0)
    if settings.warm_start:  # the any-painting network's layout
        from ..style_source import painting_network

        shape = painting_network(settings.warm_start)[0].model.config.net
        settings = replace(settings, arch=shape.arch, width=shape.width,
                           res_blocks=shape.res_blocks, dilations=())
    mx.random.seed(settings.seed)  # before the network: its initial weights come from the seed
    net = TransformerNet(settings.config)
    if resume and start_from is not None:
        raise UsageError("use either --resume (this run's checkpoint) or --from (a style file)")
    if start_from is not None:
        settings = _go_on_from(net, Path(start_from), settings, style_path, style_sha)
    if resume:
        settings = _check_resume(name, settings, style_path, style_sha)
    elif settings.warm_start:
        if start_from is not None:
            raise UsageError("use either --warm-start (the any-painting network) or --from")
        _warm_start(net, settings, style_path)
    run = _StyleRun(vgg, net, grams, settings, name, style_path, style_sha, out_dir, overrides,
                    preview_image, resume)
    return run.train(data, per_shard, started, on_step, on_ready)


def _warm_start(net: TransformerNet, settings: TrainSettings, style_path: Path) -> None:
    """The any-painting network's network for this painting, as the run's first weights."""
    from ..style_source import load_painting, painting_network

    network, _ = painting_network(settings.warm_start)
    net.update(network.style_net(network.code(load_painting(style_path))).parameters())


def _check_run(name: str, settings: TrainSettings, resume: bool, overwrite: bool,
               out_dir: Path | None) -> bool:
    """The settings, the machine and the name allow the run; whether it overrides a plugin's
    style of its name."""
    settings.check()
    if settings.precision != "float32" and on_cpu():
        raise UsageError(f"--precision {settings.precision} is for GPUs (MLX's CPU computes it "
                         "slower than float32); leave it out on the CPU")
    check_name(name, "style")
    if out_dir is None:
        from ..registry import styles

        return check_new_name(name, "style", style_dir() / f"{name}.safetensors",
                              _checkpoint_path(name), resume, overwrite, styles())
    return check_new_name(name, "style", out_dir / f"{name}.safetensors",
                          _checkpoint_path(name), resume, overwrite)


def _style_targets(vgg: VGG, style_path: Path, settings: TrainSettings
                   ) -> tuple[str, dict[str, mx.array]]:
    """The painting's sha256 and its Gram matrices on the style layers."""
    style = load_image(style_path)
    if min(style.size) < 64:
        raise ImageError(f"{style_path}: the style image is {style.size[0]}x{style.size[1]}; "
                         "use one at least 64 px on each side")
    grams = style_target(vgg, [style.rgb], np.ones(1), settings.style_layers,
                         settings.style_size, 1.0)
    return _sha256_file(style_path), grams


def _content(content: Sequence[Path], settings: TrainSettings, data_shards: int
             ) -> tuple[ShardedContent, int]:
    """This process's content photos and the crops each of its shards gives a step."""
    processes = distributed.size()
    if processes > 1:
        return (ShardedContent(content, settings.size, processes, [distributed.rank()]),
                settings.batch)
    if settings.batch % data_shards:
        raise UsageError(f"the batch of {settings.batch} does not split into {data_shards} "
                         "shards")
    return ShardedContent(content, settings.size, data_shards), settings.batch // data_shards


def _go_on_from(net: TransformerNet, start_from: Path, settings: TrainSettings,
                style_path: Path, style_sha: str) -> TrainSettings:
    """--from: the trained style's weights into `net`; the settings with its stage recorded."""
    start, info = load_style(start_from)
    _check_same_training(f"the style {str(start_from)!r}", info.style_sha256,
                         {**info.training, **asdict(info.config)}, style_path, style_sha,
                         settings, may_differ=("size", "dilations", "margin"))
    had = list(info.config.dilations)
    if list(settings.dilations[:len(had)]) != had:
        raise UsageError(f"{start_from} has dilated blocks {_listed(had)}: --dilations must "
                         f"begin with them (blocks may be added, not taken away)")
    settings = went_on(settings, start_from, info.steps, info.training)
    net.update(start.parameters())
    return settings


def went_on(settings: TrainSettings, start_from: Path, steps: int, training: dict,
            hint: str = "") -> TrainSettings:
    """--from (a style's, or a painting network's): `settings` with the trained run's stage
    recorded after its own earlier ones; refused where --steps does not go past its `steps`
    (they count from 0). `hint` ends the refusal."""
    if settings.steps <= steps:
        raise UsageError(f"{start_from} is already trained {steps} steps; --steps counts "
                         f"from 0, so give more than {steps}{hint}")
    stage = {key: training.get(key) for key in STAGE_KEYS}
    return replace(settings, earlier=(*training.get("earlier", ()), {**stage, "steps": steps}))


def going_on_optimizer(settings: TrainSettings, horizon: dict | None
                       ) -> tuple[optim.Adam, int]:
    """Adam for a run, and the global step it begins at (a --from run's: where the trained
    one ended).

    A run that goes on from a trained network (--from, or its resumption) has a fresh Adam
    state: its count starts at 0, so the schedule is shifted to the global step where the run
    began, and the moments get bias correction. Without it a fresh state moves every weight by
    up to ~6x the learning rate for hundreds of steps (MLX's default has none): on a trained
    style the held-out loss rose, then stalled, where with it it fell
    (benchmarks/adam_from_steps.py). A warm start is a trained network too."""
    began = settings.earlier[-1]["steps"] if settings.earlier else 0
    optimizer = optim.Adam(learning_rate=settings.schedule(began, horizon),
                           bias_correction=bool(settings.earlier or settings.warm_start))
    return optimizer, began


def _check_resume(name: str, settings: TrainSettings, style_path: Path, style_sha: str
                  ) -> TrainSettings:
    """--resume: the checkpoint is readable and of this painting and objective; the settings
    with the stages it went on from."""
    checkpoint = _checkpoint_path(name)
    if not checkpoint.is_file():
        raise UsageError(f"nothing to resume: no checkpoint for {name!r} at {checkpoint}")
    try:
        header = read_header(checkpoint, "engine-checkpoint", "checkpoint")
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
    _check_same_training(f"the checkpoint of {name!r}", header.metadata.get("style_sha256"),
                         saved_settings, style_path, style_sha, settings)
    if not settings.earlier:  # a --from run resumed: its history stays in the metadata
        settings = replace(settings, earlier=tuple(earlier))
    return settings


class _StyleRun(TrainingLoop):
    """One training run of a style network: its optimizer, files and progress, over the one
    training loop (`loop.TrainingLoop`)."""

    def __init__(self, vgg: VGG, net: TransformerNet, grams: dict[str, mx.array],
                 settings: TrainSettings, name: str, style_path: Path, style_sha: str,
                 out_dir: Path | None, overrides: bool, preview_image: mx.array, resume: bool):
        self.net, self.grams, self.settings, self.style_sha = net, grams, settings, style_sha
        self.overrides, self.preview_image = overrides, preview_image
        self.processes = distributed.size()
        timed = settings.seconds > 0
        # a timed run's planned total steps, as the compiled step reads it (first: --steps)
        self.horizon = {"steps": mx.array(float(settings.steps))} if timed else None
        self.optimizer, began = going_on_optimizer(settings, self.horizon)
        self.checkpoint, self.run = _checkpoint_path(name), run_dir(name)
        self.style_file = (out_dir or style_dir()) / f"{name}.safetensors"
        run_folders(self.run, out_dir or style_dir())
        step, self.losses = began, []  # --from's end; a checkpoint's step on resume
        if resume:
            step, self.losses = load_checkpoint(self.checkpoint, net, self.optimizer)
        mx.eval(net.parameters())
        self.train_step, self.state = make_train_step(vgg, net, self.optimizer, grams, settings,
                                                      *([self.horizon] if timed else []))
        self.training = {**asdict(settings), "style_image": Path(style_path).name,
                         "name": name, "processes": self.processes,
                         "global_batch": settings.batch * self.processes}
        self.start_settings(step, resume, distributed.is_main())

    def start_settings(self, step: int, resume: bool, main: bool = True) -> None:
        """The loop's state, from the run's settings."""
        settings = self.settings
        self.start_loop(step, settings.steps, settings.batch * self.processes,
                        settings.seconds, settings.lr_decay, settings.checkpoint_every,
                        settings.preview_every, main, resume)

    def train(self, data: ShardedContent, per_shard: int, started: float,
              on_step: Callable[[TrainStep], None] | None,
              on_ready: Callable[[int], None] | None) -> TrainResult:
        settings, self.on_step = self.settings, on_step
        if on_ready:
            on_ready(self.step)  # every check is done; the first step (and its compilation) next
        batches = data.batches(settings.seed, per_shard, self.step, settings.steps)
        interrupted, first_step = self.loop((mx.array(batch) for batch in batches), started)
        return TrainResult(self.style_file, self.step, self.losses, interrupted, first_step)

    def run_step(self, batch: mx.array) -> tuple[mx.array, ...]:
        loss, terms = self.train_step(batch)
        return (loss, *terms)

    def record(self, step: int, values: tuple[float, ...], rate: float, show: bool) -> None:
        self.losses.append(values[0])
        if show and self.on_step:
            self.on_step(TrainStep(step, self.planned, values[0], dict(zip(
                ("content", "style", "tv"), values[1:])), rate))

    def planned_changed(self) -> None:
        self.horizon["steps"] = mx.array(float(self.planned))

    def preview(self) -> mx.array:
        """The preview photo as `engine apply` will stylize it (the same margin)."""
        net = self.net
        stylized = run_framed(net, self.preview_image, net.config.least_side,
                              self.settings.margin)
        return mx.clip(stylized, 0.0, 1.0)

    def save_progress(self, steps_done: int, checkpointing: bool = True,
                      shown: Path | None = None) -> None:
        """Checkpoint, style file with its preview and loss plot, and/or the preview as `shown`
        (one preview for both): snapshots taken now, the files written by the writer's thread."""
        net, settings = self.net, self.settings
        if not all_finite(net.parameters()):
            raise diverged(steps_done, self.saved, self.checkpoint)
        if not self.main:  # one writer: rank 0
            return
        if checkpointing:
            self.saved = steps_done
        pixels = np.array(self.preview())
        if checkpointing:
            state = checkpoint_snapshot(net, self.optimizer)
            style = host_arrays(style_arrays(net, self.grams))
            training = {**self.training, "steps": self.planned} if self.timed else self.training
            metadata = style_metadata(net, training, steps_done, self.style_sha, self.overrides)
            history = list(self.losses)
        checkpoint, style_file, run = self.checkpoint, self.style_file, self.run

        def write() -> None:
            if checkpointing:
                save_checkpoint(checkpoint, state, steps_done, settings, self.style_sha, history)
                write_atomic(style_file, style, metadata)
                save_image(style_file.with_suffix(".png"), pixels)
                plot_losses(history, run / "loss.png")
            if shown is not None:
                save_image(shown, pixels)
        self.writer.submit(write)
