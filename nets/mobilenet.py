"""MobileNetV1 backbone as used by the original FaceNet repository.

The layer table below is walked by a loop; the resulting module names
(``stage1.0.0.weight`` ...) are those of the released ``facenet_mobilenet.pth``.
"""
from __future__ import annotations

import torch
from torch import nn

# (in_channels, out_channels, stride) of each depthwise-separable block, grouped by stage.
# stage1 starts with the plain 3->32 stride-2 convolution and then holds these five blocks.
STAGES: dict[str, list[tuple[int, int, int]]] = {
    "stage1": [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1)],
    "stage2": [(256, 512, 2)] + [(512, 512, 1)] * 5,
    "stage3": [(512, 1024, 2), (1024, 1024, 1)],
}


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise convolution that trains in float32 on the CPU, even under bfloat16 autocast.

    oneDNN's bfloat16 backward of depthwise convolutions was about 2.7x slower than its float32 one here
    (each layer timed alone, batch 96 at 160 px), while the pointwise ones gain 1.8x from bfloat16: so in a
    bfloat16 training step only the pointwise and the first convolution run in bfloat16. Inference
    (eval mode) and other devices are left to autocast.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and x.device.type == "cpu" and torch.is_autocast_enabled("cpu")):
            return super().forward(x)
        with torch.autocast("cpu", enabled=False):
            return super().forward(x.float())


def conv_bn(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """3x3 convolution + BatchNorm + ReLU6."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


def conv_dw(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 + BN + ReLU6, then pointwise 1x1 + BN + ReLU6."""
    return nn.Sequential(
        DepthwiseConv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU6(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class MobileNetV1(nn.Module):
    """Feature extractor: (N, 3, H, W) -> (N, 1024, H/32, W/32)."""

    out_channels = 1024

    def __init__(self) -> None:
        super().__init__()
        for name, blocks in STAGES.items():
            layers = [conv_bn(3, 32, 2)] if name == "stage1" else []
            layers += [conv_dw(i, o, s) for i, o, s in blocks]
            self.add_module(name, nn.Sequential(*layers))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage3(self.stage2(self.stage1(x)))
