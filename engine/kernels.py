"""CUDA kernels (mx.fast.cuda_kernel) for applying a style network in half precision.

- `half_moments`: per-(image, channel) mean and variance accumulated in float32. MLX's own
  reductions over a half-precision array lose the sum: over a 1080p image the float16 variance
  overflowed and flattened the picture, and bfloat16 was visibly off.
- `pad_affine`: the instance norm's scale and shift, ReLU, a residual add, 2x nearest
  upsampling and reflection padding in one pass, from one convolution's output to the next one's
  padded input (fused.py).

No gradients of their own (bfloat16 training uses half_moments inside the instance norm's own
VJP). `reference_*` are the same functions in plain MLX ops, used on the CPU and in tests.

MLX compiles each template instantiation with NVRTC (~1.5 s on the H100) in every new process
and keeps no disk cache of them. So nothing that depends on the image's size is a template
argument: half_moments computes its number of row groups from the input's shape in the kernel
(as a template argument, which depends on batch x channels, it compiled one kernel per layer
width, 3 at a process's first call and 3 more for each new batch size, ~1.5 s each).
pad_affine keeps its options (pad, upsampling, ReLU, residual) in the template: 5 kernels per
process whatever the size. H100, first 1080p call of a process: 14.2-14.5 s before, 9.1-12.0 s
after; per frame unchanged (benchmarks/results/apply-kernels-h100.txt).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

_MOMENTS = """
    const unsigned int t = blockIdx.x * blockDim.x + threadIdx.x;
    const int batch = y_shape[0], rows = y_shape[1] * y_shape[2], channels = y_shape[3];
    // the row groups per (image, channel): as half_moments computes them (~256k threads)
    const int GROUPS = max(1, min(rows, (THREADS + batch * channels - 1) / (batch * channels)));
    if (t >= (unsigned int)(batch * GROUPS * channels)) return;
    const int c = t % channels;
    const int g = (t / channels) % GROUPS;
    const int b = t / (channels * GROUPS);
    const int per = (rows + GROUPS - 1) / GROUPS;
    const int start = g * per, stop = min(rows, start + per);
    const T* base = y + (int64_t)b * rows * channels + c;
    float s = 0.0f, q = 0.0f;
    for (int r = start; r < stop; ++r) {
        const float v = static_cast<float>(base[(int64_t)r * channels]);
        s += v;
        q += v * v;
    }
    out[2 * (int64_t)t] = s;
    out[2 * (int64_t)t + 1] = q;
"""

_PAD_AFFINE = """
    const unsigned int t = blockIdx.x * blockDim.x + threadIdx.x;
    const int batch = y_shape[0], height = y_shape[1], width = y_shape[2], channels = y_shape[3];
    const int groups = channels / VEC;
    const int up_h = height * UP, up_w = width * UP;
    const int out_h = up_h + 2 * P, out_w = up_w + 2 * P;
    if (t >= (unsigned int)batch * out_h * out_w * groups) return;
    const int c0 = (t % groups) * VEC;
    unsigned int rest = t / groups;
    const int j = rest % out_w;
    rest /= out_w;
    const int i = rest % out_h;
    const int b = rest / out_h;
    int si = i - P, sj = j - P;
    si = si < 0 ? -si : (si >= up_h ? 2 * (up_h - 1) - si : si);
    sj = sj < 0 ? -sj : (sj >= up_w ? 2 * (up_w - 1) - sj : sj);
    si /= UP;
    sj /= UP;
    const int64_t src = (((int64_t)b * height + si) * width + sj) * channels + c0;
    const int64_t dst = (int64_t)t * VEC;
    const float* sc = scale + b * channels + c0;
    const float* sh = shift + b * channels + c0;
    RESIDUAL_BASE
    #pragma unroll
    for (int k = 0; k < VEC; ++k) {
        float v = static_cast<float>(y[src + k]) * sc[k] + sh[k];
        RESIDUAL_ADD
        if (RELU) v = v > 0.0f ? v : 0.0f;
        out[dst + k] = static_cast<T>(v);
    }
"""
_RESIDUAL_BASE = """
    const int64_t rsrc = (((int64_t)b * res_shape[1] + si + RP) * res_shape[2] + sj + RP)
                         * channels + c0;
"""
_RESIDUAL_ADD = "v += static_cast<float>(res[rsrc + k]);"

_kernels: dict[str, object] = {}
_VEC = 8  # channels per thread in pad_affine
_MOMENT_THREADS = 262144  # about this many threads in half_moments


def _kernel(name: str):
    if name not in _kernels:
        if name == "moments":
            names, source = ["y"], _MOMENTS.replace("THREADS", str(_MOMENT_THREADS))
        else:
            residual = name == "pad_affine_residual"
            names = ["y", "scale", "shift"] + (["res"] if residual else [])
            source = (_PAD_AFFINE.replace("RESIDUAL_BASE", _RESIDUAL_BASE if residual else "")
                      .replace("RESIDUAL_ADD", _RESIDUAL_ADD if residual else ""))
        _kernels[name] = mx.fast.cuda_kernel(name="engine_" + name, input_names=names,
                                             output_names=["out"], source=source)
    return _kernels[name]


def _on_gpu() -> bool:
    """CUDA kernels run: the default device is a CUDA GPU (elsewhere the stand-ins run)."""
    return mx.default_device() != mx.cpu and mx.cuda.is_available()


def half_moments(x: mx.array) -> tuple[mx.array, mx.array]:
    """Mean and (biased) variance over H and W of (B, H, W, C), (B, 1, 1, C) float32, with the
    sums in float32."""
    batch, height, width, channels = x.shape
    rows = height * width
    if not _on_gpu() or batch * channels * rows >= 2**31:
        return reference_moments(x)
    groups = max(1, min(rows, -(-_MOMENT_THREADS // (batch * channels))))  # as the kernel does
    partial = _kernel("moments")(
        inputs=[x], template=[("T", x.dtype)],
        grid=(batch * groups * channels, 1, 1), threadgroup=(256, 1, 1),
        output_shapes=[(batch, groups, channels, 2)], output_dtypes=[mx.float32])[0]
    sums = mx.sum(partial, axis=1) / rows
    mean = sums[..., 0]
    var = mx.maximum(sums[..., 1] - mx.square(mean), 0.0)
    shape = (batch, 1, 1, channels)
    return mean.reshape(shape), var.reshape(shape)


def reference_moments(x: mx.array) -> tuple[mx.array, mx.array]:
    x = x.astype(mx.float32)
    return mx.mean(x, axis=(1, 2), keepdims=True), mx.var(x, axis=(1, 2), keepdims=True)


def pad_affine(y: mx.array, scale: mx.array, shift: mx.array, pad: int, up: int = 1,
               relu: bool = False, residual: mx.array | None = None,
               residual_pad: int = 0) -> mx.array:
    """reflect_pad(upsample(act(y * scale + shift + residual)), pad) in one pass.

    y: (B, H, W, C); scale, shift: (B, C) float32; residual: (B, H + 2 rp, W + 2 rp, C), read at
    the same (unpadded) positions as y; up: 1 or 2 (nearest). Output dtype: y's.
    """
    batch, height, width, channels = y.shape
    shape = (batch, height * up + 2 * pad, width * up + 2 * pad, channels)
    threads = shape[0] * shape[1] * shape[2] * (channels // _VEC)
    if not _on_gpu() or channels % _VEC or threads >= 2**31 or min(height, width) * up <= pad:
        return reference_pad_affine(y, scale, shift, pad, up, relu, residual, residual_pad)
    inputs = [y, scale.astype(mx.float32), shift.astype(mx.float32)]
    if residual is not None:
        inputs.append(residual)
    name = "pad_affine" + ("_residual" if residual is not None else "")
    return _kernel(name)(
        inputs=inputs, template=[("T", y.dtype), ("VEC", _VEC), ("P", pad), ("UP", up),
                                 ("RELU", relu), ("RP", residual_pad)],
        grid=(threads, 1, 1), threadgroup=(256, 1, 1), output_shapes=[shape],
        output_dtypes=[y.dtype])[0]


def reference_pad_affine(y, scale, shift, pad, up=1, relu=False, residual=None, residual_pad=0):
    from .transformer import reflect_pad, upsample2x

    batch, _, _, channels = y.shape
    x = (y.astype(mx.float32) * scale.reshape(batch, 1, 1, channels)
         + shift.reshape(batch, 1, 1, channels))
    if residual is not None:
        rp = residual_pad
        x = x + (residual[:, rp:residual.shape[1] - rp, rp:residual.shape[2] - rp]
                 if rp else residual)
    if relu:
        x = nn.relu(x)
    if up == 2:
        x = upsample2x(x)
    return reflect_pad(x, pad).astype(y.dtype)
