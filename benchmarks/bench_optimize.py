"""Reference optimizer: MLX against the same optimization written with PyTorch, in one run.

Both sides use the same VGG16 weights, the same losses and layers, and the same algorithm:
on-device L-BFGS (two-loop recursion, history 20, unit steps, projection onto [0, 1]), so the
ratio measures the framework. scipy's L-BFGS-B (the engine's --method lbfgsb) is timed too,
over fewer iterations: its host-side work dominates at this size.

    python benchmarks/bench_optimize.py CONTENT STYLE --size 512 --iterations 300 [--torch]

Prints one JSON line per measured configuration.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import engine  # noqa: F401,E402,I001 - first: its BLAS loads before mlx.core
import mlx.core as mx
import numpy as np

from engine.io.images import load_image, resize
from engine.io.vgg_weights import _read_safetensors, load_vgg, resolve_weights
from engine.nets.vgg import VGG16
from engine.optimize import optimize  # noqa: E402
from engine.optimizer_settings import CONTENT_LAYERS, STYLE_LAYERS, OptimizeSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_peers import torch_vgg16  # noqa: E402


def bench_mlx(content, style, settings, weights) -> dict:
    vgg = load_vgg(path=weights)
    mx.random.seed(0)
    start = time.perf_counter()
    warm = OptimizeSettings(**{**settings.__dict__, "iterations": 2})
    optimize(vgg, content, [style], warm)  # compile and allocate once
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    result = optimize(vgg, content, [style], settings)
    seconds = time.perf_counter() - start
    return {"framework": f"mlx {settings.method}", "device": str(mx.default_device()), "seconds": seconds,
            "warmup_s": warmup, "iterations": result.iterations, "loss": result.loss,
            "image": result.image}


def bench_torch(content, style, settings, weights, channels_last: bool, compiled: bool) -> dict:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    params, _ = _read_safetensors(weights)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    features = torch_vgg16({k: v.astype(mx.float32) for k, v in params.items()},
                           set(settings.content_layers) | set(settings.style_layers), device,
                           memory_format)

    def gram(f):
        b, c, h, w = f.shape
        flat = f.reshape(b, c, h * w)
        return flat @ flat.transpose(1, 2) / (c * h * w)

    def to_torch(array):  # (1, H, W, 3) mx -> (1, 3, H, W)
        return torch.from_numpy(np.array(array)).permute(0, 3, 1, 2).contiguous().to(device)

    longest = max(content.shape[1], content.shape[2])
    factor = settings.style_scale * longest / max(style.shape[1], style.shape[2])
    style_sized = resize(style, round(style.shape[2] * factor), round(style.shape[1] * factor))
    with torch.no_grad():
        content_t = to_torch(content)
        content_targets = {k: v for k, v in features(content_t).items()
                           if k in settings.content_layers}
        style_targets = {k: gram(v) for k, v in features(to_torch(style_sized)).items()
                         if k in settings.style_layers}

    def objective(x):
        f = features(x)
        c = sum(torch.mean((f[k] - content_targets[k]) ** 2) for k in settings.content_layers)
        s = sum(torch.mean((gram(f[k]) - style_targets[k]) ** 2) for k in settings.style_layers)
        s = s / len(settings.style_layers)
        tv = (torch.mean((x[:, :, 1:] - x[:, :, :-1]) ** 2)
              + torch.mean((x[:, :, :, 1:] - x[:, :, :, :-1]) ** 2))
        return (settings.content_weight * c + settings.style_weight * s
                + settings.tv_weight * tv)

    if compiled:
        objective = torch.compile(objective)

    def run(iterations, history=settings.history):
        x = content_t.clone().requires_grad_(True)

        def evaluate(x):
            x = x.detach().requires_grad_(True)
            loss = objective(x)
            (grad,) = torch.autograd.grad(loss, x)
            return loss.detach(), grad

        loss, grad = evaluate(x)
        x = x.detach()
        pairs = []
        best = float(loss)
        for _ in range(iterations):
            q = grad.clone()
            alphas = []
            for s_, y_, rho in reversed(pairs):
                alpha = rho * torch.sum(s_ * q)
                alphas.append(alpha)
                q -= alpha * y_
            if pairs:
                s_, y_, _ = pairs[-1]
                q *= torch.sum(s_ * y_) / torch.sum(y_ * y_)
            else:
                q *= torch.clamp(1.0 / torch.sum(grad.abs()), max=1.0)
            for (s_, y_, rho), alpha in zip(pairs, reversed(alphas)):
                q += s_ * (alpha - rho * torch.sum(y_ * q))
            x_next = torch.clamp(x - q, 0.0, 1.0)
            loss, grad_next = evaluate(x_next)
            s_, y_ = x_next - x, grad_next - grad
            curvature = torch.sum(s_ * y_)
            if float(curvature) > 1e-10:
                pairs = (pairs + [(s_, y_, 1.0 / curvature)])[-history:]
            x, grad = x_next, grad_next
            best = min(best, float(loss))
        return best, iterations

    start = time.perf_counter()
    run(2)
    warmup = time.perf_counter() - start
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss, iterations = run(settings.iterations)
    seconds = time.perf_counter() - start
    return {"framework": "torch" + (".compile" if compiled else "")
            + (" channels_last" if channels_last else ""), "device": device,
            "seconds": seconds, "warmup_s": warmup, "iterations": iterations,
            "loss": loss, "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("content")
    parser.add_argument("style")
    parser.add_argument("--size", type=int, default=512, help="the content is resized to size^2")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--vgg-weights", default=None)
    parser.add_argument("--torch", action="store_true", help="also measure PyTorch")
    parser.add_argument("--torch-compile", action="store_true")
    parser.add_argument("--save", default=None, help="write the MLX result here")
    parser.add_argument("--lbfgsb-iterations", type=int, default=30,
                        help="also time scipy's L-BFGS-B over this many iterations (0: skip)")
    parser.add_argument("--no-compile", action="store_true",
                        help="run MLX without mx.compile (to measure compile warm-up)")
    args = parser.parse_args()

    if args.no_compile:
        mx.compile = lambda function, *_, **__: function
    weights = resolve_weights(VGG16, args.vgg_weights)
    content = load_image(args.content).rgb
    content = resize(content, args.size, args.size)  # exactly size x size
    style = load_image(args.style, args.size * 2).rgb
    settings = OptimizeSettings(iterations=args.iterations, content_layers=CONTENT_LAYERS,
                                style_layers=STYLE_LAYERS)
    common = {"size": list(content.shape[1:3]), "machine": platform.node(),
              "mlx": mx.__version__}
    results = [bench_mlx(content, style, settings, weights)]
    if args.save:
        from engine.io.images import save_image
        save_image(args.save, results[0]["image"])
    if args.lbfgsb_iterations:
        scipy_settings = OptimizeSettings(**{**settings.__dict__, "method": "lbfgsb",
                                             "iterations": args.lbfgsb_iterations})
        results.append(bench_mlx(content, style, scipy_settings, weights))
    if args.torch:
        for channels_last in (False, True):
            results.append(bench_torch(content, style, settings, weights, channels_last, False))
        if args.torch_compile:
            results.append(bench_torch(content, style, settings, weights, True, True))
    for result in results:
        result.pop("image", None)
        result["s_per_iteration"] = result["seconds"] / max(result["iterations"], 1)
        print(json.dumps({**common, **result}), flush=True)
    torch_runs = [r for r in results if r["framework"].startswith("torch")]
    if torch_runs:
        best = min(torch_runs, key=lambda r: r["seconds"])
        print(json.dumps({"mlx_lbfgs_time_over_best_torch": results[0]["seconds"] / best["seconds"],
                          "best_torch": best["framework"]}))


if __name__ == "__main__":
    main()
