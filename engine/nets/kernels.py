"""CUDA kernels (mx.fast.cuda_kernel) for applying a style network in half precision, and for
the gradients of training on a GPU.

- `half_sums`: per-(image, channel) sum and sum of squares accumulated in float32 (and
  `half_moments`, the mean and variance from them). MLX's own reductions over a half-precision
  array lose the sum: over a 1080p image the float16 variance overflowed and flattened the
  picture, and bfloat16 was visibly off.
- `pad_affine`: the instance norm (its scale and shift worked out from those sums), ReLU, a
  residual add, 2x nearest upsampling and reflection padding in one pass, from one convolution's
  output to the next one's padded input (fused.py). Two kernels per norm: at small sizes the
  launches, not the bytes, take the time.

- `product_sums`: sum g and sum g * x per (image, channel) in one pass, in float32: the instance
  norm's gradient (transformer._instance_norm_with_stats).
- `fold_pad`: the gradient of reflection (or edge) padding in one pass, each pixel summing the
  padded pixels that copy it (in MLX ops: a zero fill, a copy and a sum of the whole array per
  side, ~60 fills per training step).

None has a gradient of its own: they run inside the VJPs of transformer.py's custom functions.
`reference_*` are the same functions in plain MLX ops, used on the CPU and in tests.

Both read and write 16 bytes (8 half-precision channels) per access; half_sums keeps four rows
in flight per thread, sums each block's rows in shared memory and adds them into the totals with
atomics (its earlier form, one 2-byte load in flight per thread and a second reduction pass, ran
far below the memory bandwidth).

MLX compiles each template instantiation with NVRTC (~1.5 s on the H100) in every new process
and keeps no disk cache of them. So nothing that depends on the image's size is a template
argument (half_sums' blocks per image come from the grid); pad_affine keeps its options
(pad, upsampling, ReLU, residual) in the template: 5 kernels per process whatever the size.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..backend import uses_cuda_kernels
from .ops import depth_to_space, fold_edges, fold_reflection, reflect_slices, upsample2x

_MOMENTS = """
    // One block per (image, slice of rows): each thread reads VEC channels (16 bytes) of every
    // LANES-th row of its slice, four rows in flight; the block sums its lanes in shared memory
    // and adds its (sum, sum of squares) per channel to the image's totals (out starts at 0).
    // The "products" form reads a second array x alongside: (sum y, sum y * x).
    __shared__ float partial[256 * 2 * VEC];
    const int batch = y_shape[0], rows = y_shape[1] * y_shape[2], channels = y_shape[3];
    const int groups = channels / VEC;
    const int lanes = blockDim.x / groups;
    const int per_image = gridDim.x / batch;
    const int b = blockIdx.x / per_image, slice = blockIdx.x % per_image;
    const int g = threadIdx.x % groups, lane = threadIdx.x / groups;
    float s[VEC], q[VEC];
    #pragma unroll
    for (int k = 0; k < VEC; ++k) { s[k] = 0.0f; q[k] = 0.0f; }
    if (lane < lanes) {
        const T* base = y + (int64_t)b * rows * channels + g * VEC;
        const int step = per_image * lanes;
        int r = slice * lanes + lane;
        SECOND_BASE
        for (; r + 3 * step < rows; r += 4 * step) {
            Chunk<T, VEC> c[4];
            SECOND_DECL
            #pragma unroll
            for (int u = 0; u < 4; ++u) {
                const int64_t at = (int64_t)(r + u * step) * channels;
                c[u] = load_chunk<T, VEC>(base + at);
                SECOND_LOAD
            }
            #pragma unroll
            for (int u = 0; u < 4; ++u) {
                #pragma unroll
                for (int k = 0; k < VEC; ++k) {
                    const float v = static_cast<float>(c[u].v[k]);
                    s[k] += v;
                    q[k] += v * SECOND_VALUE;
                }
            }
        }
        for (; r < rows; r += step) {
            const int64_t at = (int64_t)r * channels;
            const Chunk<T, VEC> c1 = load_chunk<T, VEC>(base + at);
            SECOND_LOAD1
            #pragma unroll
            for (int k = 0; k < VEC; ++k) {
                const float v = static_cast<float>(c1.v[k]);
                s[k] += v;
                q[k] += v * SECOND_VALUE1;
            }
        }
    }
    #pragma unroll
    for (int k = 0; k < VEC; ++k) {
        partial[(threadIdx.x * VEC + k) * 2] = s[k];
        partial[(threadIdx.x * VEC + k) * 2 + 1] = q[k];
    }
    __syncthreads();
    if (threadIdx.x < channels) {  // channel c = g * VEC + k sums lanes of threads g + l*groups
        const int c = threadIdx.x, gg = c / VEC, k = c % VEC;
        float ss = 0.0f, qq = 0.0f;
        for (int l = 0; l < lanes; ++l) {
            const int th = l * groups + gg;
            ss += partial[(th * VEC + k) * 2];
            qq += partial[(th * VEC + k) * 2 + 1];
        }
        const int64_t o = ((int64_t)b * channels + c) * 2;
        atomicAdd(out + o, ss);
        atomicAdd(out + o + 1, qq);
    }
"""


_SQUARES = {"SECOND_BASE": "", "SECOND_DECL": "", "SECOND_LOAD1": "", "SECOND_LOAD": "",
            "SECOND_VALUE1": "v", "SECOND_VALUE": "v"}


_PRODUCTS = {
    "SECOND_BASE": "const T* base2 = x + (int64_t)b * rows * channels + g * VEC;",
    "SECOND_DECL": "Chunk<T, VEC> d[4];",
    "SECOND_LOAD1": "const Chunk<T, VEC> d1 = load_chunk<T, VEC>(base2 + at);",
    "SECOND_LOAD": "d[u] = load_chunk<T, VEC>(base2 + at);",
    "SECOND_VALUE1": "static_cast<float>(d1.v[k])",
    "SECOND_VALUE": "static_cast<float>(d[u].v[k])"}


def _filled(source: str, values: dict[str, str]) -> str:
    for key in sorted(values, key=len, reverse=True):  # SECOND_LOAD1 before SECOND_LOAD
        source = source.replace(key, values[key])
    return source


_HEADER = """
template <typename T, int V> struct Chunk { alignas(16) T v[V]; };
template <typename T, int V>
__device__ __forceinline__ Chunk<T, V> load_chunk(const T* p) {  // V values, 16 bytes at a time
    Chunk<T, V> c;
    #pragma unroll
    for (int w = 0; w < (int)(V * sizeof(T) / 16); ++w)
        reinterpret_cast<uint4*>(c.v)[w] = reinterpret_cast<const uint4*>(p)[w];
    return c;
}
template <typename T, int V>
__device__ __forceinline__ void store_chunk(T* p, const Chunk<T, V>& c) {  // 16 bytes at a time
    #pragma unroll
    for (int w = 0; w < (int)(V * sizeof(T) / 16); ++w)
        reinterpret_cast<uint4*>(p)[w] = reinterpret_cast<const uint4*>(c.v)[w];
}
// thread t's place in a (B, H, W, C) array handled `vec` channels per thread, channels fastest
struct Pixel { int b, i, j, c0; };
__device__ __forceinline__ Pixel pixel_of(unsigned int t, int groups, int vec, int w, int h) {
    Pixel p;
    p.c0 = (t % groups) * vec;
    unsigned int rest = t / groups;
    p.j = rest % w;
    rest /= w;
    p.i = rest % h;
    p.b = rest / h;
    return p;
}
"""


_PAD_AFFINE = """
    const unsigned int t = blockIdx.x * blockDim.x + threadIdx.x;
    // with PHASES, y holds a sub-pixel convolution's output: (B, H/2, W/2, 4C), the four
    // sub-pixels of each 2x2 block as channel groups (depth-to-space order); read as (B, H, W, C)
    const int batch = y_shape[0], height = y_shape[1] * (PHASES ? 2 : 1);
    const int width = y_shape[2] * (PHASES ? 2 : 1), channels = y_shape[3] / (PHASES ? 4 : 1);
    const int groups = channels / VEC;
    const int up_h = height * UP, up_w = width * UP;
    const int out_h = up_h + 2 * P, out_w = up_w + 2 * P;
    if (t >= (unsigned int)batch * out_h * out_w * groups) return;
    const Pixel at = pixel_of(t, groups, VEC, out_w, out_h);
    const int b = at.b, c0 = at.c0;
    int si = at.i - P, sj = at.j - P;
    if (EDGE) {  // the edge pixel repeated
        si = si < 0 ? 0 : (si >= up_h ? up_h - 1 : si);
        sj = sj < 0 ? 0 : (sj >= up_w ? up_w - 1 : sj);
    } else {  // reflection
        si = si < 0 ? -si : (si >= up_h ? 2 * (up_h - 1) - si : si);
        sj = sj < 0 ? -sj : (sj >= up_w ? 2 * (up_w - 1) - sj : sj);
    }
    si /= UP;
    sj /= UP;
    const int64_t src = PHASES
        ? (((int64_t)b * y_shape[1] + (si >> 1)) * y_shape[2] + (sj >> 1)) * y_shape[3]
          + ((si & 1) * 2 + (sj & 1)) * channels + c0
        : (((int64_t)b * height + si) * width + sj) * channels + c0;
    const int64_t dst = (int64_t)t * VEC;
    // the instance norm's scale and shift from the sums over y's pixels (y is what it normalizes)
    const float inv_n = 1.0f / (float)(height * width);
    const float* sum = sums + ((int64_t)b * channels + c0) * 2;
    float sc[VEC], sh[VEC];
    #pragma unroll
    for (int k = 0; k < VEC; ++k) {
        const float mean = sum[2 * k] * inv_n;
        const float var = fmaxf(sum[2 * k + 1] * inv_n - mean * mean, 0.0f);
        sc[k] = weight[c0 + k] * rsqrtf(var + EPS);
        sh[k] = bias[c0 + k] - mean * sc[k];
    }
    const Chunk<T, VEC> in = load_chunk<T, VEC>(y + src);
    RESIDUAL_BASE
    Chunk<T, VEC> o;
    #pragma unroll
    for (int k = 0; k < VEC; ++k) {
        float v = static_cast<float>(in.v[k]) * sc[k] + sh[k];
        RESIDUAL_ADD
        if (RELU) v = v > 0.0f ? v : 0.0f;
        o.v[k] = static_cast<T>(v);
    }
    store_chunk<T, VEC>(out + dst, o);
"""


_RESIDUAL_BASE = """
    const Chunk<T, VEC> r = load_chunk<T, VEC>(res + (((int64_t)b * res_shape[1] + si + RP) * res_shape[2]
                                      + sj + RP) * channels + c0);
"""


_RESIDUAL_ADD = "v += static_cast<float>(r.v[k]);"


_FOLD_PAD = """
    // The gradient of padding by P: each pixel of the (B, H, W, C) output sums the pixels of the
    // padded (B, H + 2P, W + 2P, C) gradient g that copy it: itself, and its reflections (or,
    // with EDGE, P = 1, the repeated edge pixels). VEC channels (16 bytes) per thread.
    const unsigned int t = blockIdx.x * blockDim.x + threadIdx.x;
    const int batch = g_shape[0], ph = g_shape[1], pw = g_shape[2], channels = g_shape[3];
    const int h = ph - 2 * P, w = pw - 2 * P, groups = channels / VEC;
    if (t >= (unsigned int)batch * h * w * groups) return;
    const Pixel at = pixel_of(t, groups, VEC, w, h);
    const int b = at.b, i = at.i, j = at.j, c0 = at.c0;
    int rows[3], cols[3], nr = 0, nc = 0;
    rows[nr++] = i + P;
    cols[nc++] = j + P;
    if (EDGE) {
        if (i == 0) rows[nr++] = 0;
        if (i == h - 1) rows[nr++] = ph - 1;
        if (j == 0) cols[nc++] = 0;
        if (j == w - 1) cols[nc++] = pw - 1;
    } else {  // padded row P - i copies row i (1 <= i <= P); row 2h + P - 2 - i copies it too
        if (i >= 1 && i <= P) rows[nr++] = P - i;
        if (i >= h - 1 - P && i <= h - 2) rows[nr++] = 2 * h + P - 2 - i;
        if (j >= 1 && j <= P) cols[nc++] = P - j;
        if (j >= w - 1 - P && j <= w - 2) cols[nc++] = 2 * w + P - 2 - j;
    }
    float acc[VEC];
    #pragma unroll
    for (int k = 0; k < VEC; ++k) acc[k] = 0.0f;
    for (int a = 0; a < nr; ++a) {
        for (int e = 0; e < nc; ++e) {
            const Chunk<T, VEC> c = load_chunk<T, VEC>(
                g + (((int64_t)b * ph + rows[a]) * pw + cols[e]) * channels + c0);
            #pragma unroll
            for (int k = 0; k < VEC; ++k) acc[k] += static_cast<float>(c.v[k]);
        }
    }
    Chunk<T, VEC> o;
    #pragma unroll
    for (int k = 0; k < VEC; ++k) o.v[k] = static_cast<T>(acc[k]);
    store_chunk<T, VEC>(out + (int64_t)t * VEC, o);
"""


_kernels: dict[str, object] = {}


_VEC = 8  # channels per thread: 16 bytes of half precision


_MOMENT_BLOCKS = 1024  # about this many blocks of 256 threads in half_sums (8 per H100 SM)


EPS = 1e-5  # the instance norms' epsilon (InstanceNorm's default), compiled into pad_affine


def _kernel(name: str):
    if name not in _kernels:
        if name == "sums":
            names, source = ["y"], _filled(_MOMENTS, _SQUARES)
        elif name == "product_sums":
            names, source = ["y", "x"], _filled(_MOMENTS, _PRODUCTS)
        elif name == "fold_pad":
            names, source = ["g"], _FOLD_PAD
        else:
            residual = name == "pad_affine_residual"
            names = ["y", "sums", "weight", "bias"] + (["res"] if residual else [])
            source = (_PAD_AFFINE.replace("RESIDUAL_BASE", _RESIDUAL_BASE if residual else "")
                      .replace("RESIDUAL_ADD", _RESIDUAL_ADD if residual else "")
                      .replace("EPS", f"{EPS!r}f"))
        _kernels[name] = mx.fast.cuda_kernel(name="engine_" + name, input_names=names,
                                             output_names=["out"], source=source,
                                             header=_HEADER)
    return _kernels[name]


def _sums_kernel_fits(x: mx.array) -> bool:
    """The block-sums kernels take (B, H, W, C) with C a multiple of VEC, at most 256, and
    32-bit indices."""
    batch, height, width, channels = x.shape
    return (uses_cuda_kernels() and channels % _VEC == 0 and channels <= 256
            and batch * channels * height * width < 2**31)


def _block_sums(name: str, inputs: list[mx.array]) -> mx.array:
    """Run a block-sums kernel (_MOMENTS in one of its forms) over inputs of one (B, H, W, C)
    shape: (B, C, 2) float32 totals, added by each block with atomics."""
    batch, height, width, channels = inputs[0].shape
    rows = height * width
    lanes = 256 // (channels // _VEC)  # rows a block reads at once
    per_image = max(1, min(-(-rows // lanes), _MOMENT_BLOCKS // batch))
    return _kernel(name)(
        inputs=inputs, template=[("T", inputs[0].dtype), ("VEC", _VEC)],
        grid=(batch * per_image * 256, 1, 1), threadgroup=(256, 1, 1),
        output_shapes=[(batch, channels, 2)], output_dtypes=[mx.float32], init_value=0.0)[0]


def half_sums(x: mx.array) -> mx.array:
    """(B, C, 2) float32: the sum and the sum of squares over H and W of (B, H, W, C), summed
    in float32 whatever x's precision. One kernel, no further reduction."""
    if not _sums_kernel_fits(x):
        return reference_sums(x)
    return _block_sums("sums", [x])


def reference_sums(x: mx.array) -> mx.array:
    x = x.astype(mx.float32)
    return mx.stack([mx.sum(x, axis=(1, 2)), mx.sum(mx.square(x), axis=(1, 2))], axis=-1)


def product_sums(y: mx.array, x: mx.array) -> mx.array:
    """(B, C, 2) float32: the sums of y and of y * x over H and W of (B, H, W, C) arrays, in
    float32 whatever their precision, in one pass (the instance norm's gradient: y is the
    cotangent, x the norm's input)."""
    if y.dtype != x.dtype or y.shape != x.shape or not _sums_kernel_fits(y):
        return reference_product_sums(y, x)
    return _block_sums("product_sums", [y, x])


def reference_product_sums(y: mx.array, x: mx.array) -> mx.array:
    y = y.astype(mx.float32)
    return mx.stack([mx.sum(y, axis=(1, 2)), mx.sum(y * x.astype(mx.float32), axis=(1, 2))],
                    axis=-1)


def fold_pad(g: mx.array, pad: int, edge: bool = False) -> mx.array:
    """The gradient of reflection padding by `pad` (with `edge`, of edge padding by 1) of a
    (B, H, W, C) array: g is the padded array's gradient, (B, H + 2 pad, W + 2 pad, C). One
    pass; in plain MLX ops it takes a zero fill, a copy and a sum of the whole array per side."""
    batch, height, width, channels = g.shape
    if (not uses_cuda_kernels() or channels % _VEC or g.size >= 2**31 or (edge and pad != 1)
            or min(height, width) - 2 * pad <= pad):
        return reference_fold_pad(g, pad, edge)
    shape = (batch, height - 2 * pad, width - 2 * pad, channels)
    threads = shape[0] * shape[1] * shape[2] * (channels // _VEC)
    return _kernel("fold_pad")(
        inputs=[g], template=[("T", g.dtype), ("VEC", _VEC), ("P", pad), ("EDGE", edge)],
        grid=(threads, 1, 1), threadgroup=(256, 1, 1), output_shapes=[shape],
        output_dtypes=[g.dtype])[0]


def reference_fold_pad(g: mx.array, pad: int, edge: bool = False) -> mx.array:
    fold = fold_edges if edge else fold_reflection
    return fold(fold(g, 2, pad), 1, pad)


def moments_from_sums(sums: mx.array, count: int) -> tuple[mx.array, mx.array]:
    """(B, C, 2) sums over `count` pixels -> mean and (biased) variance, (B, 1, 1, C) each."""
    batch, channels, _ = sums.shape
    mean = sums[..., 0] / count
    var = mx.maximum(sums[..., 1] / count - mx.square(mean), 0.0)
    return mean.reshape(batch, 1, 1, channels), var.reshape(batch, 1, 1, channels)


def sums_from_moments(mean: mx.array, var: mx.array, count: int) -> mx.array:
    """The inverse of moments_from_sums: (B, C, 2) sums from (B, 1, 1, C) moments."""
    batch, channels = mean.shape[0], mean.shape[-1]
    mean = mean.astype(mx.float32).reshape(batch, channels)
    var = var.astype(mx.float32).reshape(batch, channels)
    return mx.stack([mean * count, (var + mx.square(mean)) * count], axis=-1)


def half_moments(x: mx.array) -> tuple[mx.array, mx.array]:
    """Mean and (biased) variance over H and W of (B, H, W, C), (B, 1, 1, C) float32, with the
    sums in float32."""
    if x.dtype == mx.float32 or not uses_cuda_kernels():
        return reference_moments(x)
    return moments_from_sums(half_sums(x), x.shape[1] * x.shape[2])


def reference_moments(x: mx.array) -> tuple[mx.array, mx.array]:
    x = x.astype(mx.float32)
    return mx.mean(x, axis=(1, 2), keepdims=True), mx.var(x, axis=(1, 2), keepdims=True)


def pad_affine(y: mx.array, sums: mx.array, weight: mx.array, bias: mx.array, pad: int,
               up: int = 1, relu: bool = False, residual: mx.array | None = None,
               residual_pad: int = 0, edge: bool = False, phases: bool = False) -> mx.array:
    """reflect_pad(upsample(act(instance_norm(y) + residual)), pad) in one pass.

    y: (B, H, W, C), or with `phases` (B, H/2, W/2, 4C) holding depth_to_space(., 2)'s input (a
    sub-pixel convolution's output, read as the (B, H, W, C) image); sums: (B, C, 2) float32, the
    sum and sum of squares over the H x W pixels (half_sums, or replayed statistics); weight,
    bias: the norm's (C,); residual: (B, H + 2 rp, W + 2 rp, C), read at the same (unpadded)
    positions; up: 1 or 2 (nearest); edge: repeat edge pixels instead of reflecting. Output
    dtype: y's.
    """
    batch, height, width, channels = y.shape
    if phases:
        height, width, channels = 2 * height, 2 * width, channels // 4
    shape = (batch, height * up + 2 * pad, width * up + 2 * pad, channels)
    threads = shape[0] * shape[1] * shape[2] * (channels // _VEC)
    if (not uses_cuda_kernels() or channels % _VEC or threads >= 2**31
            or min(height, width) * up <= pad):
        return reference_pad_affine(y, sums, weight, bias, pad, up, relu, residual, residual_pad,
                                    edge, phases)
    inputs = [y, sums.astype(mx.float32), weight.astype(mx.float32), bias.astype(mx.float32)]
    if residual is not None:
        inputs.append(residual)
    name = "pad_affine" + ("_residual" if residual is not None else "")
    return _kernel(name)(
        inputs=inputs, template=[("T", y.dtype), ("VEC", _VEC), ("P", pad), ("UP", up),
                                 ("RELU", relu), ("RP", residual_pad), ("EDGE", edge),
                                 ("PHASES", phases)],
        grid=(threads, 1, 1), threadgroup=(256, 1, 1), output_shapes=[shape],
        output_dtypes=[y.dtype])[0]


def reference_pad_affine(y, sums, weight, bias, pad, up=1, relu=False, residual=None,
                         residual_pad=0, edge=False, phases=False):
    if phases:
        y = depth_to_space(y, 2)
    height, width = y.shape[1:3]
    mean, var = moments_from_sums(sums.astype(mx.float32), height * width)
    scale = mx.rsqrt(var + EPS) * weight.astype(mx.float32)
    shift = bias.astype(mx.float32) - mean * scale
    x = y.astype(mx.float32) * scale + shift
    if residual is not None:
        rp = residual_pad
        x = x + (residual[:, rp:residual.shape[1] - rp, rp:residual.shape[2] - rp]
                 if rp else residual)
    if relu:
        x = nn.relu(x)
    if up == 2:
        x = upsample2x(x)
    if edge:
        return mx.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)], mode="edge").astype(y.dtype)
    return (reflect_slices(x, pad) if pad else x).astype(y.dtype)
