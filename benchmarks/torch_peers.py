"""The same Johnson et al. network in PyTorch, as the peer for benchmarks (never used by engine)."""

import torch
from torch import nn


class Conv(nn.Module):
    def __init__(self, cin, cout, k, stride=1):
        super().__init__()
        self.pad = nn.ReflectionPad2d(k // 2)
        self.conv = nn.Conv2d(cin, cout, k, stride)

    def forward(self, x):
        return self.conv(self.pad(x))


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1, self.n1 = Conv(c, c, 3), nn.InstanceNorm2d(c, affine=True)
        self.c2, self.n2 = Conv(c, c, 3), nn.InstanceNorm2d(c, affine=True)

    def forward(self, x):
        return x + self.n2(self.c2(torch.relu(self.n1(self.c1(x)))))


class TorchTransformerNet(nn.Module):
    def __init__(self, width=32, res_blocks=5):
        super().__init__()
        w = width
        self.down = nn.ModuleList([Conv(3, w, 9), Conv(w, 2 * w, 3, 2), Conv(2 * w, 4 * w, 3, 2)])
        self.dn = nn.ModuleList([nn.InstanceNorm2d(c, affine=True) for c in (w, 2 * w, 4 * w)])
        self.blocks = nn.Sequential(*[Residual(4 * w) for _ in range(res_blocks)])
        self.up = nn.ModuleList([Conv(4 * w, 2 * w, 3), Conv(2 * w, w, 3)])
        self.un = nn.ModuleList([nn.InstanceNorm2d(c, affine=True) for c in (2 * w, w)])
        self.out = Conv(w, 3, 9)

    def forward(self, x):
        for conv, norm in zip(self.down, self.dn):
            x = torch.relu(norm(conv(x)))
        x = self.blocks(x)
        for conv, norm in zip(self.up, self.un):
            x = torch.relu(norm(conv(nn.functional.interpolate(x, scale_factor=2))))
        return self.out(x)


class TorchShuffleNet(nn.Module):
    """engine's fast CPU network ("shuffle"): pixel-unshuffle trunk at 1/4 resolution."""

    def __init__(self, width=64, res_blocks=5, half=16):
        super().__init__()
        self.down = nn.ModuleList([Conv(12, half, 3), Conv(4 * half, width, 3)])
        self.dn = nn.ModuleList([nn.InstanceNorm2d(c, affine=True) for c in (half, width)])
        self.blocks = nn.Sequential(*[Residual(width) for _ in range(res_blocks)])
        self.up, self.un = Conv(width, 4 * half, 3), nn.InstanceNorm2d(4 * half, affine=True)
        self.out = Conv(half, 12, 3)

    def forward(self, x):
        for conv, norm in zip(self.down, self.dn):
            x = torch.relu(norm(conv(nn.functional.pixel_unshuffle(x, 2))))
        x = self.blocks(x)
        x = torch.relu(self.un(self.up(x)))
        return nn.functional.pixel_shuffle(self.out(nn.functional.pixel_shuffle(x, 2)), 2)


def torch_net(config):
    """The PyTorch twin of an engine NetConfig."""
    if config.arch == "shuffle":
        return TorchShuffleNet(config.width, config.res_blocks)
    return TorchTransformerNet(config.width, config.res_blocks)


def torch_vgg16(params: dict, wanted: set, device: str = "cuda",
                memory_format=torch.contiguous_format):
    """features(x) -> {tap: activation} for VGG16 taps in `wanted`, from engine's MLX-layout
    weights dict (OHWI numpy-convertible arrays); x is NCHW RGB in [0, 1]."""
    import numpy as np

    blocks = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
    convs = []
    for i in range(13):
        weight = torch.from_numpy(np.array(params[f"convs.{i}.weight"], dtype=np.float32))
        bias = torch.from_numpy(np.array(params[f"convs.{i}.bias"], dtype=np.float32))
        convs.append((weight.permute(0, 3, 1, 2).contiguous().to(device)
                      .to(memory_format=memory_format), bias.to(device)))
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

    def features(x):
        x = ((x - mean) / std).contiguous(memory_format=memory_format)
        out, index = {}, 0
        for b, block in enumerate(blocks):
            if b > 0:
                x = nn.functional.max_pool2d(x, 2, 2)
            for i in range(len(block)):
                x = torch.relu(nn.functional.conv2d(x, *convs[index], padding=1))
                index += 1
                name = f"relu{b + 1}_{i + 1}"
                if name in wanted:
                    out[name] = x
                    if len(out) == len(wanted):
                        return out
        return out

    return features
