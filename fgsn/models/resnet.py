"""Dilated ResNet with a deep stem, the PSPNet backbone (Zhao et al., CVPR 2017; Larsson et al., ICCV 2019).

Layout (module names follow the common torchvision / "deep-base" ImageNet layout so that ImageNet checkpoints
map onto it with a key prefix only, see ``fgsn.weights``):

- stem: ``conv1`` 3x3 3->64 stride 2, ``bn1``, ``conv2`` 3x3 64->64, ``bn2``, ``conv3`` 3x3 64->128, ``bn3``
  (ReLU after each BN), then ``maxpool`` 3x3 stride 2.
- ``layer1`` .. ``layer4`` (the paper's / Caffe PSPNet's ``layer2`` .. ``layer5``): ``layer2`` stride 2,
  ``layer3`` dilation 2, ``layer4`` dilation 4, so the output stride is 8 (713x713 in -> 90x90 out).
- Bottleneck blocks put the stride in the 1x1 reduce conv (``conv1``), as the Caffe PSPNet does.

Depths: 18 and 34 (basic blocks; layer widths 64-128-256-512), 50 and 101 (bottlenecks, widths 256-512-1024-2048).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

_BLOCKS = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]),
           50: ("bottleneck", [3, 4, 6, 3]), 101: ("bottleneck", [3, 4, 23, 3])}


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_ch: int, mid_ch: int, stride: int = 1, dilation: int = 1, downsample: bool = False):
        super().__init__()
        out_ch = mid_ch * self.expansion
        self.conv1 = nn.Conv2d(in_ch, mid_ch, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_ch)
        self.conv2 = nn.Conv2d(mid_ch, mid_ch, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_ch)
        self.downsample = (nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
                           if downsample else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1x1 reduce (carries the stride), 3x3 (dilated), 1x1 increase, residual (ResNet-50/101)."""

    expansion = 4

    def __init__(self, in_ch: int, mid_ch: int, stride: int = 1, dilation: int = 1, downsample: bool = False):
        super().__init__()
        out_ch = mid_ch * self.expansion
        self.conv1 = nn.Conv2d(in_ch, mid_ch, 1, stride, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_ch)
        self.conv2 = nn.Conv2d(mid_ch, mid_ch, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_ch)
        self.conv3 = nn.Conv2d(mid_ch, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.downsample = (nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
                           if downsample else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return F.relu(h + (x if self.downsample is None else self.downsample(x)))


class DilatedResNet(nn.Module):
    """Deep-stem ResNet with output stride 8.

    Args:
        depth: 18, 34, 50 or 101.
    Raises:
        ValueError: unsupported depth.
    """

    def __init__(self, depth: int = 101):
        super().__init__()
        if depth not in _BLOCKS:
            raise ValueError(f"Unsupported ResNet depth {depth}; choose one of {sorted(_BLOCKS)}")
        kind, n_blocks = _BLOCKS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 128, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(128)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = 128
        specs = [(64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4)]  # (width, stride, dilation)
        for i, ((mid, stride, dil), n) in enumerate(zip(specs, n_blocks)):
            blocks = [block(in_ch, mid, stride, dil, downsample=True)]
            in_ch = mid * block.expansion
            blocks += [block(in_ch, mid, 1, dil) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.channels = [64 * block.expansion * 2 ** i for i in range(4)]  # output channels of layer1..4

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args: x: (B, 3, H, W) normalised image. Returns: ``layer3`` (B, C3, H/8, W/8) and ``layer4``."""
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = F.relu(self.bn3(self.conv3(h)))
        h = self.maxpool(h)
        h = self.layer2(self.layer1(h))
        c3 = self.layer3(h)
        c4 = self.layer4(c3)
        return {"layer3": c3, "layer4": c4}
