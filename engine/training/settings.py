"""A style's training settings, their bounds, and the objective it trains on."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..nets.config import ARCHS, STATS_LAYERS, VGG16, NetConfig

if TYPE_CHECKING:
    import mlx.core as mx


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
    # the any-painting network the run starts from (its network for this painting), if any
    warm_start: str = ""

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
        check_budget(self.seconds)
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
        import mlx.core as mx  # (here: the command line reads these settings at start-up)
        import mlx.optimizers as optim

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


@dataclass
class UniversalSettings(TrainSettings):
    """The any-painting network's training: a style setting's fields (the objective, the
    schedule, the time budget), other defaults, and the predictor's sizes. Each step pairs a
    batch of photo crops with a batch of painting crops, one painting per photo."""

    steps: int = 40000
    batch: int = 8
    style_weight: float = 2e5
    style_layers: Sequence[str] = STATS_LAYERS
    lr_decay: float = 0.3
    width: int = 64
    arch: str = "shuffle"
    checkpoint_every: int = 1000
    preview_every: int = 1000
    hidden: int = 512
    code: int = 128

    def check(self) -> None:
        super().check()
        if self.arch != "shuffle" or self.dilations or self.margin:
            raise UsageError("the any-painting network is the fast network, without dilations "
                             "or margin")
        if not (1 <= self.hidden <= 4096 and 1 <= self.code <= 1024):
            raise UsageError("--hidden must be in 1..4096 and --code in 1..1024")


def machine_recipe(cpu: bool) -> dict:
    """What `engine train-style` takes for the options a user leaves out (`--recipe auto`), by
    machine. GPU: the five-minute recipe (benchmarks/README.md). CPU: start from the
    any-painting network's network for the painting and train it further on smaller crops
    (benchmarks/cpu_style_quality.py); a layout option (--net, --width, --dilations, --margin)
    or --from given by the user leaves the warm start out."""
    if cpu:
        return {"warm_start": True, "size": 192, "batch": 2, "style_size": 512,
                "style_layers": "relu1_1,relu2_1,relu3_1,relu4_1", "style_weight": 2e5,
                "lr_decay": 0.3, "minutes": 10.0}
    return {"precision": "bfloat16", "batch": 8, "style_weight": 3e5,
            "style_layers": "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1", "lr_decay": 0.3,
            "minutes": 5.0}


def recipe_settings(cpu: bool, minutes: float | None = None, steps: int | None = None
                    ) -> TrainSettings:
    """The machine's recipe as settings (a training started without options: `engine serve`'s
    train jobs): `minutes` replaces the recipe's time budget, `steps` is a ceiling."""
    recipe = machine_recipe(cpu)
    budget = recipe.pop("minutes")
    minutes = budget if minutes is None else minutes
    layers = tuple(recipe.pop("style_layers").split(","))
    warm = "universal" if recipe.pop("warm_start", False) else ""
    settings = TrainSettings(**recipe, style_layers=layers, warm_start=warm,
                             seconds=minutes * 60 if minutes else 0.0,
                             steps=steps or (UNTIL_TIME_IS_UP if minutes else TrainSettings.steps))
    settings.check()
    return settings


def check_budget(seconds: float) -> None:
    """A run's time budget in seconds (0: none), as every training's settings check it."""
    if not 0.0 <= seconds < 6e7:  # (NaN fails too)
        raise UsageError("--minutes must be more than 0 (and finite)")


UNTIL_TIME_IS_UP = 10**9  # the steps of a timed run without a ceiling


LAYOUT_OPTIONS = ("net", "width", "dilations", "margin", "start_from")


PRECISIONS = ("float32", "bfloat16")


MAX_SIDE = 4096  # the largest crop or style image size a run may ask for


MAX_BATCH_PIXELS = 8 * 2**20  # pixels of one step's batch (the recipes use 0.5-1 MP)


OBJECTIVE = ("arch", "size", "style_size", "content_weight", "style_weight", "tv_weight",
             "content_layer", "style_layers", "width", "res_blocks", "dilations", "margin",
             "hidden", "code")


# What TrainSettings.earlier records of each stage a --from run went on from (with its steps).
STAGE_KEYS = ("size", "batch", "learning_rate", "lr_decay")
