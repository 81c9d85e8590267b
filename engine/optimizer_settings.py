"""The reference optimizer's settings and their bounds. No MLX here: the command line reads
the defaults at start-up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import UsageError

METHODS = ("lbfgs", "lbfgsb", "adam")
CONTENT_LAYERS = ("relu4_2",)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


@dataclass
class OptimizeSettings:
    """Everything that shapes one optimization; defaults look good at 512 px."""

    iterations: int = 300
    method: str = "lbfgs"  # on-device L-BFGS; "lbfgsb" for scipy's L-BFGS-B; or "adam"
    init: str = "content"  # or "noise"
    content_weight: float = 1.0
    style_weight: float = 5e6
    tv_weight: float = 10.0
    style_scale: float = 1.0
    style_blend: Sequence[float] | None = None  # one weight per style image
    content_layers: Sequence[str] = CONTENT_LAYERS
    style_layers: Sequence[str] = STYLE_LAYERS
    learning_rate: float = 0.02  # Adam, in [0, 1] pixel units
    history: int = 20  # L-BFGS correction pairs
    coarse_size: int = 640  # outputs larger than this start at half size, recursively
    seed: int = 0

    def check(self, style_count: int) -> None:
        if self.method not in METHODS:
            raise UsageError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.init not in ("content", "noise"):
            raise UsageError(f"unknown init {self.init!r}; choose content or noise")
        if self.iterations < 1:
            raise UsageError("iterations must be at least 1")
        if not 0 < self.style_scale <= MAX_STYLE_SCALE:  # (NaN fails too)
            raise UsageError(f"--style-scale {self.style_scale} must be a number in "
                             f"(0, {MAX_STYLE_SCALE}]")
        for flag, value in (("--content-weight", self.content_weight),
                            ("--style-weight", self.style_weight),
                            ("--tv-weight", self.tv_weight),
                            ("--learning-rate", self.learning_rate)):
            if not 0 <= value < 1e30:
                raise UsageError(f"{flag} {value} must be a finite number, 0 or more")
        if not 0 <= self.seed < 2**32:
            raise UsageError(f"--seed {self.seed} must be in 0..{2**32 - 1}")
        if self.style_blend is not None:
            if len(self.style_blend) != style_count:
                raise UsageError(
                    f"{len(self.style_blend)} blend weights for {style_count} style images; "
                    "give one weight per style"
                )
            if not all(0 <= w < 1e30 for w in self.style_blend) or sum(self.style_blend) <= 0:
                raise UsageError("blend weights must be non-negative and not all zero")


MAX_STYLE_SCALE = 4.0  # the style image at up to 4x the output's size (memory grows with it)
