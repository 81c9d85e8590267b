"""The reference per-image optimizer (Gatys et al.): pixels optimized against VGG losses.

L-BFGS is scipy's L-BFGS-B (box constraints keep pixels in [0, 1]) driven by a compiled MLX
value-and-gradient; Adam is MLX's own. Large outputs are optimized coarse to fine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np

from .errors import EngineError, ImageError, UsageError
from .io.images import resize
from .losses import content_loss, gram, style_loss, total_variation
from .nets.vgg import VGG
from .optimizer_settings import OptimizeSettings


@dataclass
class Step:
    """Progress of one iteration."""

    level: int
    levels: int
    iteration: int
    iterations: int
    loss: float
    terms: dict[str, float] = field(default_factory=dict)


@dataclass
class Result:
    image: mx.array  # (1, H, W, 3) in [0, 1], the best seen
    loss: float
    iterations: int  # done in total, over all levels
    interrupted: bool = False


class _Interrupted(Exception):
    def __init__(self, best: np.ndarray, loss: float):
        self.best, self.loss = best, loss


def level_sizes(width: int, height: int, coarse_size: int, minimum: int = 16
                ) -> list[tuple[int, int]]:
    """Sizes from coarse to fine: halve while the longest side exceeds coarse_size and the
    shortest side stays at least `minimum`."""
    sizes = [(width, height)]
    while max(sizes[0]) > coarse_size and min(sizes[0]) // 2 >= minimum:
        w, h = sizes[0]
        sizes.insert(0, (w // 2, h // 2))
    return sizes


def style_target(vgg: VGG, styles: Sequence[mx.array], blend: np.ndarray, layers: Sequence[str],
                  longest: int, scale: float) -> dict[str, mx.array]:
    """Blend the Gram matrices of the style images, each resized to scale * longest side.

    A weighted sum of squared Gram distances equals, up to a constant, the distance to the
    weighted mean Gram, so one blended target gives the same gradients as one term per style.
    """
    target: dict[str, mx.array] = {}
    for style, weight in zip(styles, blend):
        w, h = style.shape[2], style.shape[1]
        factor = scale * longest / max(w, h)
        sized = resize(style, max(16, round(w * factor)), max(16, round(h * factor)))
        features = vgg(sized, layers)
        for layer in layers:
            contribution = float(weight) * gram(features[layer])
            target[layer] = target[layer] + contribution if layer in target else contribution
    mx.eval(target)
    return target


def make_objective(vgg: VGG, content: mx.array, style_grams: dict[str, mx.array],
                   settings: OptimizeSettings) -> Callable:
    """A compiled x -> ((loss, (content, style, tv)), gradient) for one output size."""
    content_targets = vgg(content, settings.content_layers)
    mx.eval(content_targets)
    layers = tuple(settings.content_layers) + tuple(
        name for name in settings.style_layers if name not in settings.content_layers)
    style_layer_weight = 1.0 / len(style_grams)

    def objective(x: mx.array):
        features = vgg(x, layers)
        c = sum(content_loss(features[name], content_targets[name])
                for name in settings.content_layers) * settings.content_weight
        s = style_loss(features, style_grams,
                       {name: style_layer_weight for name in style_grams}) * settings.style_weight
        t = total_variation(x) * settings.tv_weight
        return c + s + t, (c, s, t)

    return mx.compile(mx.value_and_grad(objective))


def _run_lbfgs(objective, x0: np.ndarray, iterations: int, history: int,
               report: Callable) -> tuple:
    """L-BFGS on the device: two-loop recursion, unit steps, projected onto [0, 1].

    No line search (as neural-style's torch L-BFGS): one gradient evaluation per iteration, and
    no host round trip of the image, which is what makes 300 iterations take seconds on a GPU.
    """
    x = mx.array(x0)
    (loss, terms), grad = objective(x)
    mx.eval(loss, terms, grad)
    pairs: list[tuple[mx.array, mx.array, mx.array]] = []  # (s, y, 1 / y.s), oldest first
    best_loss, best = float(loss), x
    done = 0
    try:
        for done in range(1, iterations + 1):
            q = grad
            alphas = []
            for s, y, rho in reversed(pairs):
                alpha = rho * mx.sum(s * q)
                alphas.append(alpha)
                q = q - alpha * y
            if pairs:
                s, y, _ = pairs[-1]
                q = q * (mx.sum(s * y) / mx.sum(y * y))
            else:  # first step: a small one along the gradient
                q = q * mx.minimum(1.0, 1.0 / mx.sum(mx.abs(grad)))
            for (s, y, rho), alpha in zip(pairs, reversed(alphas)):
                q = q + s * (alpha - rho * mx.sum(y * q))
            x_next = mx.clip(x - q, 0.0, 1.0)
            (loss, terms), grad_next = objective(x_next)
            s, y = x_next - x, grad_next - grad
            curvature = mx.sum(s * y)
            mx.eval(x_next, loss, terms, grad_next, s, y, curvature)
            if float(curvature) > 1e-10:
                pairs.append((s, y, 1.0 / curvature))
                pairs = pairs[-history:]
            x, grad = x_next, grad_next
            value = float(loss)
            if value < best_loss:
                best_loss, best = value, x
            report(done, value, [float(t) for t in terms])
    except KeyboardInterrupt:
        raise _Interrupted(np.array(best), best_loss) from None
    return np.array(best), best_loss, done


def _run_lbfgsb(objective, x0: np.ndarray, iterations: int, history: int,
                report: Callable) -> tuple:
    """scipy's L-BFGS-B: exact box constraints and a line search; its per-iteration work on the
    host grows with the pixel count (about 0.15 s per iteration at 512 px), so it is the slow,
    textbook reference."""
    from scipy.optimize import Bounds, minimize

    shape = x0.shape
    best = {"loss": np.inf, "x": x0}
    latest = {}

    def fun(flat: np.ndarray):
        x = mx.array(flat.reshape(shape).astype(np.float32))
        (loss, terms), grad = objective(x)
        mx.eval(loss, terms, grad)
        value = float(loss)
        latest.update(loss=value, terms=[float(t) for t in terms])
        if value < best["loss"]:
            best.update(loss=value, x=np.array(x))
        return value, np.array(grad, dtype=np.float64).ravel()

    count = [0]

    def callback(*_):
        count[0] += 1
        report(count[0], latest["loss"], latest["terms"])

    try:
        minimize(fun, x0.astype(np.float64).ravel(), jac=True, method="L-BFGS-B",
                 bounds=Bounds(0.0, 1.0), callback=callback,
                 options={"maxiter": iterations, "maxfun": iterations * 2, "maxcor": history,
                          "ftol": 0.0, "gtol": 0.0})
    except KeyboardInterrupt:
        raise _Interrupted(best["x"], best["loss"]) from None
    return best["x"], best["loss"], count[0]


def _run_adam(objective, x0: np.ndarray, iterations: int, learning_rate: float,
              report: Callable) -> tuple:
    optimizer = optim.Adam(learning_rate=learning_rate)
    state = {"x": mx.array(x0)}
    optimizer.init(state)
    best_loss, best = np.inf, x0
    done = 0
    try:
        for done in range(1, iterations + 1):
            (loss, terms), grad = objective(state["x"])
            previous = state["x"]
            optimizer.update(state, {"x": grad})
            state["x"] = mx.clip(state["x"], 0.0, 1.0)
            mx.eval(state, loss, terms, optimizer.state)
            value = float(loss)
            if value < best_loss:
                best_loss, best = value, np.array(previous)
            report(done, value, [float(t) for t in terms])
    except KeyboardInterrupt:
        raise _Interrupted(best, best_loss) from None
    return best, best_loss, done


def optimize(vgg: VGG, content: mx.array, styles: Sequence[mx.array],
             settings: OptimizeSettings | None = None,
             on_step: Callable[[Step], None] | None = None) -> Result:
    """Repaint `content` (1, H, W, 3) in the style of `styles`; returns the best image seen.

    Ctrl-C (KeyboardInterrupt) ends the run early with the best image so far, interrupted=True.
    """
    settings = settings or OptimizeSettings()
    if not styles:
        raise UsageError("give at least one style image")
    settings.check(len(styles))
    blend = np.asarray(settings.style_blend or [1.0] * len(styles), dtype=np.float64)
    blend = blend / blend.sum()
    height, width = content.shape[1], content.shape[2]
    smallest = vgg.min_size([*settings.content_layers, *settings.style_layers])
    if min(width, height) < smallest:
        raise ImageError(f"the content image is {width}x{height}; the VGG layers used need at "
                         f"least {smallest} px on each side: use a larger image or --max-size")
    sizes = level_sizes(width, height, settings.coarse_size, smallest)
    mx.random.seed(settings.seed)

    x = None
    total = 0
    loss = float("inf")
    for level, (w, h) in enumerate(sizes):
        level_content = resize(content, w, h)
        if x is None:
            x = (np.array(level_content) if settings.init == "content" else
                 np.array(mx.random.uniform(0.0, 1.0, level_content.shape)))
        else:
            x = np.array(resize(mx.array(x), w, h))
        grams = style_target(vgg, styles, blend, settings.style_layers, max(w, h),
                              settings.style_scale)
        objective = make_objective(vgg, level_content, grams, settings)

        def report(i, value, terms, level=level):
            if on_step:
                names = ("content", "style", "tv")
                on_step(Step(level + 1, len(sizes), i, settings.iterations, value,
                             dict(zip(names, terms))))

        try:
            if settings.method == "lbfgs":
                x, loss, done = _run_lbfgs(objective, x, settings.iterations, settings.history,
                                           report)
            elif settings.method == "lbfgsb":
                x, loss, done = _run_lbfgsb(objective, x, settings.iterations, settings.history,
                                            report)
            else:
                x, loss, done = _run_adam(objective, x, settings.iterations,
                                          settings.learning_rate, report)
        except _Interrupted as stop:
            best = resize(mx.array(stop.best), width, height)
            return Result(best, stop.loss, total, interrupted=True)
        total += done
        if not (np.isfinite(loss) and np.isfinite(x).all()):
            raise EngineError(f"the optimization diverged (the loss is {loss}) at level "
                              f"{level + 1}; lower --style-weight or --learning-rate, or use "
                              "--method lbfgs")
    return Result(mx.array(x), loss, total)


def preserve_color(stylized: mx.array, content: mx.array) -> mx.array:
    """Keep the stylized luminance, take the chroma (YIQ's I and Q) from the content."""
    to_yiq = mx.array([[0.299, 0.587, 0.114],
                       [0.596, -0.274, -0.322],
                       [0.211, -0.523, 0.312]])
    from_yiq = mx.linalg.inv(to_yiq, stream=mx.cpu)
    content = resize(content, stylized.shape[2], stylized.shape[1])
    yiq_style = stylized @ to_yiq.T
    yiq_content = content @ to_yiq.T
    mixed = mx.concatenate([yiq_style[..., :1], yiq_content[..., 1:]], axis=-1)
    return mx.clip(mixed @ from_yiq.T, 0.0, 1.0)


def optimize_each(vgg: VGG, images: mx.array, style: mx.array, settings: OptimizeSettings,
                  on_image: Callable[[int], None] | None = None) -> mx.array:
    """Each of (N, H, W, 3) images repainted in the style of the painting `style` (1, h, w, 3),
    one optimization each; `on_image(done)` after each."""
    results = []
    for index in range(images.shape[0]):
        results.append(optimize(vgg, images[index:index + 1], [style], settings).image)
        if on_image:
            on_image(index + 1)
    return mx.concatenate(results)

