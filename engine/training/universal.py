"""Training the any-painting network (engine.nets.universal) on photos and paintings.

Each step pairs B photo crops with B painting crops. VGG describes each painting (the
predictor's statistics and the Gram matrices the style loss matches); the network stylizes each
photo with its own painting's code; the loss is train-style's (content, per-painting Gram
distance, total variation). The run is the style run's (`_StyleRun`) over the one training loop
(training/loop.py): pipelined steps, a time budget planned from the step rate, checkpoints,
previews and the loss plot written in the background, --resume from the last checkpoint.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_map

from ..backend import on_cpu
from ..errors import UsageError
from ..io.images import load_image, resize, save_image
from ..io.painting_files import encoder_arrays, load_painting_network, save_painting_network
from ..io.style_files import check_name
from ..losses import gram
from ..nets.config import STATS_LAYERS
from ..nets.ops import run_framed
from ..nets.transformer import TransformerNet
from ..nets.universal import UniversalConfig, UniversalNet, conditional_forward
from ..nets.vgg import VGG
from .data import ContentSet, PaintingSet, PairedData
from .runs import (
    check_new_name,
    painting_network_dir,
    plot_losses,
    run_dir,
    run_folders,
)
from .settings import UniversalSettings
from .style import (
    TrainResult,
    TrainStep,
    _check_resume,
    _checkpoint_path,
    _StyleRun,
    checkpoint_snapshot,
    going_on_optimizer,
    load_checkpoint,
    save_checkpoint,
    training_loss,
    went_on,
)

PREVIEW_PAINTINGS = 4


def universal_config(settings: UniversalSettings, vgg: VGG) -> UniversalConfig:
    """The network's shape: the settings', reading statistics of this VGG's widths."""
    return UniversalConfig(settings.config, settings.hidden, settings.code,
                           tuple(block[0] for block in vgg.spec.blocks[:4]))


def make_universal_step(vgg: VGG, model: UniversalNet, optimizer: optim.Optimizer,
                        settings: UniversalSettings, horizon: dict | None = None):
    """A compiled step: (2B, S, S, 3) photos then paintings -> (loss, terms); updates in place."""
    taps = tuple(dict.fromkeys([*STATS_LAYERS, *settings.style_layers]))
    half = getattr(mx, settings.precision)
    shadow = TransformerNet(model.config.net)  # the convolutions, fed weights cast to `half`
    vgg_run = vgg
    if half != mx.float32:
        vgg_run = VGG(vgg.spec)
        vgg_run.update(tree_map(lambda p: p.astype(half), vgg.parameters()))
        vgg_run.freeze()
        mx.eval(vgg_run.parameters())

    def features(x: mx.array, layers) -> dict[str, mx.array]:
        return {k: v.astype(mx.float32) for k, v in vgg_run(x.astype(half), layers).items()}

    def loss_fn(model: UniversalNet, both: mx.array):
        photos, paintings = both[:settings.batch], both[settings.batch:]
        described = {k: mx.stop_gradient(v) for k, v in features(paintings, taps).items()}
        grams = {layer: gram(described[layer]) for layer in settings.style_layers}
        affines = model.affines(model.code(described))
        if half == mx.float32:
            y = conditional_forward(model.net, photos, affines)
        else:
            shadow.update(tree_map(lambda p: p.astype(half), model.net.trainable_parameters()))
            y = conditional_forward(shadow, photos.astype(half), affines).astype(mx.float32)
        return training_loss(features, grams, settings, photos, y)

    loss_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state] + ([horizon] if horizon is not None else [])

    @partial(mx.compile, inputs=state, outputs=state)
    def step(both):
        (loss, terms), grads = loss_and_grad(model, both)
        optimizer.update(model, grads)
        return loss, terms

    return step, state


def train_universal(vgg: VGG, name: str, content: Sequence[Path], paintings: Sequence[Path],
                    settings: UniversalSettings, resume: bool = False,
                    overwrite: bool = False, out: Path | None = None,
                    on_step: Callable[[TrainStep], None] | None = None,
                    on_ready: Callable[[int], None] | None = None,
                    start_from: Path | None = None) -> TrainResult:
    """Train an any-painting network; write <name>.safetensors (float16) and its preview.
    `start_from`, a painting network file of the same shape (the shipped one, say), is where
    training begins: its weights, its step count, a fresh Adam state."""
    started = time.perf_counter()
    settings.check()
    if settings.precision != "float32" and on_cpu():
        raise UsageError(f"--precision {settings.precision} is for GPUs; leave it out on the CPU")
    check_name(name, "painting network")
    target = Path(out) if out is not None else painting_network_dir() / f"{name}.safetensors"
    check_new_name(name, "painting network", target, _checkpoint_path(name), resume, overwrite)
    if len(paintings) < 2:
        raise UsageError(f"found {len(paintings)} painting(s); the network needs a folder of "
                         "many (hundreds)")
    sha = _sources_sha(paintings)
    if resume and start_from is not None:
        raise UsageError("use either --resume (this run's checkpoint) or --from")
    if resume:
        settings = _check_resume(name, settings, Path("these paintings"), sha)
    mx.random.seed(settings.seed)
    model = UniversalNet(universal_config(settings, vgg))
    if start_from is not None:
        settings = _go_on_from(model, Path(start_from), settings)
    photos = ContentSet(content, settings.size)
    art = PaintingSet(paintings, settings.size)
    shown = [load_image(paintings[i]).rgb for i in
             np.linspace(0, len(paintings) - 1, PREVIEW_PAINTINGS).astype(int)]
    run = _UniversalRun(vgg, model, settings, name, target, sha, photos, shown, resume)
    return run.train(PairedData(photos, art), settings.batch, started, on_step, on_ready)


def _go_on_from(model: UniversalNet, start_from: Path, settings: UniversalSettings
                ) -> UniversalSettings:
    """--from: a painting network's weights into `model`; the settings with its stage recorded
    (the schedule and the step count go on from its steps, as train-style's --from does)."""
    start, _, info = load_painting_network(start_from)
    if start.config != model.config:
        have, want = start.config, model.config
        raise UsageError(
            f"{start_from} is a network of width {have.net.width}, --hidden {have.hidden} and "
            f"--code {have.code} (with its own layout); train with the same shape, or leave "
            f"--from out (this run: width {want.net.width}, --hidden {want.hidden}, --code "
            f"{want.code})")
    settings = went_on(settings, start_from, info.steps, info.training,
                       hint=" (or use --minutes)")
    model.update(start.parameters())
    return settings


def _sources_sha(paintings: Sequence[Path]) -> str:
    """What a resumed run must train on: the paintings' names, in order."""
    return hashlib.sha256("\n".join(Path(p).name for p in paintings).encode()).hexdigest()


class _UniversalRun(_StyleRun):
    """The style run's loop over the any-painting network's step, files and preview."""

    def __init__(self, vgg: VGG, model: UniversalNet, settings: UniversalSettings, name: str,
                 target: Path, sha: str, photos: ContentSet, shown: list[mx.array],
                 resume: bool):
        self.vgg, self.net, self.settings, self.style_sha = vgg, model, settings, sha
        self.encoder = encoder_arrays(vgg)
        self.processes = 1
        self.horizon = {"steps": mx.array(float(settings.steps))} if settings.seconds else None
        self.optimizer, began = going_on_optimizer(settings, self.horizon)
        self.checkpoint, self.run = _checkpoint_path(name), run_dir(name)
        self.style_file = target
        run_folders(self.run, target.parent)
        step, self.losses = began, []
        if resume:
            step, self.losses = load_checkpoint(self.checkpoint, model, self.optimizer)
        mx.eval(model.parameters())
        self.train_step, self.state = make_universal_step(vgg, model, self.optimizer, settings,
                                                          self.horizon)
        self.training = {**asdict(settings), "name": name, "paintings_sha256": sha}
        self.start_settings(step, resume)
        photo = photos.images[0]
        side = 256 / max(photo.shape[:2])
        self.preview_photo = resize(mx.array(photo[None].astype(np.float32) / 255.0),
                                    max(4, round(photo.shape[1] * side)),
                                    max(4, round(photo.shape[0] * side)))
        features = vgg(mx.concatenate([_square(p, 256) for p in shown]), STATS_LAYERS)
        self.shown_features = features
        self.shown = shown

    def preview(self) -> mx.array:
        """One row: each preview painting (small), then the photo in its style."""
        codes = self.net.code(self.shown_features)
        tiles = []
        for index in range(len(self.shown)):
            net = self.net.materialize(codes[index:index + 1])
            out = mx.clip(run_framed(net, self.preview_photo), 0.0, 1.0)
            thumb = _square(self.shown[index], out.shape[1])
            tiles.append(mx.concatenate([thumb, out], axis=2))
        return mx.concatenate(tiles, axis=1)

    def save_progress(self, steps_done: int, checkpointing: bool = True,
                      shown: Path | None = None) -> None:
        from .runs import all_finite, diverged

        model, settings = self.net, self.settings
        if not all_finite(model.parameters()):
            raise diverged(steps_done, self.saved, self.checkpoint)
        if checkpointing:
            self.saved = steps_done
        pixels = np.array(self.preview())
        if checkpointing:
            state = checkpoint_snapshot(model, self.optimizer)
            training = {**self.training, "steps": self.planned} if self.timed else self.training
            history = list(self.losses)
            # the file's arrays are cast now (MLX stays on this thread)
            save_painting_network(self.style_file, model, self.encoder, training, steps_done)
        checkpoint, target, run = self.checkpoint, self.style_file, self.run

        def write() -> None:
            if checkpointing:
                save_checkpoint(checkpoint, state, steps_done, settings, self.style_sha, history)
                save_image(target.with_suffix(".png"), pixels)
                plot_losses(history, run / "loss.png")
            if shown is not None:
                save_image(shown, pixels)
        self.writer.submit(write)


def _square(image: mx.array, side: int) -> mx.array:
    return resize(image, side, side)





