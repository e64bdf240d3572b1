"""The three MTCNN networks (P-Net, R-Net, O-Net) of Zhang et al., 2016.

Layer names and shapes match the facenet-pytorch conversion of the original weights, so their
state_dicts load as they are. Each trunk is a table of layers walked by one loop: ``conv`` and
``dense`` entries are followed by a PReLU of the same number (``conv2`` -> ``prelu2``).
Inputs are RGB crops normalised as (x - 127.5) / 128.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (name, in, out, kernel) for a convolution, (name, kernel, stride) for a max-pool.
PNET_TRUNK = [("conv1", 3, 10, 3), ("pool1", 2, 2), ("conv2", 10, 16, 3), ("conv3", 16, 32, 3)]
RNET_TRUNK = [("conv1", 3, 28, 3), ("pool1", 3, 2), ("conv2", 28, 48, 3), ("pool2", 3, 2),
              ("conv3", 48, 64, 2)]
ONET_TRUNK = [("conv1", 3, 32, 3), ("pool1", 3, 2), ("conv2", 32, 64, 3), ("pool2", 3, 2),
              ("conv3", 64, 64, 3), ("pool3", 2, 2), ("conv4", 64, 128, 2)]


class MaxPool(nn.Module):
    """Max-pooling with ceil_mode=True, computed as the maximum of shifted strided views.

    Same result as nn.MaxPool2d(kernel, stride, ceil_mode=True), but 5-15x faster on CPU for the
    small, many-channel maps of MTCNN, where torch's pooling kernel dominates the run time.
    """

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel, self.stride
        h, w = x.shape[-2:]
        out_h, out_w = math.ceil((h - k) / s) + 1, math.ceil((w - k) / s) + 1
        x = F.pad(x, (0, (out_w - 1) * s + k - w, 0, (out_h - 1) * s + k - h), value=-math.inf)
        rows = x[..., 0:(out_w - 1) * s + 1:s]
        for j in range(1, k):
            rows = torch.maximum(rows, x[..., j:j + (out_w - 1) * s + 1:s])
        out = rows[..., 0:(out_h - 1) * s + 1:s, :]
        for i in range(1, k):
            out = torch.maximum(out, rows[..., i:i + (out_h - 1) * s + 1:s, :])
        return out


class _Cascade(nn.Module):
    """A trunk of conv/PReLU/max-pool layers built from a table, plus an optional dense layer."""

    def __init__(self, trunk: list[tuple], dense: tuple[str, int, int] | None = None) -> None:
        super().__init__()
        self.order: list[str] = []
        for name, *args in trunk:
            if name.startswith("pool"):
                self.add_layer(name, MaxPool(args[0], args[1]))
            else:
                self.add_layer(name, nn.Conv2d(args[0], args[1], args[2]))
                self.add_layer(name.replace("conv", "prelu"), nn.PReLU(args[1]))
        self.dense = dense
        if dense is not None:
            name, fin, fout = dense
            self.add_module(name, nn.Linear(fin, fout))
            self.add_module(name.replace("dense", "prelu"), nn.PReLU(fout))

    def add_layer(self, name: str, module: nn.Module) -> None:
        self.add_module(name, module)
        self.order.append(name)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.order:
            x = getattr(self, name)(x)
        if self.dense is None:
            return x
        # The original weights flatten a (width, height, channel) array: the converted dense
        # layers expect that order, hence the permute before flattening.
        x = x.permute(0, 3, 2, 1).flatten(1)
        name = self.dense[0]
        return getattr(self, name.replace("dense", "prelu"))(getattr(self, name)(x))


class PNet(_Cascade):
    """Proposal network: fully convolutional, one 12x12 window per output cell (stride 2).

    Returns (face probability (N, H', W'), box regression (N, 4, H', W')).
    """

    def __init__(self) -> None:
        super().__init__(PNET_TRUNK)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(x)
        return self.conv4_1(x).softmax(1)[:, 1], self.conv4_2(x)


class RNet(_Cascade):
    """Refinement network on 24x24 crops. Returns (face probability (N,), box regression (N, 4))."""

    def __init__(self) -> None:
        super().__init__(RNET_TRUNK, ("dense4", 576, 128))
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(x)
        return self.dense5_1(x).softmax(1)[:, 1], self.dense5_2(x)


class ONet(_Cascade):
    """Output network on 48x48 crops.

    Returns (face probability (N,), box regression (N, 4), landmarks (N, 10) as five x then five y,
    relative to the crop).
    """

    def __init__(self) -> None:
        super().__init__(ONET_TRUNK, ("dense5", 1152, 256))
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.features(x)
        return self.dense6_1(x).softmax(1)[:, 1], self.dense6_2(x), self.dense6_3(x)
