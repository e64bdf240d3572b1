"""Inception-ResNet-V1 backbone (Szegedy et al. 2016) as used by FaceNet.

Every block is described by tables of convolutions walked by loops. Module names
(``conv2d_1a.conv.weight``, ``repeat_1.0.branch1.1.bn.weight`` ...) are those of the released
``facenet_inception_resnetv1.pth`` and of the common PyTorch port, so both load key for key.
"""
from __future__ import annotations

import torch
from torch import nn

# A convolution: (in_channels, out_channels, kernel, stride, padding). Kernel and padding may be pairs.
Conv = tuple[int, int, int | tuple[int, int], int, int | tuple[int, int]]

STEM: list[tuple[str, Conv | None]] = [
    ("conv2d_1a", (3, 32, 3, 2, 0)),
    ("conv2d_2a", (32, 32, 3, 1, 0)),
    ("conv2d_2b", (32, 64, 3, 1, 1)),
    ("maxpool_3a", None),
    ("conv2d_3b", (64, 80, 1, 1, 0)),
    ("conv2d_4a", (80, 192, 3, 1, 0)),
    ("conv2d_4b", (192, 256, 3, 2, 0)),
]

# Residual blocks: the branches (each a chain of convolutions) are concatenated, projected back to
# `channels` by a 1x1 convolution with bias, scaled and added to the input.
BLOCK35 = [[(256, 32, 1, 1, 0)],
           [(256, 32, 1, 1, 0), (32, 32, 3, 1, 1)],
           [(256, 32, 1, 1, 0), (32, 32, 3, 1, 1), (32, 32, 3, 1, 1)]]
BLOCK17 = [[(896, 128, 1, 1, 0)],
           [(896, 128, 1, 1, 0), (128, 128, (1, 7), 1, (0, 3)), (128, 128, (7, 1), 1, (3, 0))]]
BLOCK8 = [[(1792, 192, 1, 1, 0)],
          [(1792, 192, 1, 1, 0), (192, 192, (1, 3), 1, (0, 1)), (192, 192, (3, 1), 1, (1, 0))]]

# Reduction blocks: convolution branches plus a final 3x3 stride-2 max-pool branch, concatenated.
MIXED_6A = [[(256, 384, 3, 2, 0)],
            [(256, 192, 1, 1, 0), (192, 192, 3, 1, 1), (192, 256, 3, 2, 0)]]
MIXED_7A = [[(896, 256, 1, 1, 0), (256, 384, 3, 2, 0)],
            [(896, 256, 1, 1, 0), (256, 256, 3, 2, 0)],
            [(896, 256, 1, 1, 0), (256, 256, 3, 1, 1), (256, 256, 3, 2, 0)]]

# (name, branches, channels, scale, repeats); the last Block8 (named `block8`) has no final ReLU.
BODY = [
    ("repeat_1", BLOCK35, 256, 0.17, 5),
    ("mixed_6a", MIXED_6A, 896, None, 1),
    ("repeat_2", BLOCK17, 896, 0.10, 10),
    ("mixed_7a", MIXED_7A, 1792, None, 1),
    ("repeat_3", BLOCK8, 1792, 0.20, 5),
]


class BasicConv2d(nn.Module):
    """Convolution without bias + BatchNorm (eps 1e-3) + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel, stride: int, padding) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def make_branch(convs: list[Conv]) -> nn.Module:
    """A single convolution stands alone (``branch0.conv``); a chain is a Sequential (``branch1.0.conv``)."""
    layers = [BasicConv2d(*c) for c in convs]
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Block35 / Block17 / Block8: x + scale * conv1x1(concat(branches))."""

    def __init__(self, branches: list[list[Conv]], channels: int, scale: float, relu: bool = True) -> None:
        super().__init__()
        for i, convs in enumerate(branches):
            self.add_module(f"branch{i}", make_branch(convs))
        self.num_branches = len(branches)
        self.conv2d = nn.Conv2d(sum(b[-1][1] for b in branches), channels, 1)
        self.scale = scale
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.num_branches)], 1)
        return self.relu(x + self.scale * self.conv2d(out))


class ReductionBlock(nn.Module):
    """Mixed_6a / Mixed_7a: stride-2 convolution branches and a max-pool, concatenated."""

    def __init__(self, branches: list[list[Conv]]) -> None:
        super().__init__()
        for i, convs in enumerate(branches):
            self.add_module(f"branch{i}", make_branch(convs))
        self.add_module(f"branch{len(branches)}", nn.MaxPool2d(3, stride=2))
        self.num_branches = len(branches) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.num_branches)], 1)


class InceptionResnetV1(nn.Module):
    """Feature extractor: (N, 3, H, W) -> (N, 1792, h, w); works from 112x112 inputs up."""

    out_channels = 1792

    def __init__(self) -> None:
        super().__init__()
        for name, conv in STEM:
            self.add_module(name, nn.MaxPool2d(3, stride=2) if conv is None else BasicConv2d(*conv))
        for name, branches, channels, scale, repeats in BODY:
            if scale is None:
                self.add_module(name, ReductionBlock(branches))
            else:
                blocks = [ResidualBlock(branches, channels, scale) for _ in range(repeats)]
                self.add_module(name, nn.Sequential(*blocks))
        self.block8 = ResidualBlock(BLOCK8, 1792, 1.0, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return x
