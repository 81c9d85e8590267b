"""Where the GPU time goes: the style network and the training step taken apart, op by op,
with PyTorch's time for the same op beside MLX's, and alternatives for the slow parts.

    python benchmarks/profile_gpu.py [--sections conv,apply,train,trainnet,trainconv,trainforms] [--out results.jsonl]

Random weights and inputs (speed does not depend on them). One JSON line per measurement:
{"section", "case", "mlx_ms", "torch_ms"?}. Meant for the GPU machine; runs (slowly) anywhere.
"""

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

import engine  # noqa: F401,I001 - first: its BLAS loads before mlx.core
import mlx.core as mx
import mlx.nn as nn


sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine.losses import gram  # noqa: E402
from engine.nets import transformer
from engine.nets.ops import upsample2x
from engine.nets.transformer import FULL, TransformerNet, conv_out_rows, reflect_pad  # noqa: E402
from engine.nets.vgg import VGG, max_pool2_views  # noqa: E402

OUT = None


def emit(section, case, **values):
    line = json.dumps({"section": section, "case": case,
                       **{k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}})
    print(line, flush=True)
    if OUT:
        with open(OUT, "a") as f:
            f.write(line + "\n")


def mlx_ms(fn, *args, repeats=20):
    for _ in range(2):
        mx.eval(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        mx.eval(fn(*args))
    return (time.perf_counter() - start) * 1000 / repeats


def torch_ms(fn, *args, repeats=20):
    import torch

    for _ in range(2):
        fn(*args)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn(*args)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000 / repeats


def release():
    """Hand cached device memory back between measurements (both frameworks keep caches)."""
    mx.clear_cache()
    if "torch" in sys.modules:
        sys.modules["torch"].cuda.empty_cache()


def have_torch():
    try:
        import torch

        if not torch.cuda.is_available():
            return False
        torch.backends.cudnn.benchmark = True
        return True
    except ImportError:
        return False


# ------------------------------------------------------------------------ conv

def conv_cases(scale=1):
    """(label, batch, height, width, cin, cout, kernel, stride): the style network's
    convolutions at 1080p batch 8 and VGG16's at 256 batch 8 (sides divided by `scale`)."""
    b, h, w = 8, 1080 // scale, 1920 // scale
    yield from [
        ("net in 9x9 3->32", b, h, w, 3, 32, 9, 1),
        ("net in 9x9 8->32", b, h, w, 8, 32, 9, 1),
        ("net down 32->64 s2", b, h, w, 32, 64, 3, 2),
        ("net down 64->128 s2", b, h // 2, w // 2, 64, 128, 3, 2),
        ("net res 128->128", b, h // 4, w // 4, 128, 128, 3, 1),
        ("net up 128->64", b, h // 2, w // 2, 128, 64, 3, 1),
        ("net up 64->32", b, h, w, 64, 32, 3, 1),
        ("net out 9x9 32->3", b, h, w, 32, 3, 9, 1),
        ("net out 9x9 32->8", b, h, w, 32, 8, 9, 1),
        ("vgg 3->64", 8, 256 // scale, 256 // scale, 3, 64, 3, 1),
        ("vgg 64->64", 8, 256 // scale, 256 // scale, 64, 64, 3, 1),
        ("vgg 128->128", 8, 128 // scale, 128 // scale, 128, 128, 3, 1),
        ("vgg 256->256", 8, 64 // scale, 64 // scale, 256, 256, 3, 1),
        ("vgg 512->512", 8, 32 // scale, 32 // scale, 512, 512, 3, 1),
    ]


def section_conv(torch_too, scale):
    for label, b, h, w, cin, cout, k, s in conv_cases(scale):
        for dtype in (mx.bfloat16, mx.float32):
            if label.startswith("net") and dtype == mx.float32:
                continue
            x = mx.random.normal((b, h + k - 1, w + k - 1, cin)).astype(dtype)
            wt = (mx.random.normal((cout, k, k, cin)) * 0.05).astype(dtype)
            fwd = mx.compile(lambda x, wt, s=s: mx.conv2d(x, wt, stride=s))
            values = {"mlx_ms": mlx_ms(fwd, x, wt)}
            if label.startswith("vgg"):  # VGG needs the input gradient only
                grad = mx.compile(mx.grad(lambda x, wt: mx.sum(mx.conv2d(x, wt)).astype(mx.float32)))
                values["mlx_input_grad_ms"] = mlx_ms(grad, x, wt)
            else:  # the style network trains its weights
                grad = mx.compile(mx.grad(lambda x, wt, s=s: mx.sum(mx.conv2d(x, wt, stride=s))
                                          .astype(mx.float32), argnums=(0, 1)))
                if h <= 256:
                    values["mlx_both_grads_ms"] = mlx_ms(grad, x, wt)
            if torch_too:
                values.update(torch_conv(b, h + k - 1, w + k - 1, cin, cout, k, s, dtype,
                                         label.startswith("vgg")))
            emit("conv", f"{label} {b}x{h}x{w} {dtype}", **values)
            del x, wt
            release()


def torch_conv(b, h, w, cin, cout, k, s, dtype, input_grad):
    import torch
    import torch.nn.functional as F

    tdtype = torch.bfloat16 if dtype == mx.bfloat16 else torch.float32
    x = torch.randn(b, cin, h, w, device="cuda", dtype=tdtype).contiguous(
        memory_format=torch.channels_last)
    wt = (torch.randn(cout, cin, k, k, device="cuda", dtype=tdtype) * 0.05).contiguous(
        memory_format=torch.channels_last)
    values = {}
    with torch.no_grad():
        values["torch_ms"] = torch_ms(lambda: F.conv2d(x, wt, stride=s))
    if input_grad:
        xg = x.detach().requires_grad_(True)

        def backward():
            y = F.conv2d(xg, wt)
            (gx,) = torch.autograd.grad(y.sum(), xg)
            return gx
        values["torch_input_grad_ms"] = torch_ms(backward)
    return values


# ----------------------------------------------------------------------- apply

def norm_onepass(norm, x):
    """Instance norm from E[x] and E[x^2] in float32: one read of x for both statistics."""
    x32 = x.astype(mx.float32)
    mean = mx.mean(x32, axis=(1, 2), keepdims=True)
    var = mx.maximum(mx.mean(mx.square(x32), axis=(1, 2), keepdims=True) - mx.square(mean), 0)
    scale = mx.rsqrt(var + norm.eps) * norm.weight
    shift = norm.bias - mean * scale
    return (x * scale.astype(x.dtype) + shift.astype(x.dtype))


def norm_matmul(norm, x):
    """Instance norm with the sums as matrix products (ones @ x) on the tensor cores."""
    batch, height, width, channels = x.shape
    flat = x.reshape(batch, height * width, channels)
    ones = mx.full((batch, 1, height * width), 1.0 / (height * width), dtype=x.dtype)
    mean = (ones @ flat).astype(mx.float32)
    square = (ones @ mx.square(flat)).astype(mx.float32)
    var = mx.maximum(square - mx.square(mean), 0)
    scale = (mx.rsqrt(var + norm.eps) * norm.weight).reshape(batch, 1, 1, channels)
    shift = (norm.bias - mean.reshape(batch, 1, 1, channels) * scale)
    return x * scale.astype(x.dtype) + shift.astype(x.dtype)


def pad_for(mode, p):
    if mode == "reflect":
        return lambda x: mx.pad(x, [(0, 0), (p, p), (p, p), (0, 0)], mode="reflect")
    if mode == "slices":
        return lambda x: reflect_pad(x, p)
    return lambda x: mx.pad(x, [(0, 0), (p, p), (p, p), (0, 0)])


def conv_in_rows(xp, w):
    """A k x k convolution with few input channels as a k x 1 one over the k horizontal shifts
    of the input stacked as channels (3 -> 27 input channels for the 9x9 input layer)."""
    cout, k, _, cin = w.shape
    width = xp.shape[2] - k + 1
    stacked = mx.concatenate([xp[:, :, dx:dx + width] for dx in range(k)], axis=-1)
    return mx.conv2d(stacked, w.reshape(cout, k, 1, k * cin))


def conv_layer(layer, x, pad_mode, cin_to=None, cout_to=None, rows=False):
    conv = layer.conv
    weight, bias = conv.weight, conv.bias
    if rows and weight.shape[1] > 3 and min(weight.shape[0], weight.shape[-1]) < 8:
        x = pad_for(pad_mode, layer.pad)(x)
        rowwise = conv_in_rows if weight.shape[-1] < 8 else conv_out_rows
        return rowwise(x, weight) + bias
    if cin_to and weight.shape[-1] < cin_to:  # zero input channels: tensor-core friendly
        extra = cin_to - weight.shape[-1]
        weight = mx.pad(weight, [(0, 0), (0, 0), (0, 0), (0, extra)])
        x = mx.pad(x, [(0, 0), (0, 0), (0, 0), (0, extra)])
    cout = weight.shape[0]
    if cout_to and cout < cout_to:
        weight = mx.pad(weight, [(0, cout_to - cout), (0, 0), (0, 0), (0, 0)])
    x = pad_for(pad_mode, layer.pad)(x)
    y = mx.conv2d(x, weight, stride=conv.stride)
    if cout_to and cout < cout_to:
        y = y[..., :cout]
    return y + bias


def forward_variant(net, x, pad_mode="reflect", norm="meanvar", cin_to=None, cout_to=None,
                    rows=False):
    """TransformerNet.__call__ (johnson arch) with swappable parts."""
    normed = {"meanvar": lambda n, y: n(y), "onepass": norm_onepass, "matmul": norm_matmul}[norm]
    for i, (layer, n) in enumerate(zip(net.down, net.down_norms)):
        x = nn.relu(normed(n, conv_layer(layer, x, pad_mode, cin_to if i == 0 else None,
                                         rows=rows)))
    for block in net.blocks:
        y = nn.relu(normed(block.norm1, conv_layer(block.conv1, x, pad_mode)))
        x = x + normed(block.norm2, conv_layer(block.conv2, y, pad_mode))
    for layer, n in zip(net.up, net.up_norms):
        x = nn.relu(normed(n, conv_layer(layer, upsample2x(x), pad_mode)))
    return conv_layer(net.out, x, pad_mode, cout_to=cout_to, rows=rows)


def section_apply(torch_too, shapes, stages_too=True):
    for batch, height, width in shapes:
        net = TransformerNet(FULL)
        net.set_dtype(mx.bfloat16)
        x = mx.random.uniform(shape=(batch, height, width, 3)).astype(mx.bfloat16)
        tag = f"{batch}x{height}x{width}"
        def per_frame(ms, batch=batch):
            return ms / batch
        whole = mx.compile(lambda x, net=net: net(x))
        emit("apply", f"whole net {tag}", mlx_ms_per_frame=per_frame(mlx_ms(whole, x)))
        half = TransformerNet(FULL)
        half.set_dtype(mx.float16)
        x16 = x.astype(mx.float16)
        emit("apply", f"whole net float16 {tag}",
             mlx_ms_per_frame=per_frame(mlx_ms(mx.compile(lambda x, half=half: half(x)), x16)))
        del half, x16
        if not stages_too:
            continue
        variants = ({}, {"pad_mode": "slices"}, {"pad_mode": "zero"}, {"norm": "onepass"},
                    {"norm": "matmul"}, {"cin_to": 8, "cout_to": 8}, {"rows": True},
                    {"pad_mode": "slices", "rows": True}, {"pad_mode": "zero", "rows": True})
        for options in variants:  # one change at a time from the network as it is, then all
            run = mx.compile(partial(forward_variant, net, **options))
            emit("apply", f"variant {options or 'as is'} {tag}",
                 mlx_ms_per_frame=per_frame(mlx_ms(run, x)))
        # stage by stage, on the real activations
        stages = []
        h = x
        for i, (layer, n) in enumerate(zip(net.down, net.down_norms)):
            stages.append((f"down{i}", layer, n, h, False))
            h = nn.relu(n(layer(h)))
        for j, block in enumerate(net.blocks[:1]):
            stages.append((f"res{j}.conv1", block.conv1, block.norm1, h, False))
        for j in range(len(net.blocks)):
            h = net.blocks[j](h)
        mx.eval(h)
        for i, (layer, n) in enumerate(zip(net.up, net.up_norms)):
            emit("apply", f"upsample{i} {tag}", mlx_ms=mlx_ms(mx.compile(upsample2x), h))
            u = upsample2x(h)
            stages.append((f"up{i}", layer, n, u, False))
            h = nn.relu(n(layer(u)))
        stages.append(("out", net.out, None, h, True))
        for name, layer, n, inp, last in stages:
            mx.eval(inp)
            p = layer.pad
            padded = mx.pad(inp, [(0, 0), (p, p), (p, p), (0, 0)], mode="reflect")
            mx.eval(padded)
            values = {
                "pad_reflect": mlx_ms(mx.compile(pad_for("reflect", p)), inp),
                "pad_slices": mlx_ms(mx.compile(pad_for("slices", p)), inp),
                "conv": mlx_ms(mx.compile(lambda xp, c=layer.conv: c(xp)), padded),
            }
            if layer.conv.weight.shape[1] == 9:
                rowwise = conv_in_rows if name == "down0" else conv_out_rows
                values["conv_rows"] = mlx_ms(mx.compile(
                    lambda xp, c=layer.conv, f=rowwise: f(xp, c.weight) + c.bias), padded)
            y = layer.conv(padded)
            mx.eval(y)
            if n is not None:
                values["norm_relu"] = mlx_ms(mx.compile(lambda y, n=n: nn.relu(n(y))), y)
                values["norm_onepass"] = mlx_ms(mx.compile(
                    lambda y, n=n: nn.relu(norm_onepass(n, y))), y)
                values["norm_matmul"] = mlx_ms(mx.compile(
                    lambda y, n=n: nn.relu(norm_matmul(n, y))), y)
                values["stage"] = mlx_ms(mx.compile(lambda x, l=layer, n=n: nn.relu(n(l(x)))), inp)
            if torch_too:
                values.update(torch_stage(layer, inp.shape, last))
            emit("apply", f"stage {name} {tag} {tuple(inp.shape)}", **values)
            del padded, y
            release()
        if torch_too:
            emit("apply", f"torch whole net {tag}", **torch_whole(batch, height, width))
        del net, x, h, stages
        release()


def torch_stage(layer, shape, last):
    import torch
    import torch.nn.functional as F

    b, h, w, cin = shape
    cout = layer.conv.weight.shape[0]
    k = layer.conv.weight.shape[1]
    s = layer.conv.stride[0]
    x = torch.randn(b, cin, h, w, device="cuda", dtype=torch.float16).contiguous(
        memory_format=torch.channels_last)
    wt = torch.randn(cout, cin, k, k, device="cuda", dtype=torch.float16).contiguous(
        memory_format=torch.channels_last)
    p = k // 2
    values = {}
    with torch.no_grad():
        padded = F.pad(x, (p, p, p, p), mode="reflect")
        values["torch_pad"] = torch_ms(lambda: F.pad(x, (p, p, p, p), mode="reflect"))
        values["torch_conv"] = torch_ms(lambda: F.conv2d(padded, wt, stride=s))
        y = F.conv2d(padded, wt, stride=s)
        if not last:
            values["torch_norm_relu"] = torch_ms(lambda: torch.relu(F.instance_norm(y)))
    return values


def torch_whole(batch, height, width):
    import torch
    from torch_peers import torch_net

    net = torch_net(FULL).cuda().eval().half().to(memory_format=torch.channels_last)
    x = torch.rand(batch, 3, height, width, device="cuda", dtype=torch.float16).contiguous(
        memory_format=torch.channels_last)
    values = {}
    with torch.no_grad():
        values["torch_eager_ms_per_frame"] = torch_ms(lambda: net(x)) / batch
        compiled = torch.compile(net)
        values["torch_compiled_ms_per_frame"] = torch_ms(lambda: compiled(x)) / batch
    return values


# ----------------------------------------------------------------------- train

def section_train(torch_too, batch=8, size=256):
    taps = ("relu1_1", "relu2_1", "relu2_2", "relu3_1", "relu4_1", "relu5_1")
    for dtype in (mx.float32, mx.bfloat16):
        vgg = VGG()
        vgg.set_dtype(dtype)
        x = mx.random.uniform(shape=(batch, size, size, 3)).astype(dtype)

        def features_loss(x):
            f = vgg(x, taps)
            return sum(mx.mean(mx.square(gram(f[t]).astype(mx.float32))) for t in taps)

        values = {
            "vgg_forward": mlx_ms(mx.compile(lambda x: vgg(x, taps)), x),
            "vgg_forward_relu2_2": mlx_ms(mx.compile(lambda x: vgg(x, ["relu2_2"])), x),
            "vgg_grams_input_grad": mlx_ms(mx.compile(mx.grad(features_loss)), x),
        }
        f = vgg(x, taps)
        mx.eval(f)
        values["grams"] = mlx_ms(mx.compile(lambda *fs: [gram(t) for t in fs]), *f.values())
        pool_in = mx.random.normal((batch, size, size, 64)).astype(dtype)
        values["maxpool_fwd"] = mlx_ms(mx.compile(nn.MaxPool2d(2, 2)), pool_in)
        values["maxpool_grad"] = mlx_ms(mx.compile(mx.grad(
            lambda t: mx.sum(nn.MaxPool2d(2, 2)(t)).astype(mx.float32))), pool_in)
        values["maxpool_slices_fwd"] = mlx_ms(mx.compile(max_pool2_views), pool_in)
        values["maxpool_slices_grad"] = mlx_ms(mx.compile(mx.grad(
            lambda t: mx.sum(max_pool2_views(t)).astype(mx.float32))), pool_in)
        values["maxpool_reshape_grad"] = mlx_ms(mx.compile(mx.grad(
            lambda t: mx.sum(mx.max(t.reshape(batch, size // 2, 2, size // 2, 2, 64), axis=(2, 4)))
            .astype(mx.float32))), pool_in)
        net = TransformerNet(FULL)
        net.set_dtype(dtype)
        xs = mx.random.uniform(shape=(batch, size, size, 3)).astype(dtype)
        net_grad = mx.compile(nn.value_and_grad(net, lambda t: mx.mean(mx.square(net(t)))
                                                .astype(mx.float32)), inputs=net.state, outputs=net.state)
        values["net_forward"] = mlx_ms(mx.compile(lambda t: net(t)), xs)
        values["net_value_and_grad"] = mlx_ms(net_grad, xs)
        values["train_step"] = _train_step_ms(batch, size, "float32" if dtype == mx.float32
                                              else "bfloat16")
        if torch_too:
            values.update(torch_train_parts(batch, size, dtype))
        emit("train", f"parts b{batch} {size}px {dtype}", **values)
        release()


def _train_step_ms(batch, size, precision):
    """engine's whole training step (random VGG16 weights, the five relu*_1 style layers)."""
    import mlx.optimizers as optim
    import numpy as np

    from engine.optimize import style_target
    from engine.training.settings import TrainSettings
    from engine.training.style import make_train_step

    settings = TrainSettings(size=size, precision=precision, style_layers=(
        "relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"))
    vgg = VGG()
    grams = style_target(vgg, [mx.random.uniform(shape=(1, size, size, 3))], np.ones(1),
                         settings.style_layers, size, 1.0)
    net = TransformerNet(FULL)
    step, state = make_train_step(vgg, net, optim.Adam(learning_rate=1e-3), grams, settings)
    x = mx.random.uniform(shape=(batch, size, size, 3))
    return mlx_ms(lambda t: (step(t), state), x)


def torch_train_parts(batch, size, dtype):
    import torch
    import torch.nn.functional as F
    from torch_peers import torch_net

    tdtype = torch.bfloat16 if dtype == mx.bfloat16 else torch.float32
    widths = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
    convs, cin = [], 3
    for block in widths:
        for cout in block:
            convs.append((torch.randn(cout, cin, 3, 3, device="cuda", dtype=tdtype) * 0.05)
                         .contiguous(memory_format=torch.channels_last))
            cin = cout

    def vgg(x, last=13):
        outs, i = [], 0
        for b, block in enumerate(widths):
            if b:
                x = F.max_pool2d(x, 2)
            for _ in block:
                x = torch.relu(F.conv2d(x, convs[i], padding=1))
                outs.append(x)
                i += 1
                if i >= last:
                    return outs
        return outs

    def gram(f):
        b, c, h, w = f.shape
        f = f.reshape(b, c, h * w)
        return f @ f.transpose(1, 2) / (c * h * w)

    x = torch.rand(batch, 3, size, size, device="cuda", dtype=tdtype).contiguous(
        memory_format=torch.channels_last)
    values = {}
    with torch.no_grad():
        values["torch_vgg_forward"] = torch_ms(lambda: vgg(x))
    xg = x.detach().requires_grad_(True)

    def grams_grad():
        loss = sum(gram(f).float().square().mean() for f in vgg(xg))
        (g,) = torch.autograd.grad(loss, xg)
        return g
    values["torch_vgg_grams_input_grad"] = torch_ms(grams_grad)
    net = torch_net(FULL).cuda().to(tdtype).to(memory_format=torch.channels_last)

    def net_step():
        net.zero_grad(set_to_none=True)
        net(x).float().square().mean().backward()
    values["torch_net_backward"] = torch_ms(net_step)
    return values


# ------------------------------------------------------------------ train net

def _autodiff_pad(p):
    return lambda x: transformer.reflect_slices(x, p)


def _autodiff_shift_sum(k, cout):
    return lambda z: transformer._shift_sum(z, k, cout)


def _autodiff_norm(eps):
    return lambda x, weight, bias: transformer._instance_norm(x, weight, bias, eps)


def _affine_only(eps):
    return lambda x, weight, bias: x * weight + bias


TRAIN_VARIANTS = {  # how the style network's gradient is taken: each patches engine.transformer
    "autodiff": {"_reflect_pad_fn": _autodiff_pad, "_shift_sum_fn": _autodiff_shift_sum,
                 "_instance_norm_fn": _autodiff_norm},
    "custom_pad_shift": {"_instance_norm_fn": _autodiff_norm},
    "custom_pad_shift_norm": {},
    "custom_pad_plain9": {"plain9": True},
    "no_normalization (not a network: what norms cost)": {"_instance_norm_fn": _affine_only},
}


def section_trainnet(batch=8, size=256):
    """The style network's forward + backward and the whole training step (random VGG16
    weights), for each way of taking the network's gradient (TRAIN_VARIANTS)."""
    import mlx.optimizers as optim
    import numpy as np

    from engine.optimize import style_target
    from engine.training.settings import TrainSettings
    from engine.training.style import make_train_step

    originals = {name: getattr(transformer, name)
                 for name in ("_reflect_pad_fn", "_shift_sum_fn", "_instance_norm_fn")}
    padded_conv = transformer.ConvLayer.padded_conv
    settings = TrainSettings(size=size, style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1",
                                                      "relu5_1"))
    vgg = VGG()
    grams = style_target(vgg, [mx.random.uniform(shape=(1, size, size, 3))], np.ones(1),
                         settings.style_layers, size, 1.0)
    for variant, patches in TRAIN_VARIANTS.items():
        for name, value in originals.items():
            setattr(transformer, name, patches.get(name, value))
        transformer.ConvLayer.padded_conv = ((lambda self, padded: self.conv(padded))
                                             if patches.get("plain9") else padded_conv)
        # float32 only: training runs in float32 (the half-precision norm kernel has no VJP)
        net = TransformerNet(FULL)
        xs = mx.random.uniform(shape=(batch, size, size, 3))
        net_grad = mx.compile(nn.value_and_grad(
            net, lambda t, net=net: mx.mean(mx.square(net(t)))),
            inputs=net.state, outputs=net.state)
        values = {"net_forward": mlx_ms(mx.compile(lambda t, net=net: net(t)), xs),
                  "net_value_and_grad": mlx_ms(net_grad, xs)}
        net = TransformerNet(FULL)
        optimizer = optim.Adam(learning_rate=1e-3)
        step, state = make_train_step(vgg, net, optimizer, grams, settings)
        x = mx.random.uniform(shape=(batch, size, size, 3))
        values["train_step_fp32"] = mlx_ms(lambda t, step=step, state=state: (step(t), state), x)
        emit("trainnet", f"{variant} b{batch} {size}px", **values)
        release()
    for name, value in originals.items():
        setattr(transformer, name, value)
    transformer.ConvLayer.padded_conv = padded_conv


TRAIN_CONVS = ((3, 32, 9, 1, 256), (32, 64, 3, 2, 256), (64, 128, 3, 2, 128), (128, 128, 3, 1, 64),
               (128, 64, 3, 1, 128), (64, 32, 3, 1, 256), (32, 3, 9, 1, 256))


def section_trainconv(torch_too, batch=8):
    """Each convolution of the style network at training size (batch 8, 256 px), float32: the
    forward and the gradient (input and weight; weight only for the first layer), MLX against
    cuDNN through PyTorch with TF32 allowed (its default for convolutions) and not."""
    for dtype in (mx.float32, mx.bfloat16):
        for shape in TRAIN_CONVS:
            emit("trainconv", "{}->{} k{} s{} {}px b{}".format(*shape, batch) + f" {dtype}",
                 **_trainconv_case(torch_too, batch, *shape, dtype=dtype))
            release()


def _trainconv_case(torch_too, batch, cin, cout, k, stride, size, dtype=mx.float32):
    p = k // 2
    x = mx.random.normal((batch, size + 2 * p, size + 2 * p, cin)).astype(dtype)
    w = (mx.random.normal((cout, k, k, cin)) * 0.05).astype(dtype)
    out = mx.conv2d(x, w, stride=stride)
    cotangent = mx.random.normal(out.shape)
    argnums = (1,) if cin == 3 else (0, 1)
    grad = mx.compile(mx.grad(lambda x, w: (mx.conv2d(x, w, stride=stride) * cotangent).sum()
                              .astype(mx.float32), argnums=argnums))
    values = {"mlx_forward": mlx_ms(mx.compile(lambda x, w: mx.conv2d(x, w, stride=stride)),
                                    x, w),
              "mlx_grad": mlx_ms(grad, x, w)}
    if torch_too:
        import torch
        import torch.nn.functional as F

        tdtype = torch.bfloat16 if dtype == mx.bfloat16 else torch.float32
        tx = torch.randn(batch, cin, size + 2 * p, size + 2 * p, device="cuda", dtype=tdtype
                         ).contiguous(memory_format=torch.channels_last).requires_grad_(cin != 3)
        tw = (torch.randn(cout, cin, k, k, device="cuda", dtype=tdtype) * 0.05).contiguous(
            memory_format=torch.channels_last).requires_grad_(True)
        tc = torch.randn_like(F.conv2d(tx, tw, stride=stride))
        inputs = [tw] if cin == 3 else [tx, tw]
        for tf32 in ((True, False) if dtype == mx.float32 else (True,)):
            torch.backends.cudnn.allow_tf32 = tf32
            label = ("tf32" if tf32 else "fp32") if dtype == mx.float32 else "bf16"
            with torch.no_grad():
                values[f"torch_{label}_forward"] = torch_ms(
                    lambda: F.conv2d(tx, tw, stride=stride))
            values[f"torch_{label}_grad"] = torch_ms(lambda: torch.autograd.grad(
                (F.conv2d(tx, tw, stride=stride) * tc).sum(), inputs))
        torch.backends.cudnn.allow_tf32 = True
    return values



def section_trainforms(batch=8, size=256):
    """The style network's full-resolution layers at training size in their plain forms and in
    the low-resolution forms (transformer.LOW_RES_FORMS: the 9x9 layers on 4x4 or 2x2
    space-to-depth blocks, the upsampling convolutions as sub-pixel convolutions), forward and
    gradient (input and weights; weights only for the first layer); then the whole network's
    forward + backward with the forms off and on (bench_train.py --forms times the step)."""
    from engine.nets.transformer import ConvLayer, conv_blocked

    def forms(layer):
        nine = layer.conv.weight.shape[1] == 9
        if nine:
            return {"plain": lambda x: layer(x), "blocked4": layer.blocked,
                    "blocked2": lambda x: conv_blocked(reflect_pad(x, 4), layer.conv.weight, 2)
                    + layer.conv.bias}
        return {"plain": lambda x: layer(upsample2x(x)), "subpixel": layer.after_upsample}

    cases = ((3, 32, 9, size), (128, 64, 3, size // 4), (64, 32, 3, size // 2), (32, 3, 9, size))
    for dtype in (mx.float32, mx.bfloat16):
        for cin, cout, k, side in cases:
            layer = ConvLayer(cin, cout, k)
            layer.set_dtype(dtype)
            x = mx.random.normal((batch, side, side, cin)).astype(dtype)
            first = cin == 3
            values = {}
            for name, fn in forms(layer).items():
                out = fn(x)
                cotangent = mx.random.normal(out.shape).astype(dtype)

                def loss(params, x, fn=fn, cotangent=cotangent, layer=layer):
                    kept = layer.parameters()
                    layer.update(params)
                    value = (fn(x) * cotangent).astype(mx.float32).sum()
                    layer.update(kept)
                    return value

                grad = mx.compile(mx.grad(loss, argnums=(0,) if first else (0, 1)))
                values[f"{name}_forward"] = mlx_ms(mx.compile(fn), x)
                values[f"{name}_grad"] = mlx_ms(grad, layer.trainable_parameters(), x)
            emit("trainforms", f"{cin}->{cout} k{k} {side}px b{batch} {dtype}", **values)
            release()
    for low in (False, True):
        transformer.LOW_RES_FORMS = low
        values = {}
        for dtype in (mx.float32, mx.bfloat16):
            net = TransformerNet(FULL)
            net.set_dtype(dtype)
            xs = mx.random.uniform(shape=(batch, size, size, 3)).astype(dtype)
            net_grad = mx.compile(nn.value_and_grad(
                net, lambda t, net=net: mx.mean(mx.square(net(t).astype(mx.float32)))),
                inputs=net.state, outputs=net.state)
            label = "fp32" if dtype == mx.float32 else "bf16"
            values[f"net_forward_{label}"] = mlx_ms(mx.compile(lambda t, net=net: net(t)), xs)
            values[f"net_value_and_grad_{label}"] = mlx_ms(net_grad, xs)
        emit("trainforms", f"network b{batch} {size}px low_res_forms={low}", **values)
        release()
    transformer.LOW_RES_FORMS = True


def main():
    global OUT
    parser = argparse.ArgumentParser()
    parser.add_argument("--sections", default="conv,apply,train")
    parser.add_argument("--shapes", default="8x1080x1920,1x512x512")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-stages", action="store_true", help="whole networks only")
    parser.add_argument("--conv-scale", type=int, default=1, help="divide the conv sides (smoke test)")
    parser.add_argument("--train-size", type=int, default=256)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    OUT = args.out
    torch_too = not args.no_torch and have_torch()
    emit("env", "versions", mlx=mx.__version__, device=str(mx.default_device()),
         torch=torch_too)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    for section in args.sections.split(","):
        started = time.perf_counter()
        {"conv": lambda: section_conv(torch_too, args.conv_scale),
         "apply": lambda: section_apply(torch_too, shapes, not args.no_stages),
         "train": lambda: section_train(torch_too, size=args.train_size),
         "trainnet": lambda: section_trainnet(size=args.train_size),
         "trainconv": lambda: section_trainconv(torch_too),
         "trainforms": lambda: section_trainforms(size=args.train_size)}[section]()
        emit("env", f"section {section} took", seconds=time.perf_counter() - started)


if __name__ == "__main__":
    main()
